"""Ray Serve application for policy inference (next: the serving issue)."""
