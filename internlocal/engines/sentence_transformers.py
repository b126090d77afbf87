"""Embedder on sentence-transformers (CPU, or CUDA when torch has it). Imports cost ~8 s: load lazily."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class SentenceTransformerEmbedder:
    def __init__(self, path: str | Path, *, model_name: str | None = None, device: str | None = None):
        from sentence_transformers import SentenceTransformer

        self.model_name = model_name or Path(path).name
        # a local directory: never ask a hub (and do not set HF_HUB_OFFLINE for the whole process)
        self._model = SentenceTransformer(str(path), device=device or "cpu", local_files_only=True)
        self.dimension = int(
            self._model.get_embedding_dimension()
            if hasattr(self._model, "get_embedding_dimension")
            else self._model.get_sentence_embedding_dimension()
        )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = self._model.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True)
        return vectors.tolist()

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads for ``texts``: tokenized as ``encode`` tokenizes them ([CLS]/[SEP] included,
        truncated to the model's max_seq_length), counted by the attention mask."""
        # sentence-transformers 6 renamed tokenize (now deprecated) to preprocess
        prepare = self._model.preprocess if hasattr(self._model, "preprocess") else self._model.tokenize
        total = 0
        for start in range(0, len(texts), 64):
            features = prepare(list(texts[start : start + 64]))
            total += int(features["attention_mask"].sum())
        return total


class CrossEncoderReranker:
    """A cross-encoder (query and passage read together) scoring retrieved passages for reranking."""

    def __init__(self, path: str | Path, *, model_name: str | None = None, device: str | None = None):
        from sentence_transformers import CrossEncoder

        self.model_name = model_name or Path(path).name
        self._model = CrossEncoder(str(path), device=device or "cpu", local_files_only=True)

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(s) for s in self._model.predict([(query, t) for t in texts], convert_to_numpy=True)]
