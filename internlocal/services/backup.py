"""``internlocal backup`` / ``restore``: the catalog (chats, model records, lineage, runs, knowledge bases), the
knowledge-base indexes and the pictures attached to chats, into a folder a user can keep elsewhere.

The catalog is copied with SQLite's online backup, so the app may keep running; each index is copied under its
sync lock, so no sync changes it half-way. Model files are not copied (they are large and can be pulled or
converted again); the backup lists them. A restore fills a data directory from a backup (a catalog already there
is moved aside first, never overwritten), and an older catalog comes up through the migrations.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from internlocal import __version__
from internlocal.catalog import db
from internlocal.catalog.catalog import Catalog
from internlocal.chat.images import ImageStore
from internlocal.config import Settings
from internlocal.errors import UserError
from internlocal.hub.embedded import register_embedded
from internlocal.i18n import _
from internlocal.kb.library import kb_dir, sync_lock

MANIFEST = "manifest.json"
SQLITE_SUFFIXES = (".sqlite", ".sqlite3", ".db")
NOT_COPIED = ("-wal", "-shm", ".lock", ".owner")  # live-database side files and locks: the copies are complete without


def backup(settings: Settings, target: Path) -> dict[str, Any]:
    target = Path(target).expanduser().absolute()
    if target.exists() and any(target.iterdir()):
        raise UserError(
            _("{target} exists and is not empty; choose a new folder for the backup.").format(target=target)
        )
    if not settings.catalog_path.exists():
        raise UserError(_("There is no catalog at {path} to back up.").format(path=settings.catalog_path))
    work = target.with_name(target.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    db.copy_database(settings.catalog_path, work / "catalog.sqlite")
    catalog = Catalog(settings.catalog_path)
    try:
        kbs = catalog.list_kbs()
        for kb in kbs:
            with sync_lock(kb):
                _copy_index(Path(kb.path), work / "kb" / kb.name)
        models = [{"name": m.name, "path": m.path, "exists": Path(m.path).exists()} for m in catalog.list_models()]
    finally:
        catalog.close()
    copied = Catalog(work / "catalog.sqlite")  # the copy opens and is sound before the backup counts as made
    summary = _summary(copied)
    images = _copy_images(ImageStore(settings.home), ImageStore(work), copied.image_shas())
    copied.close()
    problem = db.integrity(work / "catalog.sqlite")
    if problem != "ok":
        raise UserError(
            _("The catalog copy failed SQLite's integrity check ({problem}); the backup was not kept.").format(
                problem=problem
            )
        )
    manifest = {
        "internlocal": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "home": str(settings.home),
        "indexes": [kb.name for kb in kbs],  # the knowledge bases whose index folders are in kb/
        "models_not_copied": models,
        "images": images,  # the chats' pictures, in images/ as in the data directory
        **summary,
    }
    (work / MANIFEST).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    if target.exists():
        target.rmdir()
    os.replace(work, target)  # a backup interrupted half-way is never mistaken for a complete one
    return {"backup": str(target), **summary}


def restore(settings: Settings, source: Path, *, force: bool = False) -> dict[str, Any]:
    source = Path(source).expanduser().absolute()
    manifest_path = source / MANIFEST
    if not manifest_path.is_file() or not (source / "catalog.sqlite").is_file():
        raise UserError(
            _("{source} is not an internlocal backup (no {manifest} and catalog.sqlite in it).").format(
                source=source, manifest=MANIFEST
            )
        )
    manifest = json.loads(manifest_path.read_text())
    problem = db.integrity(source / "catalog.sqlite")
    if problem != "ok":
        raise UserError(_("The backup's catalog is damaged ({problem}); nothing was restored.").format(problem=problem))
    settings.ensure_dirs()
    home, moved = settings.home, []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    if settings.catalog_path.exists():
        if not force:
            raise UserError(
                _(
                    "{home} already has a catalog; `internlocal restore --force {source}` moves it aside "
                    "(catalog.sqlite.before-restore-{stamp}) and restores the backup."
                ).format(home=home, source=source, stamp=stamp)
            )
        aside = settings.catalog_path.with_name(f"catalog.sqlite.before-restore-{stamp}")
        db.copy_database(settings.catalog_path, aside)
        moved.append(str(aside))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{settings.catalog_path}{suffix}").unlink(missing_ok=True)
    restored_kbs = []
    for name in manifest.get("indexes", []):
        path = kb_dir(settings, name)
        if path.exists():
            aside_kb = path.with_name(f"{name}.before-restore-{stamp}")
            path.rename(aside_kb)
            moved.append(str(aside_kb))
        shutil.copytree(source / "kb" / name, path)
        restored_kbs.append(name)
    # content-addressed: a picture already in the data directory is the same file, so nothing is overwritten
    _copy_images(
        ImageStore(source), ImageStore(home), {p.name for p in (source / "images").glob("*/*") if len(p.name) == 64}
    )
    tmp = settings.catalog_path.with_name("catalog.sqlite.restoring")
    db.copy_database(source / "catalog.sqlite", tmp)
    os.replace(tmp, settings.catalog_path)
    catalog = Catalog(settings.catalog_path)  # an older backup's schema is migrated here
    try:
        for name in restored_kbs:
            catalog.update_kb(name, path=str(kb_dir(settings, name)))
        register_embedded(catalog)  # the embedded models where this installation has them
        summary = _summary(catalog)
        missing = [m.name for m in catalog.list_models() if not Path(m.path).exists()]
    finally:
        catalog.close()
    return {
        "restored": str(source),
        "into": str(home),
        "from_version": catalog.previous_version,
        "moved_aside": moved,
        "models_without_files": missing,
        **summary,
    }


def _copy_images(source: ImageStore, target: ImageStore, shas: set[str]) -> int:
    """Copy the picture files of ``shas`` that ``source`` has and ``target`` lacks; returns how many ``target``
    then has of them (a picture freed meanwhile by a deleted chat is skipped)."""
    have = 0
    for sha in sorted(shas):
        origin, copy = source.path(sha), target.path(sha)
        if not copy.exists() and origin.is_file():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, copy)
        have += copy.exists()
    return have


def _summary(catalog: Catalog) -> dict[str, int]:
    return {
        "models": len(catalog.list_models()),
        "chats": len(catalog.list_chats()),
        "knowledge_bases": len(catalog.list_kbs()),
        "train_runs": len(catalog.list_train_runs()),
    }


def _copy_index(source: Path, target: Path) -> None:
    """An index folder, its SQLite files through the online backup (chromadb keeps one too)."""
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        out = target / relative
        if path.is_dir():
            out.mkdir(parents=True, exist_ok=True)
        elif path.name.endswith(NOT_COPIED):
            continue
        elif path.suffix in SQLITE_SUFFIXES:
            out.parent.mkdir(parents=True, exist_ok=True)
            db.copy_database(path, out)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, out)
