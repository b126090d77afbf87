"""Ollama's API on the same port: /api/version, tags, show, ps, chat, generate, embed.

So the clients people already run against Ollama (the ``ollama`` Python package, oterm, Open WebUI)
work unchanged. Requests go through the same engines, admission and metrics as the OpenAI routes;
what differs is the shape: Ollama's ``options`` for sampling, newline-delimited JSON for streams
(on by default), durations in nanoseconds, and errors as ``{"error": "…"}``.

Every option is honoured or refused by name, as on the OpenAI side.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from internlocal import __version__
from internlocal.engines.base import Engine, Generation, GenerationParams
from internlocal.server.generation import merged, record, start_all
from internlocal.server.openai_schema import APIError
from internlocal.server.served import ModelCard
from internlocal.server.state import ServerConfig, ServerState, StateDep

router = APIRouter()

# The Ollama API version these routes follow (clients compare it before using newer fields).
OLLAMA_API_VERSION = "0.12.0"


class OllamaOptions(BaseModel):
    """Ollama's ``options``: the sampling ones map onto ``GenerationParams``; any other is refused by name."""

    model_config = ConfigDict(extra="allow")

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    num_predict: int | None = None  # -1: until the context is full; -2: fill the context
    stop: list[str] | None = None
    seed: int | None = None
    num_ctx: int | None = Field(None, ge=1)
    repeat_penalty: float | None = Field(None, ge=0.5, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    repeat_last_n: int | None = None  # llama.cpp's penalty window here is 64 tokens; only that is accepted


class _OllamaRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str
    stream: bool = True
    options: OllamaOptions | None = None
    format: Literal["json"] | dict[str, Any] | None = None
    keep_alive: float | str | None = None
    think: bool | None = None

    def refuse_unknown(self) -> None:
        for name in self.model_extra or {}:
            raise APIError(400, f"The field {name!r} is not supported by this server; leave it out.", param=name)
        if self.think:
            raise APIError(400, "This model does not think aloud; send think=false or leave it out.", param="think")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None
    thinking: str | None = None


class ChatRequest(_OllamaRequest):
    messages: list[ChatMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_OllamaRequest):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    images: list[str] | None = None
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None


class EmbedRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    input: str | list[str]
    truncate: bool = True
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None
    dimensions: int | None = None


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    name: str | None = None  # older clients send "name"
    verbose: bool = False


# -- what a model looks like to Ollama's clients ---------------------------------------------------


def _timestamp(when: str | float | None = None) -> str:
    if isinstance(when, str) and when:
        return when if when.endswith("Z") or "+" in when else when + "Z"
    moment = datetime.fromtimestamp(when, UTC) if isinstance(when, float) else datetime.now(UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _details(card: ModelCard) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": card.format,
        "family": card.family or card.architecture or "",
        "families": [card.family or card.architecture or ""],
        "parameter_size": _billions(card.parameters),
        "quantization_level": (card.quantization or "").upper(),
    }


def _billions(parameters: int | None) -> str:
    if not parameters:
        return ""
    return f"{parameters / 1e9:.1f}B" if parameters >= 1e9 else f"{parameters / 1e6:.0f}M"


def _tag(card: ModelCard) -> dict[str, Any]:
    return {
        "name": card.name,
        "model": card.name,
        "modified_at": _timestamp(card.created_at),
        "size": card.size_bytes or 0,
        "digest": card.sha256 or "",
        "details": _details(card),
    }


@router.get("/api/version")
async def version() -> dict[str, str]:
    return {"version": OLLAMA_API_VERSION, "internlocal": __version__}


@router.get("/api/tags")
async def tags(state: StateDep) -> dict[str, Any]:
    return {"models": [_tag(card) for card in state.models.cards()]}


@router.get("/api/ps")
async def ps(state: StateDep) -> dict[str, Any]:
    running = []
    for card in state.models.loaded():
        running.append(
            _tag(card)
            | {
                "expires_at": _timestamp(card.expires_at) if card.expires_at else "0001-01-01T00:00:00Z",
                "size_vram": 0,
                "context_length": card.context_length or 0,
            }
        )
    return {"models": running}


@router.post("/api/show")
async def show(body: ModelRequest, state: StateDep) -> dict[str, Any]:
    name = body.model or body.name
    if not name:
        raise APIError(400, "Name the model to show.", param="model")
    card = state.models.card(name)
    capabilities = ["embedding"] if card.kind == "embedding" else ["completion"]
    if card.kind != "embedding":
        capabilities.append("tools")  # every chat engine here plans tool calls (a grammar where the template has none)
    info = {"general.architecture": card.architecture or "", "general.parameter_count": card.parameters or 0}
    if card.context_length:
        info[f"{card.architecture or 'general'}.context_length"] = card.context_length
    return {
        "modelfile": f"# served by internlocal\nFROM {card.name}\n",
        "parameters": "\n".join(f"{key} {value}" for key, value in card.sampling.items()),  # Modelfile lines
        "template": card.chat_template or "",
        "details": _details(card),
        "model_info": info,
        "capabilities": capabilities,
        "modified_at": _timestamp(card.created_at),
    }


# -- chat and generate -----------------------------------------------------------------------------


def _params(body: _OllamaRequest, config: ServerConfig, engine: Engine, card: ModelCard) -> GenerationParams:
    """Ollama's options as ``GenerationParams``; what they leave out comes from the model's recommended sampling."""
    body.refuse_unknown()
    options = body.options or OllamaOptions()
    for name in options.model_extra or {}:
        raise APIError(400, f"The option {name!r} is not supported by this server; leave it out.", param=name)
    if options.repeat_last_n not in (None, 64):
        raise APIError(400, "repeat_last_n is fixed at 64 tokens here.", param="repeat_last_n")
    if options.num_ctx is not None and options.num_ctx > engine.context_length:
        raise APIError(
            400,
            f"num_ctx {options.num_ctx} is more than this server's {engine.context_length} tokens per request; "
            "start `internlocal serve` with a larger --ctx.",
            param="num_ctx",
        )
    limit = min(config.max_tokens_limit, options.num_ctx or engine.context_length)
    predict = options.num_predict
    if predict is None:
        max_tokens = min(512, limit)  # unset: as on the OpenAI routes
    elif predict < 0:
        max_tokens = limit  # -1 / -2: until the context (or the server's limit) is full
    else:
        max_tokens = max(1, min(predict, limit))
    values: dict[str, Any] = {"repeat_penalty": 1.0, **card.sampling}
    values |= {
        "max_tokens": max_tokens,
        "stop": options.stop or [],
        "seed": options.seed,
        "stop_on_repetition": config.stop_on_repetition,
    }
    if options.repeat_penalty is not None:
        values["repeat_penalty"] = options.repeat_penalty
    for name in ("temperature", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty"):
        if getattr(options, name) is not None:
            values[name] = getattr(options, name)
    return GenerationParams(**values)


def _with_images(text: str, images: list[str] | None, state, where: str) -> Any:
    """Ollama's ``images`` (base64 strings beside the text) as OpenAI content parts, checked like the OpenAI
    route's (``server/images.py``); a model that cannot see them refuses in the engine."""
    if not images:
        return text
    from internlocal.server.images import resolve_content

    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [
        {"type": "image_url", "image_url": {"url": f"data:application/octet-stream;base64,{data}"}} for data in images
    ]
    return resolve_content(parts, state.config, where=where)


def _format(body: _OllamaRequest) -> dict[str, Any] | None:
    if body.format is None:
        return None
    if body.format == "json":
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"schema": body.format}}


def _durations(generation: Generation) -> dict[str, Any]:
    r = generation.result
    if r is None:
        return {}
    prompt_ns = int((r.ttft_s or 0) * 1e9)
    return {
        "total_duration": int(r.total_s * 1e9),
        "load_duration": 0,
        "prompt_eval_count": r.prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": r.completion_tokens,
        "eval_duration": max(0, int(r.total_s * 1e9) - prompt_ns),
    }


def _done_reason(generation: Generation) -> str:
    reason = generation.result.finish_reason if generation.result else "stop"
    return {"length": "length", "repetition": "repetition"}.get(reason, "stop")


def _ndjson(events: AsyncIterator[dict[str, Any]], on_close: Callable[[], None]) -> StreamingResponse:
    """One JSON object per line (Ollama's streams); ``on_close`` runs however the stream ends."""

    async def body() -> AsyncIterator[str]:
        try:
            async for event in events:
                yield json.dumps(event, ensure_ascii=False) + "\n"
        finally:
            on_close()

    return StreamingResponse(body(), media_type="application/x-ndjson")


async def _answer(
    state: ServerState,
    engine: Engine,
    request: Request,
    body: _OllamaRequest,
    make: Callable[[], Generation],
    shape: Callable[[str, bool], dict[str, Any]],
    finish: Callable[[Generation], dict[str, Any]],
):
    """Run one generation and answer it whole or as NDJSON; ``shape(text, done)`` builds a message, ``finish``
    the last one's extra fields."""
    [generation] = await start_all(state, engine, lambda _: make(), 1)
    state.models.used(body.model, body.keep_alive)
    if not body.stream:
        try:
            async for _ in merged([generation], request, state.metrics):
                pass
        finally:
            state.admission.leave()
        record(generation, state.metrics)
        result = generation.result
        return shape(result.text if result else "", True) | finish(generation)

    async def events() -> AsyncIterator[dict[str, Any]]:
        async for _, piece in merged([generation], request, state.metrics):
            yield shape(piece, False)
        if generation.result is None:
            return  # the client went away
        record(generation, state.metrics)
        yield shape("", True) | finish(generation)

    return _ndjson(events(), state.admission.leave)


@router.post("/api/chat")
async def chat(body: ChatRequest, request: Request, state: StateDep):
    name, engine = await state.models.engine_for(body.model)
    params = _params(body, state.config, engine, state.models.card(name))
    if not body.messages:  # Ollama's way to load a model ahead of use
        state.models.used(body.model, body.keep_alive)
        return {"model": name, "created_at": _timestamp(), "message": {"role": "assistant", "content": ""},
                "done": True, "done_reason": "load"}  # fmt: skip
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(body.messages):
        content = await asyncio.to_thread(_with_images, m.content, m.images, state, f"messages[{i}]")
        message: dict[str, Any] = {"role": m.role, "content": content}
        if m.tool_calls:  # Ollama's arguments are objects; the engines take OpenAI's strings
            message["tool_calls"] = [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {
                        "name": c.get("function", {}).get("name", ""),
                        "arguments": json.dumps(c.get("function", {}).get("arguments", {})),
                    },
                }
                for i, c in enumerate(m.tool_calls)
            ]
        if m.role == "tool" and m.tool_name:
            message["name"] = m.tool_name
        messages.append(message)
    wants_tools = bool(body.tools)

    def make() -> Generation:
        return engine.chat(messages, params, response_format=_format(body), tools=body.tools or None)

    def shape(text: str, done: bool) -> dict[str, Any]:
        message = {"role": "assistant", "content": "" if wants_tools and not done else text}
        return {"model": name, "created_at": _timestamp(), "message": message, "done": done}

    def finish(generation: Generation) -> dict[str, Any]:
        fields: dict[str, Any] = {"done_reason": _done_reason(generation), **_durations(generation)}
        result = generation.result
        if result is not None and wants_tools:
            message: dict[str, Any] = {"role": "assistant", "content": result.text or ""}
            if result.tool_calls:
                message["tool_calls"] = [
                    {"function": {"name": c["function"]["name"], "arguments": _arguments(c["function"]["arguments"])}}
                    for c in result.tool_calls
                ]
            fields["message"] = message
        return fields

    return await _answer(state, engine, request, body, make, shape, finish)


def _arguments(text: str) -> Any:
    try:
        return json.loads(text)
    except (TypeError, json.JSONDecodeError):
        return text


@router.post("/api/generate")
async def generate(body: GenerateRequest, request: Request, state: StateDep):
    name, engine = await state.models.engine_for(body.model)
    params = _params(body, state.config, engine, state.models.card(name))
    for field_name in ("suffix", "template", "context"):
        if getattr(body, field_name):
            raise APIError(400, f"The field {field_name!r} is not supported by this server; leave it out.",
                           param=field_name)  # fmt: skip
    if body.raw and body.images:
        raise APIError(400, "Images go through the model's template; leave out raw.", param="images")
    if not body.prompt:  # Ollama's way to load a model ahead of use
        state.models.used(body.model, body.keep_alive)
        return {"model": name, "created_at": _timestamp(), "response": "", "done": True, "done_reason": "load"}
    prompt = await asyncio.to_thread(_with_images, body.prompt, body.images, state, "images")

    def make() -> Generation:
        if body.raw:  # the prompt as it is, no template
            return engine.complete(body.prompt, params, response_format=_format(body))
        messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
            {"role": "user", "content": prompt}
        ]
        return engine.chat(messages, params, response_format=_format(body))

    def shape(text: str, done: bool) -> dict[str, Any]:
        return {"model": name, "created_at": _timestamp(), "response": text, "done": done}

    def finish(generation: Generation) -> dict[str, Any]:
        return {"done_reason": _done_reason(generation), **_durations(generation)}

    return await _answer(state, engine, request, body, make, shape, finish)


@router.post("/api/embed")
async def embed(body: EmbedRequest, state: StateDep) -> dict[str, Any]:
    if body.options:
        raise APIError(400, "Embedding models take no options here.", param="options")
    if not body.truncate:
        raise APIError(
            400,
            "Inputs longer than the embedding model's window are always truncated here; send truncate=true.",
            param="truncate",
        )
    if body.dimensions is not None:
        raise APIError(400, "dimensions is not supported by this server; leave it out.", param="dimensions")
    texts = [body.input] if isinstance(body.input, str) else body.input
    if not texts:
        raise APIError(400, "input must be a string or a non-empty list of strings.", param="input")
    started = time.perf_counter()
    name, vectors, tokens = await state.models.embed(body.model, texts)
    state.models.used(body.model, body.keep_alive)
    return {
        "model": name or body.model,
        "embeddings": vectors,
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": tokens,
    }
