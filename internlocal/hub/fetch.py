"""Downloading the files of a dataset repository (benchmarks, training data) into a folder.

``hf:org/name[:glob][@rev]`` or ``modelscope:org/name[:glob][@rev]`` → the matching files, fetched
through the store's downloader (resumable, sha256 checked) and linked into ``dest`` under their
repository paths; zip archives are unpacked next to themselves.
"""

from __future__ import annotations

import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from internlocal.errors import UserError
from internlocal.hub.download import Downloader
from internlocal.hub.sources import resolve_dataset
from internlocal.hub.store import Store
from internlocal.i18n import _


def fetch_dataset(
    store_dir: Path,
    dest: Path,
    spec: str,
    default_pattern: str | None = None,
    on_bytes: Callable[[int], None] = lambda n: None,
    check_cancelled: Callable[[], None] = lambda: None,
) -> tuple[str, list[Path]]:
    """Returns (canonical source with its revision, the local files). ``dest`` is replaced."""
    source, files = resolve_dataset(spec, default_pattern)
    if not files:
        raise UserError(_("{source} lists no files.").format(source=source))
    dest = Path(dest)
    shutil.rmtree(dest, ignore_errors=True)  # a fresh copy: files of another source must not mix in
    dest.mkdir(parents=True)
    downloader = Downloader(Store(store_dir))
    local = []
    for remote in files:
        check_cancelled()
        blob, __ = downloader.fetch(remote, on_bytes, check_cancelled)
        target = dest / remote.path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(blob, target)
        except OSError:  # another disk, or links not allowed
            shutil.copyfile(blob, target)
        local.append(target)
        if target.suffix == ".zip":
            local += unzip(target, target.with_suffix(""))
    return source, local


def unzip(archive: Path, into: Path) -> list[Path]:
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                if not (into / member.filename).resolve().is_relative_to(into.resolve()):
                    raise UserError(
                        _("{archive} holds a path outside itself ({member}); not unpacked.").format(
                            archive=archive, member=member.filename
                        )
                    )
            zf.extractall(into)
            return [into / m.filename for m in zf.infolist() if not m.is_dir()]
    except zipfile.BadZipFile:
        raise UserError(_("{archive} is not a valid zip archive.").format(archive=archive)) from None
