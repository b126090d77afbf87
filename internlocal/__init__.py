"""internlocal: the InternLM full chain as one local-first terminal application."""

__version__ = "0.1.0"
