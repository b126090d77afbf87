"""POST /tokenize and /detokenize (llama-server's shapes): text ↔ the served model's own token ids."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from internlocal.engines.base import Capability
from internlocal.server.openai_schema import APIError
from internlocal.server.state import StateDep

router = APIRouter()


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content: str
    add_special: bool = False  # the model's BOS token first, as a prompt gets it
    with_pieces: bool = False  # each id with its text
    model: str | None = None


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[int] = Field(default_factory=list)
    model: str | None = None


@router.post("/tokenize")
async def tokenize(body: TokenizeRequest, state: StateDep) -> dict[str, Any]:
    _, engine = await state.models.engine_for(body.model)
    if Capability.TOKENIZE not in engine.capabilities:
        raise APIError(400, f"The {engine.engine_name} engine cannot tokenize.", param="content")
    tokens = await asyncio.to_thread(engine.tokenize, body.content, add_special=body.add_special)
    if not body.with_pieces:
        return {"tokens": tokens}
    return {"tokens": [{"id": t, "piece": engine.detokenize([t])} for t in tokens]}


@router.post("/detokenize")
async def detokenize(body: DetokenizeRequest, state: StateDep) -> dict[str, Any]:
    _, engine = await state.models.engine_for(body.model)
    if Capability.TOKENIZE not in engine.capabilities:
        raise APIError(400, f"The {engine.engine_name} engine cannot detokenize.", param="tokens")
    n_vocab = getattr(engine, "vocab_size", None)
    if n_vocab is not None and any(not 0 <= t < n_vocab for t in body.tokens):
        raise APIError(400, f"Token ids lie in [0, {n_vocab}); some given do not.", param="tokens")
    return {"content": await asyncio.to_thread(engine.detokenize, body.tokens)}
