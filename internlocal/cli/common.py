"""Helpers shared by CLI commands: services on first use, JSON output."""

from __future__ import annotations

import json
import sys
from functools import lru_cache
from typing import Any

from internlocal.bootstrap import bootstrap
from internlocal.services import Services


@lru_cache(maxsize=1)
def services() -> Services:
    return bootstrap()


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")
