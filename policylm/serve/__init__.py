"""Ray Serve application for policy inference (the app, its episode store and the HTTP API: app.py)."""
