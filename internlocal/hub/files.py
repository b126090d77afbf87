"""File identity: sha256 of files and of model directories."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

CHUNK = 4 << 20


def sha256_file(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """Hex sha256 of a file, reading in 4 MiB chunks; ``on_bytes(n)`` is told of each chunk."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            if on_bytes:
                on_bytes(len(chunk))
    return digest.hexdigest()


def sha256_dir(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    """sha256 of a directory: of the sorted lines ``<relative path>\\0<file sha256>\\n`` of its files.

    Renaming or changing any file changes it; hidden files (``.gitattributes``) are skipped.
    """
    lines = []
    root = Path(path)
    files = {p.relative_to(root).as_posix(): p for p in root.rglob("*") if p.is_file()}
    for rel in sorted(files):  # sorted as strings, like store.Manifest.model_sha256
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        lines.append(f"{rel}\0{sha256_file(files[rel], on_bytes)}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def sha256_path(path: Path, on_bytes: Callable[[int], None] | None = None) -> str:
    path = Path(path)
    return sha256_dir(path, on_bytes) if path.is_dir() else sha256_file(path, on_bytes)


def path_size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size
