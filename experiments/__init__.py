"""Experiments: the config (config.py), arms x seeds from one warm start (runner.py), where their files
live (layout.py), the web-like pool (webpool.py) and what its categories say about a run (categories.py)."""
