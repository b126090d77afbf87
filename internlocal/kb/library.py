"""Knowledge bases in the catalog: create, open (with the embedding model they were built with), sync as a
job, re-embed with another model, remove. The index itself lives in ``<home>/kb/<name>/``."""

from __future__ import annotations

import contextlib
import json
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import KnowledgeBase
from internlocal.config import Settings, load_settings
from internlocal.engines.base import Embedder
from internlocal.errors import UserError
from internlocal.hub.library import check_model_name
from internlocal.i18n import _
from internlocal.jobs.context import JobCancelled, JobContext
from internlocal.jobs.locks import exclusive
from internlocal.kb.index import FileLimits, Index
from internlocal.kb.vectors import collection_name, open_vectors

DEFAULT_EMBEDDER = "all-minilm-l6-v2"
# cosine similarity of the best passage below which a question is refused; `kb eval --tune` fits it
DEFAULT_THRESHOLD = 0.35

_embedders: dict[str, Embedder] = {}
_embedders_lock = threading.Lock()


def embedder_for(catalog: Catalog, name: str) -> Embedder:
    """A loaded embedding model, kept for the process (loading MiniLM costs seconds)."""
    from internlocal.engines.loader import load_embedder

    with _embedders_lock:
        if name not in _embedders:
            _embedders[name] = load_embedder(catalog.get_model(name))
        return _embedders[name]


def embedding_dimension(catalog: Catalog, name: str) -> int:
    """An embedding model's vector size: read from a local folder's configuration when it states it (nothing is
    loaded, so `kb create` starts seconds sooner), else from the loaded model."""
    from internlocal.engines.transformers_embedder import plain_layout

    model = catalog.get_model(name)
    if model.kind == "embedding" and model.format != "remote":
        layout = plain_layout(model.path)
        if layout is not None and layout["dimension"]:
            return int(layout["dimension"])
    return embedder_for(catalog, name).dimension


_rerankers: dict[str, Any] = {}


def reranker_for(catalog: Catalog, name_or_path: str):
    """A cross-encoder for reranking: a catalog model's folder, or a local folder; kept for the process."""
    from internlocal.engines.sentence_transformers import CrossEncoderReranker

    with _embedders_lock:
        if name_or_path not in _rerankers:
            model = catalog.find_model(name_or_path)
            path = Path(model.path) if model is not None else Path(name_or_path).expanduser()
            if not path.is_dir():
                raise UserError(
                    _("{name} is neither a catalog model nor a folder with a cross-encoder.").format(name=name_or_path)
                )
            _rerankers[name_or_path] = CrossEncoderReranker(path, model_name=name_or_path)
        return _rerankers[name_or_path]


def kb_dir(settings: Settings, name: str) -> Path:
    return settings.home / "kb" / name


def create_kb(
    settings: Settings,
    catalog: Catalog,
    name: str,
    folders: list[str] | None = None,
    *,
    embedder: str | None = None,
    chunk_size: int = 800,
    chunk_overlap: int = 120,
) -> KnowledgeBase:
    check_model_name(name)
    if catalog.find_kb(name) is not None:
        raise UserError(_("A knowledge base named {name!r} exists already; choose another name.").format(name=name))
    if chunk_size < 50 or not 0 <= chunk_overlap < chunk_size:
        raise UserError(_("The chunk size must be at least 50 characters and the overlap smaller than the size."))
    embedder = embedder or DEFAULT_EMBEDDER
    dimension = embedding_dimension(catalog, embedder)
    roots = _checked_folders(folders or [])
    path = kb_dir(settings, name)
    if path.exists():  # left by a knowledge base removed while its index was open: start clean
        shutil.rmtree(path)
    path.mkdir(parents=True)
    open_vectors(path, embedder, dimension, create=True)[0].close()
    return catalog.add_kb(
        KnowledgeBase(
            name=name,
            path=str(path),
            folders_json=json.dumps(roots),
            embedder=embedder,
            dimension=dimension,
            chunk_size=chunk_size,
            chunk_overlap=chunk_overlap,
            threshold=DEFAULT_THRESHOLD,
        )
    )


def _checked_folders(folders: list[str]) -> list[str]:
    out = []
    for folder in folders:
        path = Path(folder).expanduser().absolute()
        if not path.exists():
            raise UserError(_("{folder} does not exist.").format(folder=folder))
        if not (path.is_dir() or path.is_file()):
            raise UserError(_("{folder} is neither a folder nor a file.").format(folder=folder))
        out.append(str(path))
    return out


def add_folders(catalog: Catalog, name: str, folders: list[str]) -> KnowledgeBase:
    kb = catalog.get_kb(name)
    roots = list(kb.folders)
    for folder in _checked_folders(folders):
        if folder not in roots:
            roots.append(folder)
    return catalog.update_kb(name, folders_json=json.dumps(roots))


def remove_folders(catalog: Catalog, name: str, folders: list[str]) -> dict[str, Any]:
    """Take folders out of a knowledge base: the index drops what was found under them (from SQLite and
    chromadb: their content is no longer found), then the catalog forgets them. Nothing is read or embedded,
    and the documents themselves are never touched. A file that a remaining folder also holds stays."""
    kb = catalog.get_kb(name)
    drop = {str(Path(f).expanduser().absolute()) for f in folders}
    unknown = drop - set(kb.folders)
    if unknown:
        raise UserError(
            _("{folders} is not among {name}'s folders: {known}.").format(
                folders=", ".join(sorted(unknown)), name=name, known=", ".join(kb.folders) or _("none")
            )
        )
    remaining = [f for f in kb.folders if f not in drop]
    with sync_lock(kb):
        index = Index(Path(kb.path), _NoEmbedder(kb.embedder, kb.dimension), embedder_name=kb.embedder)
        try:
            files, chunks = index.forget(drop, keep=remaining)
            counts = index.counts()
        finally:
            index.close()
    # a new synced_at: an index a chat keeps open is opened again (see ChatService.kb_index)
    stats = {**kb.stats, **counts, "synced_at": time.time()}
    catalog.update_kb(name, folders_json=json.dumps(remaining), stats_json=json.dumps(stats))
    return {
        "knowledge_base": name,
        "removed_folders": [f for f in kb.folders if f in drop],
        "folders": remaining,
        "files_removed": files,
        "chunks_removed": chunks,
        **counts,
    }


class _NoEmbedder:
    """Stands in for the embedding model where an index only loses files: nothing is embedded, so no model
    is loaded (MiniLM costs seconds)."""

    def __init__(self, model_name: str, dimension: int):
        self.model_name, self.dimension = model_name, dimension

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        raise RuntimeError("this index was opened to remove files, not to embed")

    def count_tokens(self, texts: Sequence[str]) -> int:
        raise RuntimeError("this index was opened to remove files, not to count tokens")


def open_index(catalog: Catalog, name: str, *, embedder: str | None = None, limits: FileLimits | None = None) -> Index:
    """The index of ``name``; asking for another embedding model than it was built with is an error
    (vectors of two models are never mixed)."""
    kb = catalog.get_kb(name)
    if embedder is not None and embedder != kb.embedder:
        raise UserError(
            _(
                "Knowledge base {name} was built with {built} ({dimension} dimensions), not {embedder}; "
                "`internlocal kb reembed {name} --model {embedder}` rebuilds it with that model."
            ).format(name=name, built=kb.embedder, dimension=kb.dimension, embedder=embedder)
        )
    model = embedder_for(catalog, kb.embedder)
    if model.dimension != kb.dimension:
        raise UserError(
            _(
                "{embedder} now gives {got}-dimensional vectors but {name} holds {dimension}; "
                "`internlocal kb reembed {name}` rebuilds it."
            ).format(embedder=kb.embedder, got=model.dimension, name=name, dimension=kb.dimension)
        )
    return Index(
        Path(kb.path),
        model,
        embedder_name=kb.embedder,
        chunk_size=kb.chunk_size,
        chunk_overlap=kb.chunk_overlap,
        limits=limits,
    )


def sync_lock(kb: KnowledgeBase, ctx: JobContext | None = None, *, wait: bool = True):
    """Held while an index changes (sync, folder removal, re-embedding): a second sync started meanwhile waits,
    then finds the files already indexed, instead of embedding them a second time."""
    return exclusive(Path(kb.path) / "sync.lock", f"a sync of knowledge base {kb.name}", wait=wait, ctx=ctx)


def sync_kb(catalog: Catalog, name: str, ctx: JobContext | None = None) -> dict[str, Any]:
    kb = catalog.get_kb(name)
    if not kb.folders:
        raise UserError(
            _("Knowledge base {name} has no folders yet; `internlocal kb add {name} FOLDER` adds one.").format(
                name=name
            )
        )
    with sync_lock(kb, ctx):
        return _sync_locked(catalog, name, ctx)


def _sync_locked(catalog: Catalog, name: str, ctx: JobContext | None) -> dict[str, Any]:
    kb = catalog.get_kb(name)  # again: the folders may have changed while this sync waited
    settings = ctx.settings if ctx is not None else load_settings()
    index = open_index(catalog, name, limits=FileLimits.from_settings(settings))
    started = time.monotonic()
    try:

        def progress(done: int, total: int, path: str) -> None:
            if ctx is not None:
                ctx.progress(done, total, unit="files", message=path)

        try:
            report = index.sync(
                kb.folders, progress=progress, should_stop=(lambda: ctx.cancelled) if ctx is not None else None
            )
        except InterruptedError:
            raise JobCancelled() from None
        counts = index.counts()
    finally:
        index.close()
    summary = {**report.as_dict(), **counts, "seconds": round(time.monotonic() - started, 2), "synced_at": time.time()}
    catalog.update_kb(name, stats_json=json.dumps({k: v for k, v in summary.items() if k != "skipped"}))
    return summary


def sync_job(ctx: JobContext, name: str) -> dict[str, Any]:
    """``kb add`` / ``kb sync`` as a job: its own process, progress per file, cancellable; a cancelled or
    killed sync leaves every file either as it was or fully updated, and the next sync finishes it."""
    summary = sync_kb(ctx.catalog, name, ctx)
    ctx.log(
        f"{summary['files_indexed']} files indexed, {summary['files_unchanged']} unchanged, "
        f"{summary['files_removed']} removed; {summary['chunks_embedded']} chunks embedded"
    )
    return summary


def reembed_kb(catalog: Catalog, name: str, embedder: str, ctx: JobContext | None = None) -> KnowledgeBase:
    """Vectors from another model, for every chunk the index has (no file is read again). The new
    collection is complete before the catalog switches to it; the old one is dropped after."""
    with sync_lock(catalog.get_kb(name), ctx):
        return _reembed_locked(catalog, name, embedder, ctx)


def _reembed_locked(catalog: Catalog, name: str, embedder: str, ctx: JobContext | None) -> KnowledgeBase:
    kb = catalog.get_kb(name)
    model = embedder_for(catalog, embedder)
    old_index = open_index(catalog, name)
    try:
        rows = old_index.db.execute(
            "SELECT cid, heading, text, file.kind, file.relpath FROM chunk JOIN file ON file.id = chunk.file_id"
        ).fetchall()
    finally:
        old_index.close()
    client, vectors = open_vectors(Path(kb.path), embedder, model.dimension, create=True)
    for start in range(0, len(rows), 64):
        batch = rows[start : start + 64]
        texts = [f"{r['heading']}\n{r['text']}" if r["heading"] else r["text"] for r in batch]
        vectors.upsert(
            ids=[r["cid"] for r in batch],
            embeddings=model.embed(texts),
            metadatas=[{"kind": r["kind"] or "", "relpath": r["relpath"]} for r in batch],
        )
        if ctx is not None:
            ctx.progress(min(start + 64, len(rows)), len(rows), unit="chunks")
    updated = catalog.update_kb(name, embedder=embedder, dimension=model.dimension)
    if (kb.embedder, kb.dimension) != (embedder, model.dimension):
        with contextlib.suppress(Exception):  # already gone: nothing to free
            client.delete_collection(collection_name(kb.embedder, kb.dimension))
    client.close()
    return updated


def remove_kb(catalog: Catalog, name: str) -> dict[str, Any]:
    kb = catalog.delete_kb(name)
    shutil.rmtree(kb.path, ignore_errors=True)  # the index only; the user's documents are never touched
    return {"knowledge_base": name, "removed_index": kb.path}
