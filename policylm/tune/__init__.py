"""Tune sweeps over target return and SFT settings, and the PPO trials of bc-ppo."""
