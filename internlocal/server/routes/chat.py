"""POST /v1/chat/completions: chat through the model's template, streamed or whole, with JSON output and tools.

A tool reply is parsed by the engine when the generation ends, so a stream that may call tools
sends it as one delta at the end (the text too, when no call came).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request

from internlocal.server.generation import collect, finish_reason, pieces, record, sampling, start, usage
from internlocal.server.openai_schema import ChatCompletionRequest
from internlocal.server.sse import sse_response
from internlocal.server.state import StateDep

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(body: ChatCompletionRequest, request: Request, state: StateDep):
    model, engine = state.models.engine_for(body.model)
    params = sampling(body, state.config)
    messages = [m.model_dump(exclude_none=True) | {"content": m.text()} for m in body.messages]
    tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
    wants_tools = bool(tools) and body.tool_choice != "none"
    generation = await start(
        state,
        engine,
        lambda: engine.chat(
            messages,
            params,
            response_format=body.response_format,
            tools=tools if wants_tools else None,
            tool_choice=body.tool_choice,
        ),
    )
    ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())

    if not body.stream:
        try:
            await collect(generation, request, state.metrics)
        finally:
            state.admission.leave()
        record(generation, state.metrics)
        result = generation.result
        message: dict[str, Any] = {"role": "assistant", "content": result.text if result else ""}
        if result and result.tool_calls:
            message["tool_calls"] = result.tool_calls
            message["content"] = result.text or None
        finish = "tool_calls" if result and result.tool_calls else finish_reason(generation)
        return {
            "id": ident,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage(generation),
        }

    include_usage = bool(body.stream_options and body.stream_options.include_usage)
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}

    def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        payload = head | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}
        if include_usage:
            payload["usage"] = None
        return payload

    async def events() -> AsyncIterator[dict[str, Any]]:
        yield chunk({"role": "assistant", "content": ""}, None)
        async for piece in pieces(generation, request, state.metrics):
            if not wants_tools:  # a tool reply is parsed at the end, then sent whole
                yield chunk({"content": piece}, None)
        result = generation.result
        if result is None:
            return  # the client went away
        record(generation, state.metrics)
        finish = finish_reason(generation)
        if wants_tools:
            if result.tool_calls:
                yield chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(result.tool_calls)]}, None)
                finish = "tool_calls"
            elif result.text:
                yield chunk({"content": result.text}, None)
        yield chunk({}, finish)
        if include_usage:
            yield head | {"choices": [], "usage": usage(generation)}

    return sse_response(events(), generation, on_close=state.admission.leave)
