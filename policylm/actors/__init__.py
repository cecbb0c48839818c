"""Thin @ray.remote shells around platform classes."""
