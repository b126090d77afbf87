"""Walking a knowledge base's folders: which files are documents, and what is skipped on the way and why.

Links are followed only while they stay inside the folders; link loops, hidden folders and tool folders
(``.git``, ``node_modules``, virtual environments …) are not descended; a file reached twice is listed once.
"""

from __future__ import annotations

import os
from pathlib import Path

from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.kb.extract import kind_of

SKIPPED_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache", ".idea"}


def walk(roots: list[Path]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(file, root) pairs under the roots, and (path, reason) for what is skipped on the way: links that
    lead outside the roots, link loops, hidden and tool folders are not descended."""
    real_roots = [r.resolve() for r in roots]
    found: list[tuple[Path, Path]] = []
    skipped: list[tuple[str, str]] = []
    seen_files: set[str] = set()
    for root in roots:
        if not root.exists():
            raise UserError(
                _(
                    "{root} does not exist (any more); restore it, or take it out of the knowledge base with "
                    "`internlocal kb remove-folder`."
                ).format(root=root)
            )
        if root.is_file():
            if str(root) not in seen_files:
                seen_files.add(str(root))
                found.append((root, root))
            continue
        visited: set[str] = set()
        for directory, dirs, files in os.walk(root, followlinks=True):
            try:
                real = Path(directory).resolve(strict=True)
            except (OSError, RuntimeError):
                skipped.append((directory, "symlink loop"))
                dirs[:] = []
                continue
            if str(real) in visited:
                skipped.append((directory, "symlink loop (folder already visited)"))
                dirs[:] = []
                continue
            if not any(real == r or r in real.parents for r in real_roots):
                skipped.append((directory, "links outside the knowledge base's folders"))
                dirs[:] = []
                continue
            visited.add(str(real))
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
            for name in sorted(files):
                if name.startswith("."):
                    continue
                path = Path(directory) / name
                if str(path) in seen_files:
                    continue
                seen_files.add(str(path))
                try:
                    target = path.resolve(strict=True)
                except FileNotFoundError:
                    skipped.append((str(path), "broken link"))
                    continue
                except (OSError, RuntimeError):
                    skipped.append((str(path), "symlink loop"))
                    continue
                if not any(target == r or r in target.parents for r in real_roots):
                    skipped.append((str(path), "links outside the knowledge base's folders"))
                    continue
                if not target.is_file():
                    continue
                if kind_of(path) is None:
                    continue  # other file types are not documents: not listed as problems either
                found.append((path, root))
    return found, skipped


def under(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies beneath it."""
    folder = str(Path(folder).expanduser().absolute())
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)
