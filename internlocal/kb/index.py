"""One knowledge base's index: chunks in SQLite (with two FTS5 tables for BM25) and vectors in chromadb.

SQLite is the source of truth. A file's chunks change in one SQLite transaction, after their vectors
are in chromadb and before stale vectors leave it, so a search (which only returns chunks SQLite
has) never sees a half-updated file; vectors left behind by an interrupted sync are found and
dropped (or reused) by the next one. A chunk's id comes from its file, its content hash and its
occurrence in the file, so an unchanged chunk keeps its id and its vector: only changed chunks
are embedded again (khoj's design).

Retrieval fuses three ranked lists by reciprocal rank (GPT4All's LocalDocs design): dense cosine
similarity, BM25 over words (``unicode61``) and, for Chinese/Japanese/Korean queries, BM25 over
overlapping character bigrams (Lucene's CJK approach: ``unicode61`` sees an unspaced CJK sentence as
one token, and FTS5's ``trigram`` tokenizer cannot match the two-character words most Chinese words are).
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from internlocal.engines.base import Embedder
from internlocal.errors import UserError
from internlocal.kb.chunking import Chunk, chunk_blocks
from internlocal.kb.extract import Unreadable, extract, kind_of

RRF_K = 60  # the constant of Cormack et al.; ranks below ~60 contribute little
EMBED_BATCH = 256  # chunks embedded per call: sentence-transformers sorts a call by length, so bigger calls pad less
SKIPPED_DIRS = {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache", ".idea"}
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")

_SCHEMA = """
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


@dataclass
class Hit:
    cid: str
    text: str
    heading: str | None
    path: str
    relpath: str
    kind: str | None
    start_line: int | None
    end_line: int | None
    page: int | None
    score: float  # fused reciprocal-rank score
    similarity: float  # cosine similarity to the query (the refusal evidence)
    rerank_score: float | None = None  # the cross-encoder's, when results were reranked

    @property
    def citation(self) -> str:
        if self.page is not None:
            return f"{self.relpath} p.{self.page}"
        if self.start_line is not None:
            span = (
                str(self.start_line)
                if self.end_line in (None, self.start_line)
                else f"{self.start_line}-{self.end_line}"
            )
            return f"{self.relpath}:{span}"
        return self.relpath

    def as_dict(self) -> dict[str, Any]:
        return {
            "cid": self.cid,
            "citation": self.citation,
            "path": self.path,
            "relpath": self.relpath,
            "heading": self.heading,
            "start_line": self.start_line,
            "end_line": self.end_line,
            "page": self.page,
            "score": round(self.score, 6),
            "similarity": round(self.similarity, 4),
            **({"rerank_score": round(self.rerank_score, 4)} if self.rerank_score is not None else {}),
            "text": self.text,
        }


@dataclass
class SyncReport:
    files_seen: int = 0
    files_indexed: int = 0  # new or changed
    files_unchanged: int = 0
    files_removed: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0  # vectors an interrupted sync had already written
    chunks_removed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: v for k, v in self.__dict__.items() if k != "skipped"},
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


class _EmbeddingFunction:
    """chromadb wants an embedding function on the collection, or it builds its default one, which
    downloads a model; ours names the catalog model and is never called (we pass vectors ourselves)."""

    def __init__(self, model: str = "unknown"):
        self.model = model

    def __call__(self, input):
        raise RuntimeError("internlocal passes embeddings to chromadb explicitly")

    @staticmethod
    def name() -> str:
        return "internlocal"

    def get_config(self) -> dict[str, Any]:
        return {"model": self.model}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> _EmbeddingFunction:
        return _EmbeddingFunction(config.get("model", "unknown"))

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine"]


def collection_name(embedder: str, dimension: int) -> str:
    return f"chunks-{hashlib.sha256(f'{embedder}:{dimension}'.encode()).hexdigest()[:12]}"


def open_vectors(path: Path, embedder: str, dimension: int, *, create: bool):
    """The chromadb collection of ``embedder``'s vectors, checked: a collection built by another model or
    with another dimension is never written to or queried with these vectors."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        path=str(path / "chroma"), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    )
    name = collection_name(embedder, dimension)
    function = _EmbeddingFunction(embedder)
    if create:
        collection = client.get_or_create_collection(
            name,
            embedding_function=function,  # type: ignore[arg-type]
            metadata={"embedder": embedder, "dimension": dimension},
            configuration={"hnsw": {"space": "cosine"}},
        )
    else:
        try:
            collection = client.get_collection(name, embedding_function=function)  # type: ignore[arg-type]
        except Exception:
            raise UserError(
                f"The knowledge base's vectors for {embedder} are missing; `internlocal kb reembed` rebuilds them."
            ) from None
    meta = collection.metadata or {}
    if meta.get("embedder") != embedder or int(meta.get("dimension", -1)) != dimension:
        raise UserError(
            f"The knowledge base's vectors come from {meta.get('embedder')} ({meta.get('dimension')} dimensions), "
            f"not {embedder} ({dimension}); `internlocal kb reembed` rebuilds them with another model."
        )
    return client, collection


class Index:
    def __init__(
        self,
        path: Path,
        embedder: Embedder,
        *,
        embedder_name: str | None = None,
        chunk_size: int = 800,
        chunk_overlap: int = 120,
        max_file_bytes: int = 50 * 1024 * 1024,
    ):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.embedder_name = embedder_name or embedder.model_name
        self.chunk_size, self.chunk_overlap, self.max_file_bytes = chunk_size, chunk_overlap, max_file_bytes
        self.embedded = 0  # texts sent to the embedder by this object (tests count them)
        self.db = sqlite3.connect(self.path / "index.sqlite", timeout=30, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)
        self.client, self.vectors = open_vectors(self.path, self.embedder_name, embedder.dimension, create=True)

    def close(self) -> None:
        self.db.close()
        self.client.close()  # chromadb keeps one system per folder per process until its last client closes

    # -- sync ------------------------------------------------------------------------------------------

    def sync(
        self,
        roots: Iterable[str | Path],
        progress: Callable[[int, int, str], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> SyncReport:
        """Make the index match the files under ``roots`` (folders or single files)."""
        roots = [Path(r).expanduser().absolute() for r in roots]
        report = SyncReport()
        found, skipped = walk(roots)
        report.skipped.extend(skipped)
        for path, reason in skipped:
            self._remove_file(path)
        seen = {str(p) for p, _ in found} | {p for p, _ in skipped}
        pending: list[_Prepared] = []
        for done, (file, root) in enumerate(found, start=1):
            if should_stop is not None and should_stop():
                self._flush(pending, report)  # what was read is kept: the next sync starts from there
                raise InterruptedError("sync stopped")
            report.files_seen += 1
            prepared = self._prepare(file, root, report)
            if prepared is not None:
                pending.append(prepared)
                if sum(len(p.todo) for p in pending) >= EMBED_BATCH:
                    self._flush(pending, report)
                    pending = []
            if progress is not None:
                progress(done, len(found), str(file))
        self._flush(pending, report)
        root_texts = [str(r) for r in roots]
        for row in self.db.execute("SELECT path, root FROM file").fetchall():
            if row["path"] not in seen or row["root"] not in root_texts:
                report.chunks_removed += self._remove_file(row["path"])
                report.files_removed += 1
        self._drop_orphan_vectors()
        return report

    def _prepare(self, file: Path, root: Path, report: SyncReport) -> _Prepared | None:
        """Read, extract and chunk a new or changed file; None when there is nothing to write for it."""
        row = self.db.execute("SELECT * FROM file WHERE path = ?", (str(file),)).fetchone()
        try:
            stat = file.stat()
            if (
                row is not None
                and row["size"] == stat.st_size
                and row["mtime_ns"] == stat.st_mtime_ns
                and row["root"] == str(root)
            ):
                report.files_unchanged += 1
                if row["status"] == "skipped":
                    report.skipped.append((str(file), row["reason"]))
                return None
            if stat.st_size > self.max_file_bytes:
                raise Unreadable(f"larger than {self.max_file_bytes // (1024 * 1024)} MB")
            data = file.read_bytes()
        except FileNotFoundError:  # deleted while we were syncing: it is simply gone
            report.chunks_removed += self._remove_file(str(file))
            return None
        except PermissionError:
            self._mark_skipped(file, root, None, "permission denied", report)
            return None
        except Unreadable as exc:
            self._mark_skipped(file, root, stat, str(exc), report)
            return None
        sha = hashlib.sha256(data).hexdigest()
        if row is not None and row["sha256"] == sha and row["status"] == "indexed" and row["root"] == str(root):
            self.db.execute(
                "UPDATE file SET size = ?, mtime_ns = ? WHERE id = ?", (stat.st_size, stat.st_mtime_ns, row["id"])
            )
            report.files_unchanged += 1
            return None
        kind = kind_of(file)
        try:
            chunks = chunk_blocks(extract(file, data), self.chunk_size, self.chunk_overlap, code=kind == "code")
        except Unreadable as exc:
            self._mark_skipped(file, root, stat, str(exc), report)
            return None
        if not chunks:
            self._mark_skipped(file, root, stat, "no text", report)
            return None
        relpath = file.name if root == file else str(file.relative_to(root))
        ids = chunk_ids(relpath if root != file else str(file), chunks)
        old = {
            r["cid"]
            for r in self.db.execute(
                "SELECT cid FROM chunk JOIN file ON file.id = chunk.file_id WHERE file.path = ?", (str(file),)
            )
        }
        new = [(cid, c) for cid, c in zip(ids, chunks) if cid not in old]
        present = set(self.vectors.get(ids=[cid for cid, _ in new], include=[])["ids"]) if new else set()
        todo = [(cid, c) for cid, c in new if cid not in present]
        report.chunks_reused += len(new) - len(todo)
        return _Prepared(file, root, relpath, kind, stat, sha, ids, chunks, todo, sorted(old - set(ids)))

    def _flush(self, pending: list[_Prepared], report: SyncReport) -> None:
        """Embed the prepared files' new chunks in one batch, store the vectors, then switch each file to
        its new chunks in one SQLite transaction, then drop its stale vectors."""
        todo = [(cid, c, p) for p in pending for cid, c in p.todo]
        for start in range(0, len(todo), 2 * EMBED_BATCH):
            batch = todo[start : start + 2 * EMBED_BATCH]
            vectors = self.embed([c.embed_text for _, c, _ in batch])
            self.vectors.upsert(
                ids=[cid for cid, _, _ in batch],
                embeddings=vectors,  # type: ignore[arg-type]
                metadatas=[{"kind": p.kind or "", "relpath": p.relpath} for _, _, p in batch],
            )
        report.chunks_embedded += len(todo)
        for p in pending:
            with self._transaction():
                file_id = self._upsert_file(
                    p.file, p.root, p.relpath, p.kind, p.stat, p.sha, "indexed", None, len(p.chunks)
                )
                self.db.execute("DELETE FROM chunk WHERE file_id = ?", (file_id,))
                self.db.executemany(
                    "INSERT INTO chunk (cid, file_id, ordinal, hash, heading, text, start_line, end_line, page) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (cid, file_id, n, c.hash, c.heading, c.text, c.start_line, c.end_line, c.page)
                        for n, (cid, c) in enumerate(zip(p.ids, p.chunks))
                    ],
                )
                self.db.executemany(
                    "INSERT INTO chunk_bigrams(rowid, grams) SELECT rid, ? FROM chunk WHERE cid = ?",
                    [(g, cid) for cid, c in zip(p.ids, p.chunks) if (g := cjk_bigrams(c.embed_text))],
                )
            if p.stale:
                self.vectors.delete(ids=p.stale)
            report.chunks_removed += len(p.stale)
            report.files_indexed += 1

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = self.embedder.embed(texts)
        self.embedded += len(texts)
        if vectors and len(vectors[0]) != self.embedder.dimension:
            raise UserError(
                f"{self.embedder_name} returned {len(vectors[0])}-dimensional vectors, not {self.embedder.dimension}."
            )
        return vectors

    def _mark_skipped(
        self, file: Path, root: Path, stat: os.stat_result | None, reason: str, report: SyncReport
    ) -> None:
        report.skipped.append((str(file), reason))
        old = [
            r["cid"]
            for r in self.db.execute(
                "SELECT cid FROM chunk JOIN file ON file.id = chunk.file_id WHERE path = ?", (str(file),)
            )
        ]
        relpath = file.name if root == file else str(file.relative_to(root))
        with self._transaction():
            file_id = self._upsert_file(file, root, relpath, kind_of(file), stat, None, "skipped", reason, 0)
            self.db.execute("DELETE FROM chunk WHERE file_id = ?", (file_id,))
        if old:
            self.vectors.delete(ids=old)
            report.chunks_removed += len(old)

    def _upsert_file(
        self,
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
        row = self.db.execute("SELECT id FROM file WHERE path = ?", (str(file),)).fetchone()
        if row is None:
            return int(
                self.db.execute(
                    "INSERT INTO file (root, relpath, kind, size, mtime_ns, sha256, status, reason, chunks, "
                    "synced_at, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*values, str(file)),
                ).lastrowid
            )
        self.db.execute(
            "UPDATE file SET root = ?, relpath = ?, kind = ?, size = ?, mtime_ns = ?, sha256 = ?, status = ?, "
            "reason = ?, chunks = ?, synced_at = ? WHERE id = ?",
            (*values, row["id"]),
        )
        return int(row["id"])

    def _remove_file(self, path: str) -> int:
        row = self.db.execute("SELECT id FROM file WHERE path = ?", (path,)).fetchone()
        if row is None:
            return 0
        cids = [r["cid"] for r in self.db.execute("SELECT cid FROM chunk WHERE file_id = ?", (row["id"],))]
        with self._transaction():
            self.db.execute("DELETE FROM chunk WHERE file_id = ?", (row["id"],))
            self.db.execute("DELETE FROM file WHERE id = ?", (row["id"],))
        if cids:
            self.vectors.delete(ids=cids)
        return len(cids)

    def _drop_orphan_vectors(self) -> int:
        """Vectors SQLite does not know: written by a sync interrupted between its two writes. Run after a
        sync, which has reused those of files still there (same content, same id)."""
        known = {r[0] for r in self.db.execute("SELECT cid FROM chunk")}
        offset, orphans = 0, []
        while True:
            page = self.vectors.get(include=[], limit=5000, offset=offset)["ids"]
            if not page:
                break
            orphans.extend(i for i in page if i not in known)
            offset += len(page)
        for start in range(0, len(orphans), 5000):
            self.vectors.delete(ids=orphans[start : start + 5000])
        return len(orphans)

    class _Tx:
        def __init__(self, db: sqlite3.Connection):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")

        def __exit__(self, kind, value, tb):
            self.db.execute("COMMIT" if kind is None else "ROLLBACK")

    def _transaction(self) -> Index._Tx:
        return Index._Tx(self.db)

    # -- queries ---------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        files = self.db.execute("SELECT count(*) FROM file WHERE status = 'indexed'").fetchone()[0]
        skipped = self.db.execute("SELECT count(*) FROM file WHERE status = 'skipped'").fetchone()[0]
        chunks = self.db.execute("SELECT count(*) FROM chunk").fetchone()[0]
        return {"files": files, "skipped_files": skipped, "chunks": chunks, "vectors": self.vectors.count()}

    def files(self) -> list[dict[str, Any]]:
        return [
            dict(r)
            for r in self.db.execute("SELECT path, relpath, kind, status, reason, chunks FROM file ORDER BY path")
        ]

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        mode: Literal["hybrid", "dense", "bm25"] = "hybrid",
        kinds: list[str] | None = None,
        folder: str | None = None,
        reranker: Any = None,
    ) -> list[Hit]:
        """The k best chunks; with a ``reranker`` (``score(query, texts)``), the fused top 3k (at least 20)
        are read together with the query by the cross-encoder and reordered by its scores."""
        query = query.strip()
        if not query:
            raise UserError("The search query is empty.")
        final_k = k
        if reranker is not None:
            k = max(3 * k, 20)
        depth = max(4 * k, 20) if (kinds or folder) else max(2 * k, 20)
        qv = self.embed([query])[0]
        ranked: list[list[str]] = []
        similarity: dict[str, float] = {}
        if mode in ("hybrid", "dense"):
            count = self.vectors.count()
            if count:
                found = self.vectors.query(
                    query_embeddings=[qv],
                    n_results=min(depth, count),  # type: ignore[arg-type]
                    where={"kind": {"$in": kinds}} if kinds else None,
                    include=["distances"],
                )
                ids, distances = found["ids"][0], found["distances"][0]  # type: ignore[index]
                similarity.update({i: 1.0 - d for i, d in zip(ids, distances)})
                ranked.append(list(ids))
        if mode in ("hybrid", "bm25"):
            ranked.append(self._bm25("chunk_words", word_query(query), depth))
            grams = cjk_bigrams(query).split()
            if grams:
                ranked.append(self._bm25("chunk_bigrams", " OR ".join(f'"{g}"' for g in dict.fromkeys(grams)), depth))
        if mode == "hybrid" and (exact := identifier_query(query)):
            # codes and numbers ("E-4127", "KX-55-0192", "192.168.50.1") mean what they say: the chunks containing
            # them verbatim are one more ranked list, or fusion lets a chunk both lists like a little outrank them
            ranked.append(self._bm25("chunk_words", exact, depth))
        fused: dict[str, float] = {}
        for ranking in ranked:
            for rank, cid in enumerate(ranking, start=1):
                fused[cid] = fused.get(cid, 0.0) + 1.0 / (RRF_K + rank)
        order = sorted(fused, key=lambda c: -fused[c])
        rows = self._rows(order)
        hits = []
        for cid in order:
            row = rows.get(cid)  # a vector whose chunk SQLite does not have (yet) is not a result
            if row is None or (kinds and row["kind"] not in kinds) or (folder and not _under(row["path"], folder)):
                continue
            hits.append(
                Hit(
                    cid,
                    row["text"],
                    row["heading"],
                    row["path"],
                    row["relpath"],
                    row["kind"],
                    row["start_line"],
                    row["end_line"],
                    row["page"],
                    fused[cid],
                    similarity.get(cid, float("nan")),
                )
            )
            if len(hits) == k:
                break
        missing = [h for h in hits if h.similarity != h.similarity]
        if missing:  # found by BM25 alone: its cosine similarity still decides refusal
            got = self.vectors.get(ids=[h.cid for h in missing], include=["embeddings"])
            vectors = dict(zip(got["ids"], got["embeddings"]))  # type: ignore[arg-type]
            for h in missing:
                v = vectors.get(h.cid)
                h.similarity = _cosine(qv, v) if v is not None else 0.0
        if reranker is not None:
            for hit, score in zip(
                hits, reranker.score(query, [f"{h.heading}\n{h.text}" if h.heading else h.text for h in hits])
            ):
                hit.rerank_score = score
            hits.sort(key=lambda h: -(h.rerank_score or 0.0))
        return hits[:final_k]

    def _bm25(self, table: str, match: str, limit: int) -> list[str]:
        if not match:
            return []
        try:
            rows = self.db.execute(
                f"SELECT chunk.cid FROM {table} JOIN chunk ON chunk.rid = {table}.rowid "
                f"WHERE {table} MATCH ? ORDER BY bm25({table}) LIMIT ?",
                (match, limit),
            ).fetchall()
        except sqlite3.OperationalError:
            return []
        return [r[0] for r in rows]

    def _rows(self, cids: list[str]) -> dict[str, sqlite3.Row]:
        out: dict[str, sqlite3.Row] = {}
        for start in range(0, len(cids), 500):
            part = cids[start : start + 500]
            marks = ",".join("?" * len(part))
            for row in self.db.execute(
                f"SELECT chunk.*, file.path, file.relpath, file.kind FROM chunk JOIN file "
                f"ON file.id = chunk.file_id WHERE chunk.cid IN ({marks})",
                part,
            ):
                out[row["cid"]] = row
        return out


@dataclass
class _Prepared:
    file: Path
    root: Path
    relpath: str
    kind: str | None
    stat: os.stat_result
    sha: str
    ids: list[str]
    chunks: list[Chunk]
    todo: list[tuple[str, Chunk]]  # chunks whose vectors must be computed
    stale: list[str]  # ids of the file's chunks that are gone


def chunk_ids(source: str, chunks: list[Chunk]) -> list[str]:
    """Stable ids: the same text at the same place keeps its id when the rest of the file changes."""
    seen: dict[str, int] = {}
    ids = []
    for chunk in chunks:
        h = chunk.hash
        n = seen.get(h, 0)
        seen[h] = n + 1
        ids.append(hashlib.sha256(f"{source}\0{h}\0{n}".encode()).hexdigest()[:32])
    return ids


# question words and glue: they match nearly every chunk, cost BM25 a scan of every posting and add nothing
STOP_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "can", "could", "did", "do", "does", "doing", "for", "from", "had", "has", "have", "how", "i", "if", "in", "into", "is", "it", "its", "me", "my", "of", "on", "or", "our", "should", "so", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this", "to", "was", "we", "were", "what", "when", "where", "which", "who", "whom", "why", "will", "with", "would", "you", "your", "about", "after", "again", "all", "also", "am", "any", "because", "before", "between", "both", "each", "few", "further", "here", "just", "more", "most", "no", "nor", "not", "now", "off", "once", "only", "other", "over", "own", "same", "some", "such", "too", "under", "until", "up", "very", "while"]
)


def word_query(query: str) -> str:
    tokens = [t for t in re.findall(r"\w+", query.lower()) if len(t) > 1 or t.isdigit()]
    kept = [t for t in tokens if t not in STOP_WORDS] or tokens
    return " OR ".join(f'"{t}"' for t in dict.fromkeys(kept))


_IDENTIFIER = re.compile(r"\b(?=[\w.\-/]*\d)[A-Za-z0-9]+(?:[.\-/_][A-Za-z0-9]+)+\b|\b[A-Za-z]*\d{3,}[A-Za-z]*\b")


def identifier_query(query: str) -> str:
    """An FTS5 query matching chunks that contain every code-like token of the query as a phrase."""
    phrases = []
    for token in dict.fromkeys(_IDENTIFIER.findall(query)):
        words = re.findall(r"\w+", token.lower())
        if words:
            phrases.append('"' + " ".join(words) + '"')
    return " AND ".join(phrases)


def cjk_bigrams(text: str) -> str:
    """The CJK runs of ``text`` as space-separated overlapping bigrams (a lone character as itself)."""
    grams = []
    for run in _CJK.findall(text):
        grams.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return " ".join(grams)


def walk(roots: list[Path]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """(file, root) pairs under the roots, and (path, reason) for what is skipped on the way: links that
    lead outside the roots, link loops, hidden and tool folders are not descended."""
    real_roots = [r.resolve() for r in roots]
    found: list[tuple[Path, Path]] = []
    skipped: list[tuple[str, str]] = []
    seen_files: set[str] = set()
    for root, real_root in zip(roots, real_roots):
        if not root.exists():
            raise UserError(f"{root} does not exist (any more); remove it from the knowledge base or restore it.")
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


def _under(path: str, folder: str) -> bool:
    folder = str(Path(folder).expanduser().absolute())
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _cosine(a: list[float], b: Any) -> float:
    import numpy as np

    va, vb = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    denominator = float(np.linalg.norm(va) * np.linalg.norm(vb)) or 1.0
    return float(va @ vb) / denominator
