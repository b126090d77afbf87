"""The one ``Engine`` protocol every model runtime implements, and the ``Embedder`` protocol.

Chat, the server, evaluation and the agent all go through these. An engine declares what it can
do in ``capabilities``; asking for anything else raises ``Unsupported`` (one clear sentence).

Messages are OpenAI-shaped dicts (``{"role": "user", "content": "…"}``) so that the server can
pass requests through unchanged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from internlocal.errors import Unsupported

Message = dict[str, Any]


class Capability(StrEnum):
    """What an engine can do beyond the protocol's shape; each value names the method(s) it unlocks.

    Coming next, each as a value here with its method or parameter on ``Engine`` when an engine
    really implements it (not before): ``vision`` (image content parts in chat messages) and
    ``logprobs`` (log-probabilities of generated tokens, with the top alternatives).
    """

    CHAT = "chat"  # streamed, cancellable chat through the model's own template
    COMPLETION = "completion"  # raw text continuation
    TOKENIZE = "tokenize"  # tokenize / detokenize
    LOGLIKELIHOOD = "loglikelihood"  # log P(continuation | context), rolling log-likelihood
    CONSTRAINED = "constrained"  # response_format json_object / json_schema, GBNF grammars
    TOOLS = "tools"  # tool calls
    PROMPT_LOGPROBS = "prompt_logprobs"  # prompt_logprobs(): each prompt token's log-probability (echo + logprobs)


class GenerationParams(BaseModel):
    """Sampling parameters, validated; the chat editor, CLI and server all build these."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(0.7, ge=0.0, le=2.0, description="0 = greedy")
    top_p: float = Field(0.95, gt=0.0, le=1.0)
    top_k: int = Field(40, ge=0, description="0 = no top-k cut")
    repeat_penalty: float = Field(1.1, ge=0.5, le=2.0)
    max_tokens: int = Field(512, ge=1, le=1 << 20)
    seed: int | None = Field(None, description="fixed seed for reproducible sampling")
    stop: list[str] = Field(default_factory=list)

    @classmethod
    def from_user(cls, **values: Any) -> GenerationParams:
        """Validate values a person typed; a bad one raises ``UserError`` naming the field."""
        from pydantic import ValidationError

        from internlocal.errors import UserError

        try:
            return cls(**values)
        except ValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "parameters"
            raise UserError(f"Invalid {field}: {err['msg'].lower()}.") from None

    @classmethod
    def greedy(cls, **overrides: Any) -> GenerationParams:
        return cls(temperature=0.0, top_k=1, repeat_penalty=1.0, **overrides)


@dataclass
class GenerationResult:
    text: str = ""
    finish_reason: str = "stop"  # stop | length | cancelled | tool_calls
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None  # call to first piece of text
    decode_tokens_per_s: float | None = None  # completion tokens after the first, per second
    total_s: float = 0.0
    tool_calls: list[dict[str, Any]] | None = None


@dataclass
class LogLikelihood:
    logprob: float  # sum of log P over the continuation's tokens
    is_greedy: bool  # every continuation token was the argmax
    n_tokens: int


@dataclass
class TokenLogprob:
    """One token of a scored prompt, as an OpenAI ``logprobs`` entry carries it."""

    token: str
    logprob: float | None  # None for a first token nothing predicts
    top: dict[str, float]  # the most likely tokens at this position
    offset: int  # character offset of the token in the text


class Generation:
    """A streamed generation: iterate for text pieces; ``result`` is set when iteration ends.

    ``cancel()`` may be called from any thread; the stream then ends at the next token with
    ``finish_reason == "cancelled"`` and the text produced so far.
    """

    def __init__(self, producer: Generator[str, None, GenerationResult], cancel_event: threading.Event):
        self._producer = producer
        self._cancel = cancel_event
        self.result: GenerationResult | None = None

    def __iter__(self) -> Generator[str, None, GenerationResult]:
        self.result = yield from self._producer
        return self.result

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def collect(self) -> GenerationResult:
        """Run to the end and return the result (text included)."""
        for _ in self:
            pass
        assert self.result is not None
        return self.result


@dataclass
class StreamTimer:
    """Timings every engine reports the same way: TTFT from the call, decode rate after the first token."""

    started: float = field(default_factory=time.perf_counter)
    first: float | None = None
    last: float | None = None
    tokens: int = 0

    def token(self) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        self.last = now
        self.tokens += 1

    def fill(self, result: GenerationResult) -> GenerationResult:
        result.completion_tokens = self.tokens
        result.total_s = time.perf_counter() - self.started
        if self.first is not None:
            result.ttft_s = self.first - self.started
            if self.tokens > 1 and self.last and self.last > self.first:
                result.decode_tokens_per_s = (self.tokens - 1) / (self.last - self.first)
        return result


class TextAssembler:
    """Token bytes → text pieces: UTF-8 split across tokens, and stop strings cut before they show.

    Text that could be the start of a stop string is held back until it cannot be.
    """

    def __init__(self, stop: Sequence[str]):
        import codecs

        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops = [s for s in stop if s]
        self._hold = max((len(s) for s in self._stops), default=1) - 1
        self._pending = ""
        self.pieces: list[str] = []
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add one token's bytes; returns the text that can be shown now (may be empty)."""
        self._pending += self._decoder.decode(data)
        cuts = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if cuts:
            self._pending = self._pending[: min(cuts)]
            self.stopped = True
            return ""
        emit = self._pending[: len(self._pending) - self._hold] if self._hold else self._pending
        self._pending = self._pending[len(emit) :]
        if emit:
            self.pieces.append(emit)
        return emit

    def flush(self) -> str:
        """What is left at the end (held-back text and an unfinished UTF-8 sequence)."""
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest:
            self.pieces.append(rest)
        return rest

    @property
    def text(self) -> str:
        return "".join(self.pieces)


@runtime_checkable
class Engine(Protocol):
    """A loaded model that can generate (and, per its capabilities, score, constrain, call tools)."""

    model_name: str
    engine_name: str  # the runtime, for messages ("llama.cpp")
    capabilities: frozenset[Capability]
    context_length: int

    def chat(
        self,
        messages: Sequence[Message],
        params: GenerationParams | None = None,
        *,
        response_format: dict[str, Any] | None = None,
        tools: Sequence[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> Generation: ...

    def complete(
        self, prompt: str, params: GenerationParams | None = None, *, response_format: dict[str, Any] | None = None
    ) -> Generation: ...

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]: ...

    def detokenize(self, tokens: Sequence[int]) -> str: ...

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLikelihood]: ...

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]: ...

    def prompt_logprobs(self, text: str, top: int = 0, *, next_token: bool = False) -> list[TokenLogprob]:
        """Each token of ``text`` with its log-probability given the ones before it, and the ``top`` likeliest
        tokens there; ``next_token`` appends the greedy next token (capability ``prompt_logprobs``)."""
        ...

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a free slot (0 for an engine that does not queue)."""
        ...

    def close(self) -> None: ...


class EngineBase:
    """Shared behaviour: capability checks and ``Unsupported`` for whatever an engine lacks."""

    model_name: str = ""
    capabilities: frozenset[Capability] = frozenset()
    context_length: int = 0
    engine_name: str = "engine"

    def require(self, capability: Capability) -> None:
        if capability not in self.capabilities:
            raise Unsupported(
                f"The {self.engine_name} engine cannot do {capability.value} with {self.model_name}; "
                "choose another engine or model for this."
            )

    def chat(self, messages, params=None, *, response_format=None, tools=None, tool_choice=None) -> Generation:
        self.require(Capability.CHAT)
        raise NotImplementedError

    def complete(self, prompt, params=None, *, response_format=None) -> Generation:
        self.require(Capability.COMPLETION)
        raise NotImplementedError

    def tokenize(self, text, *, add_special=False) -> list[int]:
        self.require(Capability.TOKENIZE)
        raise NotImplementedError

    def detokenize(self, tokens) -> str:
        self.require(Capability.TOKENIZE)
        raise NotImplementedError

    def loglikelihood(self, requests) -> list[LogLikelihood]:
        self.require(Capability.LOGLIKELIHOOD)
        raise NotImplementedError

    def loglikelihood_rolling(self, texts) -> list[float]:
        self.require(Capability.LOGLIKELIHOOD)
        raise NotImplementedError

    def prompt_logprobs(self, text, top=0, *, next_token=False) -> list[TokenLogprob]:
        self.require(Capability.PROMPT_LOGPROBS)
        raise NotImplementedError

    @property
    def queue_depth(self) -> int:
        return 0  # engines that serve one request at a time queue nothing; the batched one overrides this

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@runtime_checkable
class Embedder(Protocol):
    """Text → vectors. Separate from ``Engine``: embedding models do not generate."""

    model_name: str
    dimension: int

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads for ``texts`` together, by its own tokenizer, special tokens included and
        truncated as ``embed`` truncates (what OpenAI's embeddings ``usage`` reports). Raises ``Unsupported``
        when the model cannot tell (a remote endpoint that reports no usage)."""
        ...
