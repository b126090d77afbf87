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
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from internlocal.engines.base import Embedder, Engine
from internlocal.errors import Unsupported
from internlocal.server.metrics import ServerMetrics
from internlocal.server.openai_schema import APIError


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

    def leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class ServedModels:
    """The models this server answers with: one generating engine and, optionally, an embedder.

    Routes ask this object which engine serves a request's ``model`` and never hold an engine of
    their own, so serving several models from one server changes this class, not the routes. The
    embedder is created on first use (loading sentence-transformers costs seconds) and used under
    a lock.
    """

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        embedding_name: str | None = None,
        embedder_factory: Callable[[], Embedder] | None = None,
    ):
        self.engine = engine
        self.name = name
        self.embedding_name = embedding_name
        self._embedder_factory = embedder_factory
        self._embedder: Embedder | None = None
        self._embedder_lock = threading.Lock()

    def names(self) -> list[str]:
        """What ``GET /v1/models`` lists: the generating model, then the embedding model."""
        return [self.name] + ([self.embedding_name] if self.embedding_name else [])

    def engine_for(self, requested: str | None) -> tuple[str, Engine]:
        """The served name and engine for a request's ``model`` (absent or ``"default"``: the served one)."""
        if requested and requested not in (self.name, "default"):
            raise self._not_found(requested, self.name)
        return self.name, self.engine

    def embedding_for(self, requested: str | None) -> str:
        """The served embedding model's name for a request's ``model``; an unnamed embedder accepts any name."""
        if self._embedder_factory is None:
            raise APIError(404, "This server has no embedding model.", code="model_not_found", param="model")
        if requested and self.embedding_name is not None and requested not in (self.embedding_name, "default"):
            raise self._not_found(requested, self.embedding_name)
        return self.embedding_name or ""

    def embed(self, texts: Sequence[str]) -> tuple[list[list[float]], int]:
        """Vectors for ``texts`` and the tokens the embedding model read for them (blocking: call on a thread).

        An embedder that cannot count (a remote endpoint that reports no usage) counts 0 tokens.
        """
        assert self._embedder_factory is not None, "embedding_for() refuses a server without an embedder"
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = self._embedder_factory()
            vectors = self._embedder.embed(texts)
            try:
                tokens = self._embedder.count_tokens(texts)
            except Unsupported:
                tokens = 0
        return vectors, tokens

    @staticmethod
    def _not_found(requested: str, served: str) -> APIError:
        return APIError(
            404,
            f"The model {requested!r} does not exist here; this server serves {served!r} (GET /v1/models).",
            code="model_not_found",
            param="model",
        )


@dataclass
class ServerState:
    config: ServerConfig
    models: ServedModels
    admission: Admission
    metrics: ServerMetrics = field(default_factory=ServerMetrics)

    @classmethod
    def build(
        cls, engine: Engine, config: ServerConfig, embedder_factory: Callable[[], Embedder] | None = None
    ) -> ServerState:
        models = ServedModels(
            engine, config.model_name, embedding_name=config.embedding_model, embedder_factory=embedder_factory
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
