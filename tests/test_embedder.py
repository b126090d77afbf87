"""The Embedder protocol on the embedded all-MiniLM-L6-v2 (sentence-transformers, offline)."""

from __future__ import annotations

import math

from internlocal.engines.base import Embedder
from internlocal.engines.sentence_transformers import SentenceTransformerEmbedder


def test_minilm_embeds_and_ranks_by_meaning(minilm_path):
    embedder = SentenceTransformerEmbedder(minilm_path, model_name="all-minilm-l6-v2")
    assert isinstance(embedder, Embedder)
    assert embedder.dimension == 384
    query, near, far = embedder.embed(
        ["Where is the Eiffel Tower?", "The Eiffel Tower is in Paris.", "Bananas are yellow."]
    )
    assert len(query) == 384 and math.isclose(sum(x * x for x in query), 1.0, rel_tol=1e-4)
    dot = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert dot(query, near) > dot(query, far) + 0.2
