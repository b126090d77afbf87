"""Evaluation: YAML tasks (tasks.py), scoring against an engine (runner.py), runs as jobs (job.py)."""
