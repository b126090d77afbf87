"""POST /v1/chat/completions: chat through the model's template, streamed or whole, with JSON output and tools.

``n`` choices are ``n`` generations in parallel slots. A tool reply is parsed by the engine when the
generation ends, so a stream that may call tools sends it as one delta at the end (the text too,
when no call came). With ``logprobs`` each chunk carries the log-probabilities of its tokens.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from internlocal.engines.base import Generation
from internlocal.server.generation import (
    chat_logprobs,
    choice_params,
    finish_fields,
    merged,
    new_logprobs,
    record,
    sampling,
    start_all,
    usage,
)
from internlocal.server.images import resolve_content
from internlocal.server.openai_schema import APIError, ChatCompletionRequest
from internlocal.server.sse import sse_response
from internlocal.server.state import StateDep

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, state: StateDep):
    model, engine = await state.models.engine_for(body.model)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs set to true.", param="top_logprobs")
    top = (body.top_logprobs or 0) if body.logprobs else None
    params = sampling(body, state.config, logprobs=top, recommended=state.models.card(model).sampling)
    # images are decoded, checked and scaled off the event loop: other clients' streams go on meanwhile
    messages = await asyncio.to_thread(
        lambda: [
            m.model_dump(exclude_none=True)
            | {"content": resolve_content(m.content, state.config, where=f"messages[{i}]")}
            for i, m in enumerate(body.messages)
        ]
    )
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    wants_tools = bool(tools) and body.tool_choice != "none"

    def make(index: int) -> Generation:
        return engine.chat(
            messages,
            choice_params(params, index),
            response_format=body.response_format,
            tools=tools if wants_tools else None,
            tool_choice=body.tool_choice,
        )

    generations = await start_all(state, engine, make, body.n)
    ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    def tool_calls(generation: Generation) -> list[dict[str, Any]] | None:
        calls = generation.result.tool_calls if generation.result else None
        return calls[:1] if calls and not body.parallel_tool_calls else calls

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
            message: dict[str, Any] = {"role": "assistant", "content": result.text if result else ""}
            calls = tool_calls(generation)
            if calls:
                message["tool_calls"] = calls
                message["content"] = (result.text if result else "") or None
            finish = {"finish_reason": "tool_calls"} if calls else finish_fields(generation)
            logprobs = chat_logprobs(result.logprobs or []) if result and params.logprobs is not None else None
            choices.append({"index": index, "message": message, **finish, "logprobs": logprobs})
        return {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": choices,
            "usage": usage(*generations),
        }

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    sent = [0] * len(generations)  # log-probability entries each choice has sent

    def chunk(index: int, delta: dict[str, Any], finish: dict[str, Any] | None = None) -> dict[str, Any]:
        logprobs = None
        if params.logprobs is not None:
            entries = new_logprobs(generations[index], sent[index])
            sent[index] += len(entries)
            logprobs = chat_logprobs(entries) if entries else None
        choice = {"index": index, "delta": delta, "finish_reason": None, "logprobs": logprobs} | (finish or {})
        payload = head | {"choices": [choice]}
        if include_usage:
            payload["usage"] = None
        return payload

    async def events() -> AsyncIterator[dict[str, Any]]:
        for index in range(len(generations)):
            yield (
                head
                | {
                    "choices": [
                        {
                            "index": index,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                            "logprobs": None,
                        }
                    ]
                }
                | ({"usage": None} if include_usage else {})
            )
        async for index, piece in merged(generations, request, state.metrics):
            if not wants_tools:  # a tool reply is parsed at the end, then sent whole
                yield chunk(index, {"content": piece})
        if any(g.result is None for g in generations):
            return  # the client went away
        for index, generation in enumerate(generations):
            record(generation, state.metrics)
            result = generation.result
            assert result is not None
            finish = finish_fields(generation)
            if wants_tools:
                calls = tool_calls(generation)
                if calls:
                    yield chunk(index, {"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})
                    finish = {"finish_reason": "tool_calls"}
                elif result.text:
                    yield chunk(index, {"content": result.text})
            yield chunk(index, {}, finish)
        if include_usage:
            yield head | {"choices": [], "usage": usage(*generations)}

    return sse_response(events(), generations, on_close=lambda: state.admission.leave(len(generations)))
