"""Files the program reads at run time: the curated model registry and the recipes with their demo data.

In the repository ``resources/models`` and ``resources/recipes`` are links to the top-level
``models/`` and ``recipes/`` folders (where people look for them, and edit them); a wheel holds
copies (setuptools follows the links). Either way they are found through ``importlib.resources``,
so an editable install reads the repository's files and an installed wheel its own.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def resource_dir(name: str) -> Path:
    """``models`` or ``recipes``, as a folder on disk (the package is installed unzipped, as pip and uv do)."""
    return Path(str(files(__name__) / name))
