"""Tools that live in virtual environments of their own, beside internlocal's.

LMDeploy's wheels need CUDA and pin torch and peft versions that conflict with ours, so ``internlocal
engines install lmdeploy`` gives it ``<home>/envs/lmdeploy``; the engine (``engines/lmdeploy_engine.py``)
and the AWQ quantizer (``hub/convert.py``) run its ``lmdeploy`` executable as a subprocess.
``INTERNLOCAL_LMDEPLOY`` may point at another ``lmdeploy`` executable.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def env_dir(home: Path, tool: str) -> Path:
    return Path(home) / "envs" / tool


def lmdeploy_executable(home: Path) -> Path | None:
    """The ``lmdeploy`` executable to run, or None when it is not installed."""
    override = os.environ.get("INTERNLOCAL_LMDEPLOY")
    if override:
        return Path(override)
    candidate = env_dir(home, "lmdeploy") / "bin" / "lmdeploy"
    return candidate if candidate.exists() else None


def lmdeploy_install_commands(home: Path, python: str = sys.executable, version: str = "0.18.*") -> list[list[str]]:
    """The commands ``engines install lmdeploy`` runs (a venv, then LMDeploy and its pinned torch)."""
    venv = env_dir(home, "lmdeploy")
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check"]
    return [[python, "-m", "venv", str(venv)], [*pip, "--upgrade", "pip"], [*pip, f"lmdeploy=={version}"]]
