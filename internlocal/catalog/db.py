"""Opening the catalog file: WAL mode, migrations, and clear errors for locked/corrupt files."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

from internlocal.catalog.migrations import LATEST_VERSION, MIGRATIONS
from internlocal.errors import CatalogError, UserError, disk_full
from internlocal.i18n import _

BUSY_TIMEOUT_S = 30.0  # a writer waits this long for another (a job, the TUI, the CLI) before "locked"


def _explain(path: Path, exc: sqlite3.Error) -> UserError:
    full = disk_full(exc)
    if full is not None:
        return full
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return CatalogError(
            _(
                "The catalog {path} is locked by another program; close other internlocal windows or jobs "
                "and try again."
            ).format(path=path)
        )
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return CatalogError(
            _(
                "The catalog {path} is corrupt; move it aside (your model files are untouched) and start again, "
                "or restore the latest catalog.sqlite.bak-* backup next to it."
            ).format(path=path)
        )
    if "readonly" in text or "unable to open" in text or "disk i/o" in text:
        return CatalogError(
            _("Cannot write the catalog {path} ({exc}); set INTERNLOCAL_HOME to a folder you can write to.").format(
                path=path, exc=exc
            )
        )
    return CatalogError(_("Cannot open the catalog {path}: {exc}.").format(path=path, exc=exc))


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
                    _(
                        "The catalog {path} was written by a newer internlocal (schema {version}, this one knows "
                        "{latest}); upgrade internlocal."
                    ).format(path=path, version=version, latest=LATEST_VERSION)
                )
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise CatalogError(
                    _("The catalog {path} cannot use WAL mode (got {mode}); put it on a local disk.").format(
                        path=path, mode=mode
                    )
                )
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


def copy_database(source: Path, target: Path) -> None:
    """A consistent copy of any SQLite file (the catalog, an index) through SQLite's online backup: safe while other
    processes read and write it, and it includes what is still in the WAL file, which copying the file would miss."""
    conn = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    try:
        _backup(conn, target)
    except sqlite3.Error as exc:
        raise _explain(source, exc) from None
    finally:
        conn.close()


def integrity(path: Path) -> str:
    """SQLite's own check of a database file: "ok", or what it found damaged (first lines)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
        try:
            rows = [r[0] for r in conn.execute("PRAGMA integrity_check(5)").fetchall()]
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return str(exc)
    return "ok" if rows == ["ok"] else "; ".join(rows)
