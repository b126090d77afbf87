"""What every route shares: the configuration, the served models, admission and metrics.

``create_app`` builds one ``ServerState`` and attaches it to ``app.state``; routes reach it through
the ``StateDep`` dependency (middleware and tests through ``ServerState.of(app)``), never through
loose attributes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from internlocal.engines.base import Embedder, Engine
from internlocal.server.metrics import ServerMetrics
from internlocal.server.openai_schema import APIError
from internlocal.server.served import DEFAULT_KEEP_ALIVE_S, Loader, ModelCard, ServedModels


@dataclass
class ServerConfig:
    model_name: str
    slots: int = 4
    max_queue: int = 16  # requests waiting beyond the busy slots before 503
    max_tokens_limit: int = 4096
    max_body_bytes: int = 32 << 20  # images travel inside the body as data: URIs (20 MiB each at most)
    api_key: str | None = None
    embedding_model: str | None = None
    stop_on_repetition: bool = True  # a request's stop_on_repetition overrides it
    max_models: int = 3  # models loaded at once (Ollama's OLLAMA_MAX_LOADED_MODELS)
    models_memory_bytes: int | None = None  # what loaded models may hold together (None: what is free)
    keep_alive_s: float | None = DEFAULT_KEEP_ALIVE_S  # after its last request (None: while the server runs)
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed to call; none by default
    allow_image_urls: bool = False  # fetch http(s) image_url parts (off: only data: URIs)
    image_folders: list[Path] = field(default_factory=list)  # where file:// image_url parts may be read
    created: int = field(default_factory=lambda: int(time.time()))


class Admission:
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

    def leave(self, n: int = 1) -> None:
        with self._lock:
            self.in_flight -= n


@dataclass
class ServerState:
    config: ServerConfig
    models: ServedModels
    admission: Admission
    metrics: ServerMetrics = field(default_factory=ServerMetrics)

    @classmethod
    def build(
        cls,
        engine: Engine,
        config: ServerConfig,
        embedder_factory: Callable[[], Embedder] | None = None,
        cards: Sequence[ModelCard] | Callable[[], Sequence[ModelCard]] = (),
        *,
        loader: Loader | None = None,
        estimate: Callable[[ModelCard], int] | None = None,
        close_first: Callable[[], None] = lambda: None,
    ) -> ServerState:
        """The state for ``engine`` (the default model, loaded); with a ``loader``, any model in ``cards`` is
        loaded when a request names it (see ``served.py``)."""
        models = ServedModels(
            engine,
            config.model_name,
            embedding_name=config.embedding_model,
            embedder_factory=embedder_factory,
            cards=cards,
            loader=loader,
            max_loaded=config.max_models,
            memory_budget=config.models_memory_bytes,
            keep_alive=config.keep_alive_s,
            close_first=close_first,
            **({"estimate": estimate} if estimate else {}),
        )
        state = cls(config, models, Admission(config.slots + config.max_queue))
        state.metrics.watch_scheduler(lambda: getattr(models.engine, "stats", None))
        return state

    def attach(self, app: FastAPI) -> None:
        app.state.internlocal = self

    @staticmethod
    def of(app: FastAPI) -> ServerState:
        state = getattr(app.state, "internlocal", None)
        if not isinstance(state, ServerState):
            raise RuntimeError("This app has no ServerState; attach one with ServerState.attach(app).")
        return state


def server_state(request: Request) -> ServerState:
    return ServerState.of(request.app)


StateDep = Annotated[ServerState, Depends(server_state)]
"""The shared state as a route parameter: ``async def health(state: StateDep)``."""
