"""POST /v1/completions: raw text continuation, streamed or whole, ``n`` choices, each token's log-probability;
``echo`` + ``logprobs`` also scores the prompt."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from internlocal.engines.base import Capability, Engine, TokenLogprob
from internlocal.errors import UserError
from internlocal.server.generation import (
    choice_params,
    completion_logprobs,
    context_error,
    finish_fields,
    merged,
    new_logprobs,
    record,
    sampling,
    start_all,
    usage,
)
from internlocal.server.openai_schema import APIError, CompletionRequest
from internlocal.server.sse import sse_response
from internlocal.server.state import ServerState, StateDep

router = APIRouter()


@router.post("/v1/completions")
async def completions(body: CompletionRequest, request: Request, state: StateDep):
    model, engine = await state.models.engine_for(body.model)
    if body.max_tokens == 0 and body.logprobs is None:
        raise APIError(
            400, "max_tokens 0 only makes sense with echo and logprobs (scoring the prompt).", param="max_tokens"
        )
    params = sampling(body, state.config, logprobs=body.logprobs, recommended=state.models.card(model).sampling)
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise APIError(400, "Send one prompt per request.", param="prompt")
    prompt = prompts[0]
    echoed: list[TokenLogprob] = []  # the prompt's own entries, when echo + logprobs
    if body.echo and body.logprobs is not None:
        if (body.max_tokens or 0) <= 1 and body.n == 1:
            return await scored_prompt(body, prompt, model, engine, state)
        if body.stream:
            raise APIError(400, "echo with logprobs is answered whole; send stream=false.", param="stream")
        echoed = await prompt_entries(engine, prompt, body.logprobs, state)
    generations = await start_all(
        state,
        engine,
        lambda index: engine.complete(prompt, choice_params(params, index), response_format=body.response_format),
        body.n,
    )
    ident = f"cmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    head = {"id": ident, "object": "text_completion", "created": created, "model": model}
    echo = prompt if body.echo else ""

    if not body.stream:
        try:
            async for _ in merged(generations, request, state.metrics):
                pass
        finally:
            state.admission.leave(len(generations))
        choices = []
        for index, generation in enumerate(generations):
            record(generation, state.metrics)
            result = generation.result
            logprobs = None
            if result is not None and body.logprobs is not None:
                logprobs = completion_logprobs(echoed) if echoed else None
                generated = completion_logprobs(result.logprobs or [], offset=len(echo))
                logprobs = {k: logprobs[k] + generated[k] for k in generated} if logprobs else generated
            text = echo + (result.text if result else "")
            choices.append({"index": index, "text": text, **finish_fields(generation), "logprobs": logprobs})
        return head | {"choices": choices, "usage": usage(*generations)}

    sent = [0] * len(generations)  # log-probability entries each choice has sent

    def chunk(index: int, text: str, finish: dict[str, Any] | None = None) -> dict[str, Any]:
        logprobs = None
        if body.logprobs is not None:
            entries = new_logprobs(generations[index], sent[index])
            sent[index] += len(entries)
            logprobs = completion_logprobs(entries, offset=len(echo)) if entries else None
        return head | {
            "choices": [{"index": index, "text": text, "finish_reason": None, "logprobs": logprobs} | (finish or {})]
        }

    async def events() -> AsyncIterator[dict[str, Any]]:
        if echo:
            for index in range(len(generations)):
                yield chunk(index, echo)
        async for index, piece in merged(generations, request, state.metrics):
            yield chunk(index, piece)
        if any(g.result is None for g in generations):
            return  # the client went away
        for index, generation in enumerate(generations):
            record(generation, state.metrics)
            yield chunk(index, "", finish_fields(generation))
        if body.stream_options and body.stream_options.include_usage:
            yield head | {"choices": [], "usage": usage(*generations)}

    return sse_response(events(), generations, on_close=lambda: state.admission.leave(len(generations)))


async def prompt_entries(engine: Engine, prompt: str, top: int, state: ServerState) -> list[TokenLogprob]:
    if Capability.PROMPT_LOGPROBS not in engine.capabilities:
        raise APIError(400, f"The {engine.engine_name} engine cannot score prompts.", param="logprobs")
    state.admission.enter()
    try:
        return await asyncio.to_thread(engine.prompt_logprobs, prompt, top)
    except UserError as exc:
        raise context_error(engine, exc) from None
    finally:
        state.admission.leave()


async def scored_prompt(
    body: CompletionRequest, prompt: str, model: str, engine: Engine, state: ServerState
) -> dict[str, Any]:
    """``echo`` + ``logprobs`` with ``max_tokens`` 0 or 1: the prompt's token log-probabilities and the greedy next
    token, in one forward pass, as lm-evaluation-harness's completions backend asks (no generation slot)."""
    if body.stream:
        raise APIError(400, "echo with logprobs is answered whole; send stream=false.", param="stream")
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
