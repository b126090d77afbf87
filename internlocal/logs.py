"""Logging: quiet by default, our own messages and the libraries' when asked for.

By default a user sees internlocal's output and errors only: the libraries' warnings, progress bars
("Loading weights"), and log lines (bitsandbytes' "Failed to load CPU gemm_4bit_forward …") are
silenced. ``--verbose`` (``-v``) or ``INTERNLOCAL_LOG=info|debug`` lets them through and logs ours
at that level to stderr. Called first by the console script and by job worker processes, before the
heavy libraries are imported (some read their settings from the environment at import time).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# libraries whose loggers speak up on their own (warnings that are not the user's business by default)
NOISY = (
    "transformers",
    "huggingface_hub",
    "bitsandbytes",
    "peft",
    "accelerate",
    "sentence_transformers",
    "chromadb",
    "torch",
    "urllib3",
    "httpx",
    "llama_cpp",
)


class _StderrHandler(logging.StreamHandler):
    """internlocal's handler on the root logger."""


def level_from(verbose: bool) -> int:
    """``INTERNLOCAL_LOG`` when set, else WARNING; ``--verbose`` asks for at least INFO whatever the variable says
    (a shell or a parent process may have left it quieter)."""
    named = os.environ.get("INTERNLOCAL_LOG", "").strip().upper()
    level = getattr(logging, named) if named in ("DEBUG", "INFO", "WARNING", "ERROR") else logging.WARNING
    return min(level, logging.INFO) if verbose else level


def configure(verbose: bool = False) -> int:
    """Set up logging for this process (and the environment its subprocesses inherit); returns the level."""
    level = level_from(verbose)
    quiet = level > logging.INFO
    if quiet:
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' "Loading weights" bar too
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        warnings.filterwarnings("ignore")
    else:  # asked for: job workers and servers started from here speak too
        os.environ["INTERNLOCAL_LOG"] = logging.getLevelName(level).lower()
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "0"
        os.environ["TRANSFORMERS_VERBOSITY"] = "info" if level > logging.DEBUG else "debug"
    root = logging.getLogger()
    if not any(isinstance(h, _StderrHandler) for h in root.handlers):  # configured once per process
        handler = _StderrHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.ERROR if quiet else level)
    return level
