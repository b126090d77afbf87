"""The models a server answers with: loaded on demand, kept within a budget, unloaded when idle (Ollama's way).

``ServedModels`` is the one object routes ask for an engine or an embedder by the request's ``model``
name; routes never hold one of their own. The model ``serve`` was started with is loaded first and
stays until a request's ``keep_alive`` says otherwise; any other catalog model a request names is
loaded then (with a loader, i.e. under ``internlocal serve``), kept for ``keep_alive`` after its last
use (5 minutes by default, Ollama's), and the least recently used one is unloaded when loading one
more would pass ``max_loaded`` models or the memory budget.

An unloaded model is closed only once it is idle (its engine has no request decoding or queued), so a
request that got its engine just before cannot see it closed under it; a reaper thread does that and
the ``keep_alive`` expiries.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from internlocal.engines.base import Embedder, Engine
from internlocal.errors import NotEnoughMemory, Unsupported
from internlocal.server.openai_schema import APIError

DEFAULT_KEEP_ALIVE_S = 300.0  # Ollama's default: five minutes after the last request


@dataclass
class ModelCard:
    """What clients are told about a model (``/api/tags``, ``/api/show``, ``/api/ps``): catalog facts."""

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
    sampling: dict[str, Any] = field(default_factory=dict)  # recommended; used for what a request does not set
    expires_at: float | None = None  # a loaded model: when it will be unloaded (None: not while the server runs)

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
            sampling=row.sampling,
        )


@dataclass(eq=False)
class LoadedModel:
    """A model in memory: its engine (chat) or embedder, how to close it, and about how much memory it holds."""

    card: ModelCard
    engine: Engine | None = None
    embedder: Embedder | None = None
    close: Callable[[], None] = lambda: None
    size: int = 0  # bytes, estimated before loading (weights + KV cache)
    keep_alive: float | None = None  # seconds after the last use; None: while the server runs
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)  # an embedder is used by one request at a time

    def idle(self) -> bool:
        if self.engine is not None:
            return getattr(self.engine, "active", 0) == 0 and self.engine.queue_depth == 0
        return not self.lock.locked()

    def expires_at(self) -> float | None:
        if self.keep_alive is None:
            return None
        return time.time() + self.keep_alive - (time.monotonic() - self.last_used)


Loader = Callable[[ModelCard], LoadedModel]


def keep_alive_seconds(value: float | str | None, default: float | None) -> float | None:
    """Ollama's ``keep_alive``: seconds (a number) or a Go duration ("5m", "1h30m", "10s"); negative keeps the
    model while the server runs (None), 0 unloads it after the request."""
    if value is None:
        return default
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = re.fullmatch(r"(-)?((?:\d+(?:\.\d+)?(?:h|ms|m|s))+)", text)
            if not parts:
                raise APIError(
                    400, f"keep_alive {value!r} is not a duration such as 30s, 5m or 1h; -1 keeps the model loaded.",
                    param="keep_alive",
                ) from None  # fmt: skip
            units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
            seconds = sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", parts.group(2)))
            seconds = -seconds if parts.group(1) else seconds
    return None if seconds < 0 else seconds


class ServedModels:
    """The models this server answers with (see the module's docstring)."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        *,
        embedding_name: str | None = None,
        embedder_factory: Callable[[], Embedder] | None = None,
        cards: Sequence[ModelCard] | Callable[[], Sequence[ModelCard]] = (),
        loader: Loader | None = None,
        max_loaded: int = 3,
        memory_budget: int | None = None,
        keep_alive: float | None = DEFAULT_KEEP_ALIVE_S,
        estimate: Callable[[ModelCard], int] = lambda card: card.size_bytes or 0,
        close_first: Callable[[], None] = lambda: None,
    ):
        self.name = name  # the model requests without a name (or "default") get
        self.embedding_name = embedding_name
        self._embedder_factory = embedder_factory
        self._cards_source = cards if callable(cards) else (lambda: cards)
        self._loader = loader
        self.max_loaded = max(1, max_loaded)
        self.memory_budget = memory_budget
        self.keep_alive = keep_alive
        self._estimate = estimate  # bytes a model will hold once loaded (weights + KV cache)
        self._lock = threading.RLock()
        self._loading: dict[str, asyncio.Lock] = {}
        self._loaded: OrderedDict[str, LoadedModel] = OrderedDict()  # least recently used first
        self._closing: list[LoadedModel] = []  # unloaded, closed once idle
        first = self._card(name) or ModelCard(name)
        first.context_length = first.context_length or engine.context_length
        size = self._estimate(first) if loader is not None else 0
        self._loaded[name] = LoadedModel(first, engine=engine, close=close_first, size=size, keep_alive=None)
        self._stop = threading.Event()
        self._reaper: threading.Thread | None = None
        if loader is not None:
            self._reaper = threading.Thread(target=self._reap, name="model-reaper", daemon=True)
            self._reaper.start()

    # -- what is served --------------------------------------------------------------------------------------

    def cards(self) -> list[ModelCard]:
        """Every model this server can answer with, as its clients see it (the loaded ones with their expiry)."""
        found = {c.name: c for c in self._cards_source()}
        with self._lock:
            for loaded in self._loaded.values():
                found.setdefault(loaded.card.name, loaded.card)
        if self.embedding_name and self.embedding_name not in found:
            found[self.embedding_name] = ModelCard(self.embedding_name, kind="embedding")
        if self._loader is None:  # nothing else can be loaded: only what is served
            found = {n: c for n, c in found.items() if n in (self.name, self.embedding_name)}
        return list(found.values())

    def names(self) -> list[str]:
        """What ``GET /v1/models`` lists: the default model first."""
        names = [c.name for c in self.cards()]
        return sorted(names, key=lambda n: (n != self.name, n != self.embedding_name, n))

    def card(self, requested: str) -> ModelCard:
        found = self._card(self._resolve(requested))
        if found is None:
            raise self._not_found(requested)
        return found

    def loaded(self) -> list[ModelCard]:
        """The models in memory now, most recently used first, each with when it will be unloaded."""
        with self._lock:
            out = []
            for loaded in reversed(self._loaded.values()):
                loaded.card.expires_at = loaded.expires_at()
                out.append(loaded.card)
        return out

    @property
    def engine(self) -> Engine | None:
        """The default model's engine while it is loaded (metrics read its scheduler's counters)."""
        with self._lock:
            loaded = self._loaded.get(self.name)
        return loaded.engine if loaded else None

    def queue_depth(self) -> int:
        with self._lock:
            return sum(m.engine.queue_depth for m in self._loaded.values() if m.engine is not None)

    # -- engines and embedders -------------------------------------------------------------------------------

    async def engine_for(self, requested: str | None) -> tuple[str, Engine]:
        """The served name and engine for a request's ``model`` (absent or ``"default"``: the default one), loaded
        first if it is a catalog model not in memory."""
        name = self._resolve(requested)
        loaded = await self._get(name, "chat")
        assert loaded.engine is not None
        return name, loaded.engine

    async def embed(self, requested: str | None, texts: Sequence[str]) -> tuple[str, list[list[float]], int]:
        """(name, vectors, tokens the model read) from the embedding model a request names (absent: the default).
        An embedder that cannot count (a remote endpoint that reports no usage) counts 0 tokens."""
        name = requested if requested and requested != "default" else self.embedding_name
        if self._embedder_factory is not None and self.embedding_name is None:
            name = ""  # an unnamed embedder answers for any name
        if name is None:
            raise APIError(404, "This server has no embedding model.", code="model_not_found", param="model")
        loaded = await self._get(name, "embedding")

        def run() -> tuple[list[list[float]], int]:
            with loaded.lock:
                assert loaded.embedder is not None
                vectors = loaded.embedder.embed(texts)
                try:
                    tokens = loaded.embedder.count_tokens(texts)
                except Unsupported:
                    tokens = 0
            return vectors, tokens

        vectors, tokens = await asyncio.to_thread(run)
        self._touch(loaded)
        return name, vectors, tokens

    def used(self, requested: str | None, keep_alive: float | str | None) -> None:
        """A request's Ollama ``keep_alive`` for the model it used (0: unload it once it is idle)."""
        if keep_alive is None:
            return
        seconds = keep_alive_seconds(keep_alive, self.keep_alive)
        with self._lock:
            loaded = self._loaded.get(self._resolve(requested))
            if loaded is not None:
                loaded.keep_alive, loaded.last_used = seconds, time.monotonic()

    def close(self) -> None:
        """Unload everything (the server is stopping)."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(5)
        with self._lock:
            every = list(self._loaded.values()) + self._closing
            self._loaded.clear()
            self._closing = []
        for loaded in every:
            loaded.close()

    # -- loading and unloading -------------------------------------------------------------------------------

    def _resolve(self, requested: str | None) -> str:
        return self.name if not requested or requested == "default" else requested

    def _card(self, name: str) -> ModelCard | None:
        with self._lock:
            if name in self._loaded:
                return self._loaded[name].card
        return next((c for c in self.cards() if c.name == name), None) if name else None

    def _touch(self, loaded: LoadedModel) -> None:
        with self._lock:
            loaded.last_used = time.monotonic()
            if loaded.card.name in self._loaded:
                self._loaded.move_to_end(loaded.card.name)

    async def _get(self, name: str, kind: str) -> LoadedModel:
        with self._lock:
            loaded = self._loaded.get(name)
        if loaded is not None:
            self._touch(loaded)
            return loaded
        factory = self._embedder_factory
        if kind == "embedding" and name in ("", self.embedding_name) and factory is not None:

            def make() -> LoadedModel:
                card = self._card(name) or ModelCard(name, kind="embedding")
                return LoadedModel(card, embedder=factory(), keep_alive=None)

        else:
            card = self._card(name)
            if card is None or self._loader is None:
                raise self._not_found(name)
            if card.kind != kind:
                raise APIError(
                    400,
                    f"{name} is {'an embedding' if card.kind == 'embedding' else 'a chat'} model; "
                    f"{'embed with it' if card.kind == 'embedding' else 'chat with it'} instead.",
                    param="model",
                )
            loader = self._loader

            def make() -> LoadedModel:
                return self._load(card, loader)

        lock = self._loading.setdefault(name, asyncio.Lock())
        async with lock:  # one load per model however many requests ask at once
            with self._lock:
                loaded = self._loaded.get(name)
            if loaded is None:
                loaded = await asyncio.to_thread(make)
                with self._lock:
                    self._loaded[name] = loaded
        self._touch(loaded)
        return loaded

    def _load(self, card: ModelCard, loader: Loader) -> LoadedModel:
        """Make room, then load; a load the free memory refuses unloads every idle model and tries once more."""
        estimate = self._estimate(card)
        if self.memory_budget is not None and estimate > self.memory_budget:
            raise APIError(
                503,
                f"{card.name} needs about {estimate / 2**20:.0f} MiB, more than this server's model memory budget of "
                f"{self.memory_budget / 2**20:.0f} MiB (serve --models-memory-mb).",
                type_="server_busy",
                code="model_too_large",
            )
        self._make_room(estimate)
        try:
            loaded = loader(card)
        except NotEnoughMemory:
            with self._lock:
                idle = [m for m in self._loaded.values() if m.idle()]
            if not idle:
                raise
            for victim in idle:
                self._unload(victim)
            self._close_idle(wait=True)
            loaded = loader(card)
        if loaded.keep_alive is None and self.keep_alive is not None:
            loaded.keep_alive = self.keep_alive
        return loaded

    def _make_room(self, size: int) -> None:
        with self._lock:
            while self._loaded and (
                len(self._loaded) >= self.max_loaded
                or (self.memory_budget is not None and self._used() + size > self.memory_budget)
            ):
                self._unload(next(iter(self._loaded.values())))  # the least recently used
        self._close_idle(wait=True)

    def _used(self) -> int:
        return sum(m.size for m in self._loaded.values())

    def _unload(self, loaded: LoadedModel) -> None:
        with self._lock:
            if self._loaded.get(loaded.card.name) is loaded:
                del self._loaded[loaded.card.name]
                self._closing.append(loaded)
                loaded.card.expires_at = None

    def _close_idle(self, *, wait: bool = False) -> None:
        """Close the unloaded models that are idle; with ``wait``, give busy ones a few seconds to finish."""
        deadline = time.monotonic() + (30 if wait else 0)
        while True:
            with self._lock:
                ready = [m for m in self._closing if m.idle()]
                self._closing = [m for m in self._closing if m not in ready]
                busy = bool(self._closing)
            for loaded in ready:
                loaded.close()
            if not busy or time.monotonic() >= deadline:
                return
            time.sleep(0.05)

    def _reap(self) -> None:
        """Unload models whose keep_alive has passed (once idle), and close unloaded ones once idle."""
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self._lock:
                for loaded in list(self._loaded.values()):
                    if not loaded.idle():
                        loaded.last_used = now  # keep_alive counts from the end of the last request
                    elif loaded.keep_alive is not None and now - loaded.last_used >= loaded.keep_alive:
                        self._unload(loaded)
            self._close_idle()

    def _not_found(self, requested: str) -> APIError:
        served = ", ".join(repr(n) for n in self.names()) or "nothing"
        return APIError(
            404,
            f"The model {requested!r} does not exist here; this server serves {served} (GET /v1/models).",
            code="model_not_found",
            param="model",
        )
