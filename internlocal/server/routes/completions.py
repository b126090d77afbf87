"""POST /v1/completions: raw text continuation, streamed or whole; ``echo`` + ``logprobs`` scores the prompt."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from internlocal.engines.base import Capability, Engine
from internlocal.errors import UserError
from internlocal.server.generation import collect, context_error, finish_reason, pieces, record, sampling, start, usage
from internlocal.server.openai_schema import APIError, CompletionRequest
from internlocal.server.sse import sse_response
from internlocal.server.state import ServerState, StateDep

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, state: StateDep):
    model, engine = state.models.engine_for(body.model)
    if body.max_tokens == 0 and body.logprobs is None:
        raise APIError(
            400, "max_tokens 0 only makes sense with echo and logprobs (scoring the prompt).", param="max_tokens"
        )
    params = sampling(body, state.config)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise APIError(400, "Send one prompt per request.", param="prompt")
    prompt = prompts[0]
    if body.logprobs is not None:
        return await scored_prompt(body, prompt, model, engine, state)
    generation = await start(
        state, engine, lambda: engine.complete(prompt, params, response_format=body.response_format)
    )
    ident = f"cmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    head = {"id": ident, "object": "text_completion", "created": created, "model": model}

    if not body.stream:
        try:
            text = await collect(generation, request, state.metrics)
        finally:
            state.admission.leave()
        record(generation, state.metrics)
        choice = {
            "index": 0,
            "text": (prompt if body.echo else "") + text,
            "finish_reason": finish_reason(generation),
            "logprobs": None,
        }
        return head | {"choices": [choice], "usage": usage(generation)}

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for piece in pieces(generation, request, state.metrics):
            yield head | {"choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}]}
        if generation.result is None:
            return  # the client went away
        record(generation, state.metrics)
        last = head | {
            "choices": [{"index": 0, "text": "", "finish_reason": finish_reason(generation), "logprobs": None}]
        }
        if body.stream_options and body.stream_options.include_usage:
            last["usage"] = usage(generation)
        yield last

    return sse_response(events(), generation, on_close=state.admission.leave)


async def scored_prompt(
    body: CompletionRequest, prompt: str, model: str, engine: Engine, state: ServerState
) -> dict[str, Any]:
    """``echo`` + ``logprobs``: the prompt's token log-probabilities, as evaluation harnesses ask for them.

    Generated tokens carry no log-probabilities here, so this answers for at most one token,
    the greedy one (``max_tokens`` 0 or 1), as lm-evaluation-harness's completions backend asks.
    """
    if not body.echo or (body.max_tokens or 0) > 1 or body.stream:
        raise APIError(
            400,
            "logprobs are returned for the prompt only: send echo=true, max_tokens 0 or 1 and no stream.",
            param="logprobs",
        )
    if Capability.PROMPT_LOGPROBS not in engine.capabilities:
        raise APIError(400, f"The {engine.engine_name} engine cannot score prompts.", param="logprobs")
    state.admission.enter()
    try:
        entries = await asyncio.to_thread(
            engine.prompt_logprobs, prompt, body.logprobs or 0, next_token=body.max_tokens == 1
        )
    except UserError as exc:
        raise context_error(engine, exc) from None
    finally:
        state.admission.leave()
    generated = entries[-1].token if body.max_tokens == 1 else ""
    n_prompt = len(entries) - (body.max_tokens == 1)
    return {
        "id": f"cmpl-{uuid.uuid4().hex[:24]}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "text": prompt + generated,
                "finish_reason": "length",
                "logprobs": {
                    "tokens": [e.token for e in entries],
                    "token_logprobs": [e.logprob for e in entries],
                    "top_logprobs": [e.top if e.logprob is not None else None for e in entries],
                    "text_offset": [e.offset for e in entries],
                },
            }
        ],
        "usage": {
            "prompt_tokens": n_prompt,
            "completion_tokens": len(entries) - n_prompt,
            "total_tokens": len(entries),
        },
    }
