"""Tune sweeps over target return and LoRA settings (next: the sweep issue)."""
