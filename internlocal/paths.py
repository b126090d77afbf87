"""Where the data directory and the settings file are: light (no pydantic), so the language can be read from
``config.toml`` before the first paint (``i18n``) while ``config`` loads the settings after it."""

from __future__ import annotations

import os
from pathlib import Path


def default_home() -> Path:
    env = os.environ.get("INTERNLOCAL_HOME")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("internlocal", appauthor=False))


def config_path() -> Path:
    """The settings file (see ``config``'s docstring); an earlier version's file in the data directory is moved."""
    env = os.environ.get("INTERNLOCAL_HOME")
    if env:
        return Path(env).expanduser() / "config.toml"
    import platformdirs

    path = Path(platformdirs.user_config_dir("internlocal", appauthor=False)) / "config.toml"
    legacy = default_home() / "config.toml"
    if legacy.is_file() and not path.exists():
        _move(legacy, path)
    return path


def _move(source: Path, target: Path) -> None:
    """Copy to a temporary name beside the target, rename it into place, then remove the source: a crash
    leaves the old file or both, never neither."""
    import shutil

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".toml.tmp")
    shutil.copy2(source, tmp)
    os.replace(tmp, target)
    source.unlink()
