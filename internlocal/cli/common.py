"""Helpers shared by CLI commands: services on first use, JSON output, statuses and columns in words."""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import Any

from internlocal.bootstrap import bootstrap
from internlocal.i18n import display_width
from internlocal.services import Services


@lru_cache(maxsize=1)
def services() -> Services:
    return bootstrap()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")


def pad(text: str, width: int) -> str:
    """``text`` left-aligned in ``width`` terminal cells (``f"{text:width}"`` counts a Chinese character as one)."""
    return text + " " * max(0, width - display_width(text))
