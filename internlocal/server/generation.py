"""One engine generation for one request: sampling parameters, admission, reading, usage, metrics.

Generation runs on the engine's own threads; a handler only waits on it. ``start`` admits the
request (or answers 503) and the handler must call ``state.admission.leave()`` once it is done
with the generation. ``pieces`` reads the text on a thread and cancels the generation when the
client goes away.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request

from internlocal.engines.base import Engine, Generation, GenerationParams
from internlocal.errors import UserError
from internlocal.server.metrics import ServerMetrics
from internlocal.server.openai_schema import APIError, SamplingFields
from internlocal.server.state import ServerConfig, ServerState


def sampling(body: SamplingFields, config: ServerConfig) -> GenerationParams:
    if body.n != 1:
        raise APIError(400, "Only n=1 is supported.", param="n")
    max_tokens = body.max_completion_tokens or body.max_tokens or min(512, config.max_tokens_limit)
    if max_tokens > config.max_tokens_limit:
        raise APIError(
            400,
            f"max_tokens {max_tokens} is above this server's limit of {config.max_tokens_limit}.",
            param="max_tokens",
        )
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    values: dict[str, Any] = {"max_tokens": max_tokens, "stop": stop, "seed": body.seed}
    if body.temperature is not None:
        values["temperature"] = body.temperature
    if body.top_p is not None:
        values["top_p"] = body.top_p
    if body.top_k is not None:
        values["top_k"] = body.top_k
    values["repeat_penalty"] = body.repeat_penalty if body.repeat_penalty is not None else 1.0
    return GenerationParams(**values)


def context_error(engine: Engine, exc: UserError) -> APIError:
    return APIError(
        400,
        f"This model's maximum context length is {engine.context_length} tokens: {exc}",
        code="context_length_exceeded",
        param="messages",
    )


async def start(state: ServerState, engine: Engine, make: Callable[[], Generation]) -> Generation:
    """Admit the request and start its generation; on success the caller owes ``state.admission.leave()``."""
    state.admission.enter()
    try:
        return await asyncio.to_thread(make)
    except UserError as exc:
        state.admission.leave()
        raise context_error(engine, exc) from None
    except BaseException:
        state.admission.leave()
        raise


async def pieces(generation: Generation, request: Request, metrics: ServerMetrics) -> AsyncIterator[str]:
    """The generation's text pieces, read on a thread; cancels it when the client goes away."""
    loop = asyncio.get_running_loop()
    out: asyncio.Queue = asyncio.Queue()
    done = object()

    def pump() -> None:
        try:
            for piece in generation:
                loop.call_soon_threadsafe(out.put_nowait, piece)
        except BaseException as exc:  # delivered to the handler below
            loop.call_soon_threadsafe(out.put_nowait, exc)
        loop.call_soon_threadsafe(out.put_nowait, done)

    threading.Thread(target=pump, daemon=True, name="stream").start()
    finished = False
    try:
        while True:
            try:
                item = await asyncio.wait_for(out.get(), timeout=0.5)
            except TimeoutError:
                if await request.is_disconnected():
                    return
                continue
            if item is done:
                finished = True
                return
            if isinstance(item, BaseException):
                finished = True
                raise item
            yield item
    finally:
        if not finished:  # the client went away (or the response was cancelled): stop decoding for it
            generation.cancel()
            metrics.disconnects.inc()


async def collect(generation: Generation, request: Request, metrics: ServerMetrics) -> str:
    return "".join([piece async for piece in pieces(generation, request, metrics)])


def usage(generation: Generation) -> dict[str, int]:
    r = generation.result
    prompt = r.prompt_tokens if r else 0
    completion = r.completion_tokens if r else 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def record(generation: Generation, metrics: ServerMetrics) -> None:
    r = generation.result
    if r is not None:
        metrics.generation(r.prompt_tokens, r.completion_tokens, r.ttft_s, r.decode_tokens_per_s)


def finish_reason(generation: Generation) -> str:
    reason = generation.result.finish_reason if generation.result else "stop"
    return "length" if reason == "length" else "stop"
