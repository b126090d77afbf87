"""Opening the catalog file: WAL mode, migrations, and clear errors for locked/corrupt files."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from internlocal.catalog.migrations import LATEST_VERSION, MIGRATIONS
from internlocal.errors import CatalogError

BUSY_TIMEOUT_S = 5.0


def _explain(path: Path, exc: sqlite3.Error) -> CatalogError:
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return CatalogError(
            f"The catalog {path} is locked by another program; close other internlocal windows or jobs and try again."
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return CatalogError(
            f"The catalog {path} is corrupt; move it aside (your model files are untouched) and start again, "
            "or restore the latest catalog.sqlite.bak-* backup next to it."
        )
    if "readonly" in text or "unable to open" in text or "disk i/o" in text:
        return CatalogError(
            f"Cannot write the catalog {path} ({exc}); set INTERNLOCAL_HOME to a folder you can write to."
        )
    return CatalogError(f"Cannot open the catalog {path}: {exc}.")


def connect(path: Path) -> sqlite3.Connection:
    """A raw connection with the pragmas every catalog connection uses."""
    conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate(path: Path) -> int:
    """Bring the catalog at ``path`` to the latest schema; return the version it had before.

    An existing catalog is copied to ``catalog.sqlite.bak-v<old>`` before it is upgraded.
    """
    try:
        conn = connect(path)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > LATEST_VERSION:  # checked before anything is written to the file
                raise CatalogError(
                    f"The catalog {path} was written by a newer internlocal (schema {version}, this one knows "
                    f"{LATEST_VERSION}); upgrade internlocal."
                )
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise CatalogError(f"The catalog {path} cannot use WAL mode (got {mode}); put it on a local disk.")
            if version < LATEST_VERSION:
                if version > 0:
                    _backup(conn, path.with_name(f"{path.name}.bak-v{version}"))
                for number in range(version + 1, LATEST_VERSION + 1):
                    conn.execute("BEGIN IMMEDIATE")
                    try:
                        for statement in MIGRATIONS[number - 1]:
                            conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {number}")
                        conn.execute("COMMIT")
                    except BaseException:
                        conn.execute("ROLLBACK")
                        raise
            return version
        finally:
            conn.close()
    except sqlite3.Error as exc:
        raise _explain(path, exc) from None


def _backup(conn: sqlite3.Connection, target: Path) -> None:
    tmp = target.with_name(target.name + ".tmp")
    dest = sqlite3.connect(tmp)
    try:
        conn.backup(dest)
    finally:
        dest.close()
    shutil.move(tmp, target)
