"""POST /v1/embeddings: vectors from the served embedding model, as floats or base64 float32."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from internlocal.server.openai_schema import APIError, EmbeddingRequest
from internlocal.server.state import StateDep

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, state: StateDep):
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts or any(not isinstance(t, str) for t in texts):
        raise APIError(400, "input must be a string or a list of strings.", param="input")
    model, vectors, tokens = await state.models.embed(body.model, texts)
    if body.encoding_format == "base64":
        import base64

        import numpy as np

        encoded: list[Any] = [base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode() for v in vectors]
    else:
        encoded = vectors
    return {
        "object": "list",
        "model": model,
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(encoded)],
        # tokens the embedding model read (its tokenizer, special tokens included), as OpenAI counts them
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
