"""Ray Serve application for policy inference: the app, episode store and HTTP API (app.py)."""
