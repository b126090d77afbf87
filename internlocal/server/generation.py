"""Engine generations for one request: sampling parameters, admission, reading, usage, metrics.

Generation runs on the engine's own threads; a handler only waits on it. ``start_all`` admits the
request's ``n`` choices (or answers 503) and the handler must call ``state.admission.leave()`` once
for each when it is done with them. ``pieces`` reads the text on a thread and cancels the
generation when the client goes away; ``merged`` does so for several choices at once.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import Request

from internlocal.engines.base import Engine, Generation, GenerationParams, TokenLogprob
from internlocal.errors import ContextOverflow, Unsupported, UserError
from internlocal.server.metrics import ServerMetrics
from internlocal.server.openai_schema import APIError, SamplingFields
from internlocal.server.state import ServerConfig, ServerState


def sampling(
    body: SamplingFields, config: ServerConfig, logprobs: int | None = None, recommended: dict[str, Any] | None = None
) -> GenerationParams:
    """The request's sampling as ``GenerationParams``: every field it set, or a 400 naming the one that cannot be;
    for the sampling fields it leaves out, the model's ``recommended`` values, else ours."""
    body.refuse_unknown()
    if body.n > config.slots:
        raise APIError(400, f"n={body.n} is more than this server's {config.slots} slots.", param="n")
    max_tokens = body.max_completion_tokens or body.max_tokens or min(512, config.max_tokens_limit)
    if max_tokens > config.max_tokens_limit:
        raise APIError(
            400,
            f"max_tokens {max_tokens} is above this server's limit of {config.max_tokens_limit}.",
            param="max_tokens",
        )
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    values: dict[str, Any] = {"repeat_penalty": 1.0, **(recommended or {})}
    values |= {"max_tokens": max_tokens, "stop": stop, "seed": body.seed}
    if body.temperature is not None:
        values["temperature"] = body.temperature
    if body.top_p is not None:
        values["top_p"] = body.top_p
    if body.top_k is not None:
        values["top_k"] = body.top_k
    if body.repeat_penalty is not None:
        values["repeat_penalty"] = body.repeat_penalty
    for name in ("frequency_penalty", "presence_penalty", "min_p"):
        if getattr(body, name) is not None:
            values[name] = getattr(body, name)
    if body.logit_bias:
        values["logit_bias"] = _logit_bias(body.logit_bias)
    values["logprobs"] = logprobs
    values["stop_on_repetition"] = (
        body.stop_on_repetition if body.stop_on_repetition is not None else config.stop_on_repetition
    )
    return GenerationParams(**values)


def _logit_bias(bias: dict[str, float]) -> dict[int, float]:
    out = {}
    for key, value in bias.items():
        if not key.lstrip("-").isdigit():
            raise APIError(400, f"logit_bias keys are token ids; {key!r} is not one.", param="logit_bias")
        if not -100 <= value <= 100:
            raise APIError(400, f"logit_bias values lie in [-100, 100]; token {key} has {value}.", param="logit_bias")
        out[int(key)] = value
    return out


def choice_params(params: GenerationParams, index: int) -> GenerationParams:
    """Choice ``index``'s parameters: with a seed, each choice gets its own (seed + index), so n choices differ
    yet the same request still gives the same choices."""
    return params if params.seed is None or index == 0 else params.model_copy(update={"seed": params.seed + index})


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
    except Unsupported as exc:  # a field this engine cannot honour
        state.admission.leave()
        raise APIError(400, str(exc), param=exc.field) from None
    except ContextOverflow as exc:
        state.admission.leave()
        raise context_error(engine, exc) from None
    except UserError as exc:  # the request's content (an image llama.cpp cannot decode, a template's refusal)
        state.admission.leave()
        raise APIError(getattr(exc, "status", 400), str(exc), param="messages") from None
    except BaseException:
        state.admission.leave()
        raise


async def start_all(state: ServerState, engine: Engine, make: Callable[[int], Generation], n: int) -> list[Generation]:
    """``n`` choices, each its own generation in its own slot; the caller owes one ``leave()`` per choice."""
    started: list[Generation] = []
    try:
        for index in range(n):
            started.append(await start(state, engine, functools.partial(make, index)))
    except BaseException:
        for generation in started:
            generation.cancel()
        state.admission.leave(len(started))
        raise
    return started


async def merged(
    generations: list[Generation], request: Request, metrics: ServerMetrics
) -> AsyncIterator[tuple[int, str]]:
    """(choice index, text piece) from several generations as they come; each is cancelled if the client goes."""
    if len(generations) == 1:
        async for piece in pieces(generations[0], request, metrics):
            yield 0, piece
        return
    out: asyncio.Queue = asyncio.Queue()
    end = object()

    async def drain(index: int, generation: Generation) -> None:
        try:
            async for piece in pieces(generation, request, metrics):
                out.put_nowait((index, piece))
        except Exception as exc:
            out.put_nowait((index, exc))
            return
        out.put_nowait((index, end))

    tasks = [asyncio.create_task(drain(i, g)) for i, g in enumerate(generations)]
    try:
        running = len(tasks)
        while running:
            index, item = await out.get()
            if item is end:
                running -= 1
            elif isinstance(item, Exception):
                raise item
            else:
                yield index, item
    finally:
        for task in tasks:
            task.cancel()


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


def usage(*generations: Generation) -> dict[str, int]:
    """OpenAI's usage for a request's choices: the prompt once, the completions summed."""
    results = [g.result for g in generations if g.result is not None]
    prompt = results[0].prompt_tokens if results else 0
    completion = sum(r.completion_tokens for r in results)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def record(generation: Generation, metrics: ServerMetrics) -> None:
    r = generation.result
    if r is not None:
        metrics.generation(r.prompt_tokens, r.completion_tokens, r.ttft_s, r.decode_tokens_per_s)


def finish_reason(generation: Generation) -> str:
    reason = generation.result.finish_reason if generation.result else "stop"
    return "length" if reason == "length" else "stop"


def finish_fields(generation: Generation) -> dict[str, Any]:
    """``finish_reason``, and ``stop_reason: "repetition"`` when the repetition stop ended the choice (the
    client sees an ordinary stop, and why)."""
    fields: dict[str, Any] = {"finish_reason": finish_reason(generation)}
    if generation.result is not None and generation.result.finish_reason == "repetition":
        fields["stop_reason"] = "repetition"
    return fields


def new_logprobs(generation: Generation, sent: int) -> list[TokenLogprob]:
    """The generation's token log-probabilities from index ``sent`` on (what a stream has not sent yet)."""
    return list((generation.token_logprobs or [])[sent:])


def chat_logprobs(entries: list[TokenLogprob]) -> dict[str, Any]:
    """OpenAI chat's ``logprobs``: ``{"content": [{token, logprob, bytes, top_logprobs}], "refusal": None}``."""

    def entry(token: str, logprob: float, data: bytes | None = None) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(data if data is not None else token.encode())}

    return {
        "content": [
            entry(e.token, e.logprob or 0.0, e.data) | {"top_logprobs": [entry(t, lp) for t, lp in e.top.items()]}
            for e in entries
        ],
        "refusal": None,
    }


def completion_logprobs(entries: list[TokenLogprob], offset: int = 0) -> dict[str, Any]:
    """OpenAI completions' ``logprobs`` (tokens, token_logprobs, top_logprobs, text_offset); ``offset`` moves
    the text offsets past text that precedes these tokens (an echoed prompt, earlier chunks)."""
    return {
        "tokens": [e.token for e in entries],
        "token_logprobs": [e.logprob for e in entries],
        "top_logprobs": [e.top if e.logprob is not None else None for e in entries],
        "text_offset": [e.offset + offset for e in entries],
    }
