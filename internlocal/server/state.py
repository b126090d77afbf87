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
from typing import Annotated, Any

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
    stop_on_repetition: bool = True  # a request's stop_on_repetition overrides it
    cors_origins: list[str] = field(default_factory=list)  # browser origins allowed to call; none by default
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
class ModelCard:
    """What clients are told about a served model (``/api/tags``, ``/api/show``, ``/api/ps``): catalog facts."""

    name: str
    kind: str = "chat"  # chat | embedding
    format: str = "gguf"
    family: str | None = None
    architecture: str | None = None
    quantization: str | None = None
    parameters: int | None = None
    context_length: int | None = None
    size_bytes: int | None = None
    sha256: str | None = None
    chat_template: str | None = None
    created_at: str | None = None
    expires_at: float | None = None  # when a loaded model would be unloaded (None: kept while the server runs)

    @classmethod
    def of(cls, row: Any, *, context_length: int | None = None) -> ModelCard:
        """From a catalog ``Model`` row; ``context_length`` is what the server gives each request."""
        return cls(
            name=row.name,
            kind=row.kind,
            format=row.format,
            family=row.family,
            architecture=row.architecture,
            quantization=row.quantization,
            parameters=row.parameters,
            context_length=context_length or row.context_length,
            size_bytes=row.size_bytes,
            sha256=row.sha256,
            chat_template=row.chat_template,
            created_at=row.created_at,
        )


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
        cards: Sequence[ModelCard] = (),
    ):
        self.engine = engine
        self.name = name
        self.embedding_name = embedding_name
        self._embedder_factory = embedder_factory
        self._embedder: Embedder | None = None
        self._embedder_lock = threading.Lock()
        known = {card.name: card for card in cards}
        self._cards = {n: known.get(n) or ModelCard(n, kind="chat" if n == name else "embedding") for n in self.names()}
        self._cards[name].context_length = self._cards[name].context_length or engine.context_length

    def cards(self) -> list[ModelCard]:
        """Every model this server answers with, as its clients see it."""
        return [self._cards[n] for n in self.names()]

    def card(self, requested: str) -> ModelCard:
        if requested in (self.name, "default"):
            return self._cards[self.name]
        if requested in self._cards:
            return self._cards[requested]
        raise self._not_found(requested, self.name)

    def loaded(self) -> list[ModelCard]:
        """The models in memory now: the generating one always, the embedder once it was used."""
        return [c for c in self.cards() if c.kind != "embedding" or self._embedder is not None]

    def used(self, requested: str | None, keep_alive: float | str | None) -> None:
        """A request's Ollama ``keep_alive``. This server keeps its models loaded while it runs, so a duration is
        met (they stay at least that long); unloading at once (0) cannot be, and is refused."""
        if keep_alive in (0, "0", "0s", "0m"):
            raise APIError(
                400,
                "This server keeps its models loaded while it runs; keep_alive 0 (unload now) is not supported.",
                param="keep_alive",
            )

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
        cls,
        engine: Engine,
        config: ServerConfig,
        embedder_factory: Callable[[], Embedder] | None = None,
        cards: Sequence[ModelCard] = (),
    ) -> ServerState:
        models = ServedModels(
            engine,
            config.model_name,
            embedding_name=config.embedding_model,
            embedder_factory=embedder_factory,
            cards=cards,
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
