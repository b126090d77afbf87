"""Long work in the background: one runner (``runner.py``), one progress mechanism (``events.py``)."""
