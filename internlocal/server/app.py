"""The OpenAI-compatible HTTP API (FastAPI): chat, completions, embeddings, models, health, metrics.

Generation runs on the engine's own threads (the batched llama.cpp scheduler); request handlers
only wait on it, so many clients are served at once. Admission is bounded: with every slot busy
and the queue full, a request gets 503 with Retry-After. A client that disconnects has its
generation cancelled.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from internlocal.engines.base import Embedder, Engine, Generation, GenerationParams
from internlocal.errors import UserError
from internlocal.server.metrics import ServerMetrics
from internlocal.server.openai_schema import (
    APIError,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    SamplingFields,
)


@dataclass
class ServerConfig:
    model_name: str
    slots: int = 4
    max_queue: int = 16  # requests waiting beyond the busy slots before 503
    max_tokens_limit: int = 4096
    max_body_bytes: int = 4 << 20
    api_key: str | None = None
    embedding_model: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))


class _Admission:
    """Counts requests in flight; refuses beyond slots + queue."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_flight = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            if self.in_flight >= self.limit:
                raise APIError(
                    503,
                    "The server is busy: every slot and the queue are full; retry shortly.",
                    type_="server_busy",
                    code="queue_full",
                    headers={"Retry-After": "1"},
                )
            self.in_flight += 1

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


def create_app(engine: Engine, config: ServerConfig, embedder_factory: Callable[[], Embedder] | None = None) -> FastAPI:
    app = FastAPI(title="internlocal", version="1", docs_url=None, redoc_url=None)
    metrics = ServerMetrics()
    admission = _Admission(config.slots + config.max_queue)
    embedder_holder: dict[str, Embedder] = {}
    embedder_lock = threading.Lock()

    # -- errors, auth, limits --------------------------------------------------------------------

    @app.exception_handler(APIError)
    async def api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in err.get("loc", ()) if p != "body"]
        if err.get("type") == "json_invalid":
            return JSONResponse(APIError(400, "The request body is not valid JSON.").body(), status_code=400)
        message = f"Invalid value for {'.'.join(loc) or 'the request'}: {err.get('msg')}."
        return JSONResponse(APIError(400, message, param=".".join(loc) or None).body(), status_code=400)

    @app.exception_handler(UserError)
    async def user_error(_: Request, exc: UserError) -> JSONResponse:
        return JSONResponse(APIError(400, str(exc)).body(), status_code=400)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        started = time.perf_counter()
        path = request.url.path
        if config.api_key and path.startswith("/v1/"):
            if request.headers.get("authorization", "") != f"Bearer {config.api_key}":
                metrics.request(path, 401)
                return JSONResponse(
                    APIError(
                        401,
                        "Invalid or missing API key; send Authorization: Bearer <key>.",
                        type_="authentication_error",
                        code="invalid_api_key",
                    ).body(),
                    status_code=401,
                )
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > config.max_body_bytes:
            metrics.request(path, 413)
            return JSONResponse(
                APIError(413, f"The request body is larger than {config.max_body_bytes} bytes.").body(), status_code=413
            )
        response = await call_next(request)
        metrics.request(path, response.status_code, time.perf_counter() - started, request.method)
        return response

    # -- helpers -----------------------------------------------------------------------------------

    def check_model(name: str | None, *, embedding: bool = False) -> str:
        served = config.embedding_model if embedding else config.model_name
        if name and name not in (served, "default") and not (embedding and served is None):
            raise APIError(
                404,
                f"The model {name!r} does not exist here; this server serves {served!r} (GET /v1/models).",
                code="model_not_found",
                param="model",
            )
        return served or ""

    def sampling(body: SamplingFields) -> GenerationParams:
        if body.n != 1:
            raise APIError(400, "Only n=1 is supported.", param="n")
        max_tokens = body.max_completion_tokens or body.max_tokens or 512
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

    def context_error(exc: UserError, prompt_tokens: int | None = None) -> APIError:
        return APIError(
            400,
            f"This model's maximum context length is {engine.context_length} tokens: {exc}",
            code="context_length_exceeded",
            param="messages",
        )

    async def start(make: Callable[[], Generation]) -> Generation:
        admission.enter()
        try:
            return await asyncio.to_thread(make)
        except UserError as exc:
            admission.leave()
            raise context_error(exc) from None
        except BaseException:
            admission.leave()
            raise

    async def pieces(generation: Generation, request: Request) -> AsyncIterator[str]:
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

    def usage(generation: Generation) -> dict[str, int]:
        r = generation.result
        prompt = r.prompt_tokens if r else 0
        completion = r.completion_tokens if r else 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def record(generation: Generation) -> None:
        r = generation.result
        if r is not None:
            metrics.generation(r.prompt_tokens, r.completion_tokens, r.ttft_s, r.decode_tokens_per_s)

    # -- endpoints ---------------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": config.model_name,
            "slots": config.slots,
            "in_flight": admission.in_flight,
            "queue_depth": getattr(engine, "queue_depth", 0),
        }

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        metrics.queue_depth.set(getattr(engine, "queue_depth", 0))
        metrics.in_flight.set(admission.in_flight)
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/internlocal/log")
    async def request_log() -> dict[str, Any]:
        """Recent requests and totals, for the TUI's Serve screen."""
        return {
            "model": config.model_name,
            "in_flight": admission.in_flight,
            "queue_depth": getattr(engine, "queue_depth", 0),
            "totals": metrics.totals,
            "recent": list(metrics.recent)[-50:],
        }

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        data = [{"id": config.model_name, "object": "model", "created": config.created, "owned_by": "internlocal"}]
        if config.embedding_model:
            data.append(
                {"id": config.embedding_model, "object": "model", "created": config.created, "owned_by": "internlocal"}
            )
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        model = check_model(body.model)
        params = sampling(body)
        messages = [m.model_dump(exclude_none=True) | {"content": m.text()} for m in body.messages]
        tools = [t.model_dump(exclude_none=True) for t in body.tools] if body.tools else None
        wants_tools = bool(tools) and body.tool_choice != "none"
        generation = await start(
            lambda: engine.chat(
                messages,
                params,
                response_format=body.response_format,
                tools=tools if wants_tools else None,
                tool_choice=body.tool_choice,
            )
        )
        ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        if not body.stream:
            try:
                await collect(generation, request)
            finally:
                admission.leave()
            record(generation)
            result = generation.result
            message: dict[str, Any] = {"role": "assistant", "content": result.text if result else ""}
            if result and result.tool_calls:
                message["tool_calls"] = result.tool_calls
                message["content"] = result.text or None
            finish = "tool_calls" if result and result.tool_calls else _finish(generation)
            return {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                "usage": usage(generation),
            }

        include_usage = bool(body.stream_options and body.stream_options.include_usage)

        async def events() -> AsyncIterator[str]:
            def chunk(delta: dict[str, Any], finish: str | None) -> str:
                payload = {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                }
                if include_usage:
                    payload["usage"] = None
                return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"

            try:
                yield chunk({"role": "assistant", "content": ""}, None)
                async for piece in pieces(generation, request):
                    if not wants_tools:  # a tool reply is parsed at the end, then sent whole
                        yield chunk({"content": piece}, None)
                result = generation.result
                if result is None:
                    return  # the client went away
                record(generation)
                finish = _finish(generation)
                if wants_tools:
                    if result.tool_calls:
                        yield chunk({"tool_calls": [{"index": i, **c} for i, c in enumerate(result.tool_calls)]}, None)
                        finish = "tool_calls"
                    elif result.text:
                        yield chunk({"content": result.text}, None)
                yield chunk({}, finish)
                if include_usage:
                    yield f"data: {json.dumps({'id': ident, 'object': 'chat.completion.chunk', 'created': created, 'model': model, 'choices': [], 'usage': usage(generation)})}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                admission.leave()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        model = check_model(body.model)
        if body.max_tokens == 0 and body.logprobs is None:
            raise APIError(
                400, "max_tokens 0 only makes sense with echo and logprobs (scoring the prompt).", param="max_tokens"
            )
        params = sampling(body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if len(prompts) != 1:
            raise APIError(400, "Send one prompt per request.", param="prompt")
        prompt = prompts[0]
        if body.logprobs is not None:
            return await scored_prompt(body, prompt, model)
        generation = await start(lambda: engine.complete(prompt, params, response_format=body.response_format))
        ident = f"cmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        if not body.stream:
            try:
                text = await collect(generation, request)
            finally:
                admission.leave()
            record(generation)
            return {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "text": (prompt if body.echo else "") + text,
                        "finish_reason": _finish(generation),
                        "logprobs": None,
                    }
                ],
                "usage": usage(generation),
            }

        async def events() -> AsyncIterator[str]:
            try:
                async for piece in pieces(generation, request):
                    payload = {
                        "id": ident,
                        "object": "text_completion",
                        "created": created,
                        "model": model,
                        "choices": [{"index": 0, "text": piece, "finish_reason": None, "logprobs": None}],
                    }
                    yield f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"
                if generation.result is None:
                    return
                record(generation)
                payload = {
                    "id": ident,
                    "object": "text_completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "text": "", "finish_reason": _finish(generation), "logprobs": None}],
                }
                if body.stream_options and body.stream_options.include_usage:
                    payload["usage"] = usage(generation)
                yield f"data: {json.dumps(payload)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                admission.leave()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingRequest):
        if embedder_factory is None:
            raise APIError(404, "This server has no embedding model.", code="model_not_found", param="model")
        model = check_model(body.model, embedding=True)
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not texts or any(not isinstance(t, str) for t in texts):
            raise APIError(400, "input must be a string or a list of strings.", param="input")

        def run() -> list[list[float]]:
            with embedder_lock:
                if "e" not in embedder_holder:
                    embedder_holder["e"] = embedder_factory()
                return embedder_holder["e"].embed(texts)

        vectors = await asyncio.to_thread(run)
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
            "usage": {
                "prompt_tokens": sum(len(t.split()) for t in texts),
                "total_tokens": sum(len(t.split()) for t in texts),
            },
        }

    async def scored_prompt(body: CompletionRequest, prompt: str, model: str) -> dict[str, Any]:
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
        if not hasattr(engine, "prompt_logprobs"):
            raise APIError(400, f"The {engine.engine_name} engine cannot score prompts.", param="logprobs")
        admission.enter()
        try:
            entries = await asyncio.to_thread(
                engine.prompt_logprobs, prompt, body.logprobs, next_token=body.max_tokens == 1
            )
        except UserError as exc:
            raise context_error(exc) from None
        finally:
            admission.leave()
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

    async def collect(generation: Generation, request: Request) -> str:
        return "".join([piece async for piece in pieces(generation, request)])

    app.state.metrics = metrics
    app.state.admission = admission
    return app


def _finish(generation: Generation) -> str:
    reason = generation.result.finish_reason if generation.result else "stop"
    return "length" if reason == "length" else "stop"
