"""Experiments: arms x seeds from one warm start (runner.py), and where their files live (layout.py)."""
