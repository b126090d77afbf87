"""Starting the server: checks (bind address, API key, port), engine, uvicorn, clean shutdown."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

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


def build(options: ServeOptions, services):
    """The engine and the FastAPI app for ``options`` (used by ``serve`` and by tests)."""
    from internlocal.engines.llamacpp import LlamaCppEngine
    from internlocal.engines.llamacpp_batched import BatchedLlamaCpp
    from internlocal.engines.loader import load_embedder
    from internlocal.hub.embedded import EMBEDDING_MODEL
    from internlocal.server.app import ServerConfig, create_app
    from internlocal.server.state import ModelCard

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
    ctx = options.context_length or services.settings.context_length
    base = LlamaCppEngine(
        model.path,
        model_name=model.name,
        n_ctx=ctx,
        n_threads=services.settings.threads,
        n_gpu_layers=services.settings.gpu_layers,
        chat_template=model.chat_template,
    )
    engine = BatchedLlamaCpp(
        base, slots=options.slots, kv_cache=services.settings.kv_cache, prompt_cache_mb=options.prompt_cache_mb
    )
    embedding = catalog.find_model(EMBEDDING_MODEL.name)
    config = ServerConfig(
        model_name=model.name,
        slots=options.slots,
        max_queue=options.max_queue,
        max_tokens_limit=min(options.max_tokens or engine.context_length, engine.context_length),
        api_key=options.api_key,
        embedding_model=embedding.name if embedding else None,
        stop_on_repetition=options.stop_on_repetition,
        cors_origins=list(options.cors_origins),
    )
    cards = [ModelCard.of(model, context_length=engine.context_length)] + (
        [ModelCard.of(embedding)] if embedding else []
    )
    app = create_app(engine, config, (lambda: load_embedder(embedding)) if embedding else None, cards)
    return engine, base, app


def serve(options: ServeOptions, services, on_ready=None) -> None:
    import uvicorn

    check_port(options.host, options.port)
    engine, base, app = build(options, services)
    config = uvicorn.Config(
        app, host=options.host, port=options.port, log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    server = uvicorn.Server(config)
    if on_ready:
        on_ready(f"http://{options.host}:{options.port}", engine.model_name)
    try:
        server.run()  # Ctrl-C / SIGTERM: uvicorn stops accepting, finishes or drops requests, returns
    finally:
        engine.close()
        base.close()
