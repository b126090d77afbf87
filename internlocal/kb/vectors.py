"""The chromadb side of a knowledge base: one collection of chunk vectors per embedding model and dimension.

We compute the vectors ourselves and pass them in; the collection is given an embedding function that
refuses to run, because chromadb's default one downloads a model. A collection records the model and
dimension it was built with, and is never written to or queried with another model's vectors.
chromadb is imported only when a collection is opened (~0.9 s).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from internlocal.errors import UserError
from internlocal.i18n import _

PAGE = 5000  # ids read or deleted per chromadb call


class RefusingEmbeddingFunction:
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
    def build_from_config(config: dict[str, Any]) -> RefusingEmbeddingFunction:
        return RefusingEmbeddingFunction(config.get("model", "unknown"))

    def is_legacy(self) -> bool:
        return False

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine"]


def collection_name(embedder: str, dimension: int) -> str:
    return f"chunks-{hashlib.sha256(f'{embedder}:{dimension}'.encode()).hexdigest()[:12]}"


def open_vectors(path: Path, embedder: str, dimension: int, *, create: bool):
    """(client, collection) of ``embedder``'s vectors under ``path/chroma``, checked: a collection built by
    another model or with another dimension is never written to or queried with these vectors."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    client = chromadb.PersistentClient(
        path=str(path / "chroma"), settings=ChromaSettings(anonymized_telemetry=False, allow_reset=False)
    )
    name = collection_name(embedder, dimension)
    function = RefusingEmbeddingFunction(embedder)
    if create:
        collection = client.get_or_create_collection(
            name,
            embedding_function=function,
            metadata={"embedder": embedder, "dimension": dimension},
            configuration={"hnsw": {"space": "cosine"}},
        )
    else:
        try:
            collection = client.get_collection(name, embedding_function=function)
        except Exception:
            raise UserError(
                _(
                    "The knowledge base's vectors for {embedder} are missing; `internlocal kb reembed` rebuilds them."
                ).format(embedder=embedder)
            ) from None
    meta = collection.metadata or {}
    if meta.get("embedder") != embedder or int(meta.get("dimension", -1)) != dimension:
        raise UserError(
            _(
                "The knowledge base's vectors come from {stored} ({stored_dimension} dimensions), "
                "not {embedder} ({dimension}); `internlocal kb reembed` rebuilds them with another model."
            ).format(
                stored=meta.get("embedder"),
                stored_dimension=meta.get("dimension"),
                embedder=embedder,
                dimension=dimension,
            )
        )
    return client, collection


def all_ids(collection) -> Iterator[str]:
    """Every id in the collection, read a page at a time."""
    offset = 0
    while True:
        page = collection.get(include=[], limit=PAGE, offset=offset)["ids"]
        if not page:
            return
        yield from page
        offset += len(page)


def delete_ids(collection, ids: list[str]) -> None:
    for start in range(0, len(ids), PAGE):
        collection.delete(ids=ids[start : start + PAGE])


def cosine(a: list[float], b: Any) -> float:
    import numpy as np

    va, vb = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    denominator = float(np.linalg.norm(va) * np.linalg.norm(vb)) or 1.0
    return float(va @ vb) / denominator
