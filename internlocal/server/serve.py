"""Starting the server: checks (bind address, API key, port), engine, uvicorn, clean shutdown."""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from internlocal.errors import UserError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_port(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError as exc:
            raise UserError(
                f"Cannot listen on {host}:{port} ({exc.strerror}); choose another port with --port."
            ) from None


@dataclass
class ServeOptions:
    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    slots: int = 4
    context_length: int | None = None
    max_queue: int = 16
    max_tokens: int | None = None  # the most one request may generate (None: the context length)
    prompt_cache_mb: int = 256  # host memory for sequences the slots gave up (llama-server's --cache-ram)
    stop_on_repetition: bool = True  # end generations that loop (a request's stop_on_repetition overrides it)
    cors_origins: tuple[str, ...] = ()  # browser origins allowed to call (none: CORS off)
    max_models: int = 3  # catalog models loaded at once; the least recently used is unloaded for another
    models_memory_mb: int | None = None  # what they may hold together (None: whatever memory is free)
    keep_alive: str = "5m"  # an on-demand model stays this long after its last request (Ollama's default)
    allow_image_urls: bool = False  # fetch http(s) image_url parts
    image_folders: tuple[Path, ...] = ()  # folders file:// image_url parts may be read from


def build(options: ServeOptions, services):
    """The engine and the FastAPI app for ``options`` (used by ``serve`` and by tests)."""
    from internlocal.engines.llamacpp import LlamaCppEngine, memory_estimate
    from internlocal.engines.llamacpp_batched import BatchedLlamaCpp
    from internlocal.engines.loader import load_embedder
    from internlocal.hub.embedded import EMBEDDING_MODEL
    from internlocal.hub.inspect import read_gguf
    from internlocal.server.app import ServerConfig, create_app
    from internlocal.server.served import LoadedModel, ModelCard, keep_alive_seconds

    if not is_loopback(options.host) and not options.api_key:
        raise UserError(
            f"Serving on {options.host} exposes the model to the network; set --api-key (or bind 127.0.0.1)."
        )
    catalog = services.catalog
    model = catalog.get_model(options.model) if options.model else services.chats.default_model()
    if model.format != "gguf":
        raise UserError(
            f"{model.name} is a {model.format} model; serve a GGUF model (convert it with `models convert --to gguf`)."
        )

    def open_gguf(row, n_ctx: int) -> tuple[LlamaCppEngine, BatchedLlamaCpp]:
        """A GGUF chat model as the server runs it: the engine that scores, and the batched one on its weights."""
        scorer = LlamaCppEngine(
            row.path,
            model_name=row.name,
            n_ctx=n_ctx,
            n_threads=services.settings.threads,
            n_gpu_layers=services.settings.gpu_layers,
            chat_template=row.chat_template,
            flash_attention=True,  # scores independent of batch shape, as the batched engine's (logprobs)
            projector_path=row.projector_path if row.vision else None,
        )
        batched = BatchedLlamaCpp(
            scorer, slots=options.slots, kv_cache=services.settings.kv_cache, prompt_cache_mb=options.prompt_cache_mb
        )
        return scorer, batched

    base, engine = open_gguf(model, options.context_length or services.settings.context_length)
    embedding = catalog.find_model(EMBEDDING_MODEL.name)

    def servable() -> list[ModelCard]:
        """Every catalog model a request may name: local GGUF chat models and embedding models."""
        rows = [m for m in catalog.list_models() if m.kind == "embedding" or (m.kind == "chat" and m.format == "gguf")]
        return [ModelCard.of(m, context_length=engine.context_length if m.kind == "chat" else None) for m in rows]

    def estimate(card: ModelCard) -> int:
        """Bytes a model will hold: a chat model's weights and every slot's KV cache; an embedder's files."""
        if card.kind != "chat":
            return int((card.size_bytes or 0) * 1.2)
        row = catalog.get_model(card.name)
        projector_file = Path(row.projector_path) if row.vision and row.projector_path else None
        projector = projector_file.stat().st_size if projector_file and projector_file.is_file() else 0
        return memory_estimate(read_gguf(Path(row.path)), engine.context_length * options.slots) + projector

    def load(card: ModelCard) -> LoadedModel:
        row = catalog.get_model(card.name)
        if row.kind == "embedding":
            return LoadedModel(card, embedder=load_embedder(row), size=estimate(card))
        other, batched = open_gguf(row, engine.context_length)
        return LoadedModel(card, engine=batched, close=closer(batched, other), size=estimate(card))

    config = ServerConfig(
        model_name=model.name,
        slots=options.slots,
        max_queue=options.max_queue,
        max_tokens_limit=min(options.max_tokens or engine.context_length, engine.context_length),
        api_key=options.api_key,
        embedding_model=embedding.name if embedding else None,
        stop_on_repetition=options.stop_on_repetition,
        cors_origins=list(options.cors_origins),
        max_models=options.max_models,
        models_memory_bytes=options.models_memory_mb * 2**20 if options.models_memory_mb else None,
        keep_alive_s=keep_alive_seconds(options.keep_alive, None),
        allow_image_urls=options.allow_image_urls,
        image_folders=[Path(p) for p in options.image_folders],
    )
    app = create_app(
        engine,
        config,
        (lambda: load_embedder(embedding)) if embedding else None,
        servable,
        loader=load,
        estimate=estimate,
        close_first=closer(engine, base),
    )
    return engine, base, app


def closer(*engines) -> Callable[[], None]:
    """Close ``engines`` in order (the batched engine before the one whose weights it shares)."""

    def close() -> None:
        for engine in engines:
            engine.close()

    return close


def serve(options: ServeOptions, services, on_ready=None) -> None:
    import uvicorn

    from internlocal.server.state import ServerState

    check_port(options.host, options.port)
    engine, _base, app = build(options, services)
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    if on_ready:
        on_ready(f"http://{options.host}:{options.port}", engine.model_name)
    try:
        server.run()  # Ctrl-C / SIGTERM: uvicorn stops accepting, finishes or drops requests, returns
    finally:
        ServerState.of(app).models.close()  # every loaded model, the first one included
