"""The OpenAI-compatible HTTP API, with Ollama's on the same port (FastAPI): the route table, and
``create_app`` assembling the server.

Generation runs on the engine's own threads (the batched llama.cpp scheduler); request handlers
only wait on it, so many clients are served at once. Admission is bounded: with every slot busy
and the queue full, a request gets 503 with Retry-After. A client that disconnects has its
generation cancelled.

Where things are: one module per resource in ``routes/``; what they share (configuration, the
served models, admission, metrics) in ``state.py``; running a generation for a request in
``generation.py``; the SSE framing in ``sse.py``; error handlers and the API-key/body-size guard
in ``middleware.py``; request bodies in ``openai_schema.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from fastapi import FastAPI

from internlocal.engines.base import Embedder, Engine
from internlocal.server import middleware
from internlocal.server.routes import chat, completions, embeddings, health, models, ollama, tokens
from internlocal.server.served import Loader, ModelCard
from internlocal.server.state import ServerConfig, ServerState

__all__ = ["ServerConfig", "create_app"]

ROUTES = (
    health.router,  # GET /health · GET /metrics · GET /internlocal/log
    models.router,  # GET /v1/models · GET /v1/models/{id}
    chat.router,  # POST /v1/chat/completions
    completions.router,  # POST /v1/completions
    embeddings.router,  # POST /v1/embeddings
    tokens.router,  # POST /tokenize · POST /detokenize
    ollama.router,  # Ollama's API: /api/version · tags · show · ps · chat · generate · embed
)


def create_app(
    engine: Engine,
    config: ServerConfig,
    embedder_factory: Callable[[], Embedder] | None = None,
    cards: Sequence[ModelCard] | Callable[[], Sequence[ModelCard]] = (),
    *,
    loader: Loader | None = None,
    estimate: Callable[[ModelCard], int] | None = None,
    close_first: Callable[[], None] = lambda: None,
) -> FastAPI:
    app = FastAPI(title="internlocal", version="1", docs_url=None, redoc_url=None)
    state = ServerState.build(
        engine, config, embedder_factory, cards, loader=loader, estimate=estimate, close_first=close_first
    )
    state.attach(app)
    middleware.install(app)
    for router in ROUTES:
        app.include_router(router)
    return app
