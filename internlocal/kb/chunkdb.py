"""``index.sqlite``: a knowledge base's ``file`` and ``chunk`` tables, the source of truth, and the two FTS5
tables BM25 ranks chunks with (``chunk_words``: ``unicode61`` words; ``chunk_bigrams``: CJK text as
overlapping character bigrams). Functions over one connection; the caller decides the transactions.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from internlocal.kb.chunking import Chunk
from internlocal.kb.query import cjk_bigrams

SCHEMA = """
CREATE TABLE IF NOT EXISTS file (
    id INTEGER PRIMARY KEY,
    path TEXT NOT NULL UNIQUE,          -- absolute, as found under a root (links not resolved)
    root TEXT NOT NULL,
    relpath TEXT NOT NULL,              -- shown in citations
    kind TEXT,
    size INTEGER,
    mtime_ns INTEGER,
    sha256 TEXT,
    status TEXT NOT NULL,               -- indexed | skipped
    reason TEXT,                        -- why skipped
    chunks INTEGER NOT NULL DEFAULT 0,
    synced_at REAL
);
CREATE TABLE IF NOT EXISTS chunk (
    rid INTEGER PRIMARY KEY,
    cid TEXT NOT NULL UNIQUE,           -- the vector's id in chromadb
    file_id INTEGER NOT NULL REFERENCES file(id),
    ordinal INTEGER NOT NULL,
    hash TEXT NOT NULL,
    heading TEXT,
    text TEXT NOT NULL,
    start_line INTEGER,
    end_line INTEGER,
    page INTEGER
);
CREATE INDEX IF NOT EXISTS chunk_by_file ON chunk(file_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_words USING fts5(heading, text, content='chunk', content_rowid='rid',
    tokenize='unicode61 remove_diacritics 2');
CREATE VIRTUAL TABLE IF NOT EXISTS chunk_bigrams USING fts5(grams, tokenize='unicode61');
CREATE TRIGGER IF NOT EXISTS chunk_added AFTER INSERT ON chunk BEGIN
    INSERT INTO chunk_words(rowid, heading, text) VALUES (new.rid, new.heading, new.text);
END;
CREATE TRIGGER IF NOT EXISTS chunk_removed AFTER DELETE ON chunk BEGIN
    INSERT INTO chunk_words(chunk_words, rowid, heading, text) VALUES ('delete', old.rid, old.heading, old.text);
    DELETE FROM chunk_bigrams WHERE rowid = old.rid;
END;
"""


def connect(path: Path) -> sqlite3.Connection:
    """The index's SQLite file, its tables created when new (autocommit: transactions are explicit)."""
    db = sqlite3.connect(path, timeout=30, check_same_thread=False, isolation_level=None)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.executescript(SCHEMA)
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def file_row(db: sqlite3.Connection, path: str) -> sqlite3.Row | None:
    return db.execute("SELECT * FROM file WHERE path = ?", (path,)).fetchone()


def file_cids(db: sqlite3.Connection, path: str) -> list[str]:
    """The ids of the chunks the index has for the file at ``path``."""
    return [
        r["cid"]
        for r in db.execute("SELECT cid FROM chunk JOIN file ON file.id = chunk.file_id WHERE file.path = ?", (path,))
    ]


def upsert_file(
    db: sqlite3.Connection,
    file: Path,
    root: Path,
    relpath: str,
    kind: str | None,
    stat: os.stat_result | None,
    sha: str | None,
    status: str,
    reason: str | None,
    chunks: int,
) -> int:
    """The file's row, inserted or updated; its id."""
    values = (
        str(root),
        relpath,
        kind,
        stat.st_size if stat else None,
        stat.st_mtime_ns if stat else None,
        sha,
        status,
        reason,
        chunks,
        time.time(),
    )
    row = db.execute("SELECT id FROM file WHERE path = ?", (str(file),)).fetchone()
    if row is None:
        inserted = db.execute(
            "INSERT INTO file (root, relpath, kind, size, mtime_ns, sha256, status, reason, chunks, "
            "synced_at, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*values, str(file)),
        ).lastrowid
        assert inserted is not None  # an INSERT always sets it
        return inserted
    db.execute(
        "UPDATE file SET root = ?, relpath = ?, kind = ?, size = ?, mtime_ns = ?, sha256 = ?, status = ?, "
        "reason = ?, chunks = ?, synced_at = ? WHERE id = ?",
        (*values, row["id"]),
    )
    return int(row["id"])


def touch_file(db: sqlite3.Connection, file_id: int, stat: os.stat_result) -> None:
    """A file whose content did not change under a new size or time: remember them, so it is not read again."""
    db.execute("UPDATE file SET size = ?, mtime_ns = ? WHERE id = ?", (stat.st_size, stat.st_mtime_ns, file_id))


def replace_chunks(db: sqlite3.Connection, file_id: int, ids: list[str], chunks: list[Chunk]) -> None:
    """The file's chunks become ``chunks`` (none for a skipped file), in both FTS5 tables too."""
    db.execute("DELETE FROM chunk WHERE file_id = ?", (file_id,))
    db.executemany(
        "INSERT INTO chunk (cid, file_id, ordinal, hash, heading, text, start_line, end_line, page) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (cid, file_id, n, c.hash, c.heading, c.text, c.start_line, c.end_line, c.page)
            for n, (cid, c) in enumerate(zip(ids, chunks, strict=True))
        ],
    )
    db.executemany(
        "INSERT INTO chunk_bigrams(rowid, grams) SELECT rid, ? FROM chunk WHERE cid = ?",
        [(g, cid) for cid, c in zip(ids, chunks, strict=True) if (g := cjk_bigrams(c.embed_text))],
    )


def delete_file(db: sqlite3.Connection, path: str) -> list[str]:
    """The file's row and chunks removed in one transaction; the ids of the chunks it had."""
    row = db.execute("SELECT id FROM file WHERE path = ?", (path,)).fetchone()
    if row is None:
        return []
    cids = [r["cid"] for r in db.execute("SELECT cid FROM chunk WHERE file_id = ?", (row["id"],))]
    with transaction(db):
        db.execute("DELETE FROM chunk WHERE file_id = ?", (row["id"],))
        db.execute("DELETE FROM file WHERE id = ?", (row["id"],))
    return cids


def all_cids(db: sqlite3.Connection) -> set[str]:
    return {r[0] for r in db.execute("SELECT cid FROM chunk")}


def bm25(db: sqlite3.Connection, table: str, match: str, limit: int) -> list[str]:
    """Chunk ids best first by BM25 in ``table`` (chunk_words or chunk_bigrams); [] for an empty or invalid query."""
    if not match:
        return []
    try:
        rows = db.execute(
            f"SELECT chunk.cid FROM {table} JOIN chunk ON chunk.rid = {table}.rowid "
            f"WHERE {table} MATCH ? ORDER BY bm25({table}) LIMIT ?",
            (match, limit),
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    return [r[0] for r in rows]


def chunk_rows(db: sqlite3.Connection, cids: list[str]) -> dict[str, sqlite3.Row]:
    """The chunks with these ids (those the index has), with their file's path, relpath and kind."""
    out: dict[str, sqlite3.Row] = {}
    for start in range(0, len(cids), 500):
        part = cids[start : start + 500]
        marks = ",".join("?" * len(part))
        for row in db.execute(
            f"SELECT chunk.*, file.path, file.relpath, file.kind FROM chunk JOIN file "
            f"ON file.id = chunk.file_id WHERE chunk.cid IN ({marks})",
            part,
        ):
            out[row["cid"]] = row
    return out


def counts(db: sqlite3.Connection) -> dict[str, int]:
    files = db.execute("SELECT count(*) FROM file WHERE status = 'indexed'").fetchone()[0]
    skipped = db.execute("SELECT count(*) FROM file WHERE status = 'skipped'").fetchone()[0]
    chunks = db.execute("SELECT count(*) FROM chunk").fetchone()[0]
    return {"files": files, "skipped_files": skipped, "chunks": chunks}


def files(db: sqlite3.Connection) -> list[dict[str, Any]]:
    return [dict(r) for r in db.execute("SELECT path, relpath, kind, status, reason, chunks FROM file ORDER BY path")]
