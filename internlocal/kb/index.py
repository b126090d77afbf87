"""One knowledge base's index: chunks in SQLite (with two FTS5 tables for BM25) and vectors in chromadb.

SQLite is the source of truth. A file's chunks change in one SQLite transaction, after their vectors
are in chromadb and before stale vectors leave it, so a search (which only returns chunks SQLite
has) never sees a half-updated file; vectors left behind by an interrupted sync are found and
dropped (or reused) by the next one. A chunk's id comes from its file, its content hash and its
occurrence in the file, so an unchanged chunk keeps its id and its vector: only changed chunks
are embedded again (khoj's design).

A search reads as candidates → fuse → hydrate → rerank: ranked lists from dense cosine similarity, BM25
over words and, for Chinese/Japanese/Korean queries, BM25 over character bigrams; reciprocal-rank fusion
(GPT4All's LocalDocs design); the fused ids that SQLite has become ``Hit``s; a cross-encoder, when given,
reorders them. Beside this file: ``walk.py`` finds the documents, ``chunkdb.py`` holds the SQLite tables,
``vectors.py`` the chromadb collection, ``query.py`` the query texts and the fusion.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from internlocal.engines.base import Embedder
from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.kb import chunkdb
from internlocal.kb.chunking import Chunk, chunk_blocks
from internlocal.kb.extract import Block, Unreadable, extract, kind_of
from internlocal.kb.query import bigram_query, fuse, identifier_query, word_query
from internlocal.kb.vectors import all_ids, cosine, delete_ids, open_vectors
from internlocal.kb.walk import under, walk

EMBED_BATCH = 256  # chunks embedded per call: sentence-transformers sorts a call by length, so bigger calls pad less


@dataclass(frozen=True)
class FileLimits:
    """What one file may bring into an index; a file over a limit is skipped with a reason that names the setting
    (``kb_max_*``) and how to raise it."""

    max_file_bytes: int = 50 * 1024 * 1024
    max_line_chars: int = 100_000
    max_chunks: int = 5_000

    @classmethod
    def from_settings(cls, settings: Any) -> FileLimits:
        return cls(settings.kb_max_file_mb * 1024 * 1024, settings.kb_max_line_chars, settings.kb_max_chunks_per_file)

    def check_lines(self, blocks: list[Block]) -> None:
        longest = max((len(line) for b in blocks for line in b.text.split("\n")), default=0)
        if longest > self.max_line_chars:
            raise Unreadable(
                f"has a line of {longest:,} characters, longer than kb_max_line_chars = {self.max_line_chars:,} "
                f"(generated or minified data?); `internlocal config set kb_max_line_chars {longest}` indexes it"
            )

    def check_chunks(self, count: int) -> None:
        if count > self.max_chunks:
            raise Unreadable(
                f"makes {count:,} chunks, more than kb_max_chunks_per_file = {self.max_chunks:,}; "
                f"`internlocal config set kb_max_chunks_per_file {count}` indexes it"
            )

    def check_size(self, size: int) -> None:
        if size > self.max_file_bytes:
            raise Unreadable(
                f"is {_size(size)}, larger than the limit of {_size(self.max_file_bytes)} (kb_max_file_mb); "
                f"`internlocal config set kb_max_file_mb {-(-size // (1024 * 1024))}` indexes it"
            )


def _size(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MB" if n >= 1024 * 1024 else f"{n / 1024:.1f} KB"


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


class Index:
    def __init__(
        self,
        path: Path,
        embedder: Embedder,
        *,
        embedder_name: str | None = None,
        chunk_size: int = 800,
        chunk_overlap: int = 120,
        limits: FileLimits | None = None,
    ):
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.embedder = embedder
        self.embedder_name = embedder_name or embedder.model_name
        self.chunk_size, self.chunk_overlap = chunk_size, chunk_overlap
        self.limits = limits or FileLimits()
        self.embedded = 0  # texts sent to the embedder by this object (tests count them)
        self.db = chunkdb.connect(self.path / "index.sqlite")
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
        folders = [Path(r).expanduser().absolute() for r in roots]
        report = SyncReport()
        found, skipped = walk(folders)
        report.skipped.extend(skipped)
        for path, _reason in skipped:
            self._remove_file(path)
        seen = {str(p) for p, __ in found} | {p for p, __ in skipped}
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
        root_texts = [str(r) for r in folders]
        for row in self.db.execute("SELECT path, root FROM file").fetchall():
            if row["path"] not in seen or row["root"] not in root_texts:
                report.chunks_removed += self._remove_file(row["path"])
                report.files_removed += 1
        self._drop_orphan_vectors()
        return report

    def forget(self, folders: Iterable[str | Path], keep: Iterable[str | Path] = ()) -> tuple[int, int]:
        """Drop what was indexed under ``folders`` (taken out of the knowledge base) from both stores, except
        files a ``keep`` folder holds too (the next sync files them under it); nothing is read or embedded.
        (files, chunks) removed."""
        gone = {str(Path(f).expanduser().absolute()) for f in folders}
        kept = [str(Path(k).expanduser().absolute()) for k in keep]
        files = chunks = 0
        for row in self.db.execute("SELECT path, root FROM file").fetchall():
            if row["root"] in gone and not any(under(row["path"], k) for k in kept):
                chunks += self._remove_file(row["path"])
                files += 1
        return files, chunks

    def _prepare(self, file: Path, root: Path, report: SyncReport) -> _Prepared | None:
        """Read, extract and chunk a new or changed file; None when there is nothing to write for it."""
        row = chunkdb.file_row(self.db, str(file))
        try:
            stat = file.stat()
            if (
                row is not None
                and row["size"] == stat.st_size
                and row["mtime_ns"] == stat.st_mtime_ns
                and row["root"] == str(root)
                and not (row["status"] == "skipped" and "kb_max_" in (row["reason"] or ""))  # a limit may be raised
            ):
                report.files_unchanged += 1
                if row["status"] == "skipped":
                    report.skipped.append((str(file), row["reason"]))
                return None
            self.limits.check_size(stat.st_size)
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
            chunkdb.touch_file(self.db, row["id"], stat)
            report.files_unchanged += 1
            return None
        kind = kind_of(file)
        try:
            blocks = extract(file, data)
            self.limits.check_lines(blocks)
            chunks = chunk_blocks(blocks, self.chunk_size, self.chunk_overlap, code=kind == "code")
            self.limits.check_chunks(len(chunks))
        except Unreadable as exc:
            self._mark_skipped(file, root, stat, str(exc), report)
            return None
        except Exception as exc:  # a parser's bug on one strange file: that file is skipped, never the whole sync
            self._mark_skipped(file, root, stat, f"could not be read ({type(exc).__name__}: {exc})", report)
            return None
        if not chunks:
            self._mark_skipped(file, root, stat, "no text", report)
            return None
        relpath = _relpath(file, root)
        ids = chunk_ids(relpath if root != file else str(file), chunks)
        old = set(chunkdb.file_cids(self.db, str(file)))
        new = [(cid, c) for cid, c in zip(ids, chunks, strict=True) if cid not in old]
        present = set(self.vectors.get(ids=[cid for cid, __ in new], include=[])["ids"]) if new else set()
        todo = [(cid, c) for cid, c in new if cid not in present]
        report.chunks_reused += len(new) - len(todo)
        return _Prepared(file, root, relpath, kind, stat, sha, ids, chunks, todo, sorted(old - set(ids)))

    def _flush(self, pending: list[_Prepared], report: SyncReport) -> None:
        """Embed the prepared files' new chunks in one batch, store the vectors, then switch each file to
        its new chunks in one SQLite transaction, then drop its stale vectors."""
        todo = [(cid, c, p) for p in pending for cid, c in p.todo]
        for start in range(0, len(todo), 2 * EMBED_BATCH):
            batch = todo[start : start + 2 * EMBED_BATCH]
            vectors = self.embed([chunk.embed_text for __, chunk, __p in batch])
            self.vectors.upsert(
                ids=[cid for cid, __c, __p in batch],
                embeddings=vectors,
                metadatas=[{"kind": p.kind or "", "relpath": p.relpath} for __cid, __c, p in batch],
            )
        report.chunks_embedded += len(todo)
        for p in pending:
            with chunkdb.transaction(self.db):
                file_id = chunkdb.upsert_file(
                    self.db, p.file, p.root, p.relpath, p.kind, p.stat, p.sha, "indexed", None, len(p.chunks)
                )
                chunkdb.replace_chunks(self.db, file_id, p.ids, p.chunks)
            if p.stale:
                self.vectors.delete(ids=p.stale)
            report.chunks_removed += len(p.stale)
            report.files_indexed += 1

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors = self.embedder.embed(texts)
        self.embedded += len(texts)
        if vectors and len(vectors[0]) != self.embedder.dimension:
            raise UserError(
                _("{embedder} returned {got}-dimensional vectors, not {dimension}.").format(
                    embedder=self.embedder_name, got=len(vectors[0]), dimension=self.embedder.dimension
                )
            )
        return vectors

    def _mark_skipped(
        self, file: Path, root: Path, stat: os.stat_result | None, reason: str, report: SyncReport
    ) -> None:
        report.skipped.append((str(file), reason))
        old = chunkdb.file_cids(self.db, str(file))
        with chunkdb.transaction(self.db):
            file_id = chunkdb.upsert_file(
                self.db, file, root, _relpath(file, root), kind_of(file), stat, None, "skipped", reason, 0
            )
            chunkdb.replace_chunks(self.db, file_id, [], [])
        if old:
            self.vectors.delete(ids=old)
            report.chunks_removed += len(old)

    def _remove_file(self, path: str) -> int:
        cids = chunkdb.delete_file(self.db, path)
        if cids:
            self.vectors.delete(ids=cids)
        return len(cids)

    def _drop_orphan_vectors(self) -> int:
        """Vectors SQLite does not know: written by a sync interrupted between its two writes. Run after a
        sync, which has reused those of files still there (same content, same id)."""
        known = chunkdb.all_cids(self.db)
        orphans = [cid for cid in all_ids(self.vectors) if cid not in known]
        delete_ids(self.vectors, orphans)
        return len(orphans)

    # -- queries ---------------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        return {**chunkdb.counts(self.db), "vectors": self.vectors.count()}

    def files(self) -> list[dict[str, Any]]:
        return chunkdb.files(self.db)

    # -- search: candidates → fuse → hydrate → rerank --------------------------------------------------

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
        """The k best chunks: candidates from each retriever, fused by reciprocal rank, hydrated from SQLite
        (filtered by kind and folder); with a ``reranker`` (``score(query, texts)``), the fused top 3k (at least
        20) are read together with the query by the cross-encoder and reordered by its scores."""
        query = query.strip()
        if not query:
            raise UserError(_("The search query is empty."))
        wanted = max(3 * k, 20) if reranker is not None else k
        depth = max(4 * wanted, 20) if (kinds or folder) else max(2 * wanted, 20)
        query_vector = self.embed([query])[0]
        rankings, similarity = self._candidates(query, query_vector, mode, kinds, depth)
        hits = self._hydrate(fuse(rankings), similarity, query_vector, kinds, folder, wanted)
        if reranker is not None:
            hits = self._rerank(query, hits, reranker)
        return hits[:k]

    def _candidates(
        self, query: str, query_vector: list[float], mode: str, kinds: list[str] | None, depth: int
    ) -> tuple[list[list[str]], dict[str, float]]:
        """Ranked chunk ids from each retriever the mode uses, and the dense retriever's cosine similarities."""
        rankings: list[list[str]] = []
        similarity: dict[str, float] = {}
        if mode in ("hybrid", "dense") and (count := self.vectors.count()):
            found = self.vectors.query(
                query_embeddings=[query_vector],
                n_results=min(depth, count),
                where={"kind": {"$in": kinds}} if kinds else None,
                include=["distances"],
            )
            ids, distances = found["ids"][0], found["distances"][0]
            similarity.update({i: 1.0 - d for i, d in zip(ids, distances, strict=True)})
            rankings.append(list(ids))
        if mode in ("hybrid", "bm25"):
            rankings.append(chunkdb.bm25(self.db, "chunk_words", word_query(query), depth))
            if grams := bigram_query(query):
                rankings.append(chunkdb.bm25(self.db, "chunk_bigrams", grams, depth))
        if mode == "hybrid" and (exact := identifier_query(query)):
            # codes and numbers ("E-4127", "KX-55-0192", "192.168.50.1") mean what they say: the chunks containing
            # them verbatim are one more ranked list, or fusion lets a chunk both lists like a little outrank them
            rankings.append(chunkdb.bm25(self.db, "chunk_words", exact, depth))
        return rankings, similarity

    def _hydrate(
        self,
        fused: dict[str, float],
        similarity: dict[str, float],
        query_vector: list[float],
        kinds: list[str] | None,
        folder: str | None,
        limit: int,
    ) -> list[Hit]:
        """Up to ``limit`` hits from the fused ids, best first: only chunks SQLite has, of the kinds and under the
        folder asked for, each with its cosine similarity to the query (the refusal evidence)."""
        rows = chunkdb.chunk_rows(self.db, list(fused))
        hits = []
        for cid, score in fused.items():
            row = rows.get(cid)  # a vector whose chunk SQLite does not have (yet) is not a result
            if row is None or (kinds and row["kind"] not in kinds) or (folder and not under(row["path"], folder)):
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
                    score,
                    similarity.get(cid, float("nan")),
                )
            )
            if len(hits) == limit:
                break
        missing = [h for h in hits if h.similarity != h.similarity]
        if missing:  # found by BM25 alone: its cosine similarity still decides refusal
            got = self.vectors.get(ids=[h.cid for h in missing], include=["embeddings"])
            vectors = dict(zip(got["ids"], got["embeddings"], strict=True))
            for h in missing:
                v = vectors.get(h.cid)
                h.similarity = cosine(query_vector, v) if v is not None else 0.0
        return hits

    @staticmethod
    def _rerank(query: str, hits: list[Hit], reranker: Any) -> list[Hit]:
        """The hits in the order of the cross-encoder's scores for (query, heading + text)."""
        scores = reranker.score(query, [f"{h.heading}\n{h.text}" if h.heading else h.text for h in hits])
        for hit, score in zip(hits, scores, strict=True):
            hit.rerank_score = score
        return sorted(hits, key=lambda h: -(h.rerank_score or 0.0))


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


def _relpath(file: Path, root: Path) -> str:
    """How citations name a file: relative to its folder, or by its name when it was added on its own."""
    return file.name if root == file else str(file.relative_to(root))
