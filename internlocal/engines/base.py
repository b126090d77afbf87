"""The one ``Engine`` protocol every model runtime implements, and the ``Embedder`` protocol.

Chat, the server, evaluation and the agent all go through these. An engine declares what it can
do in ``capabilities``; asking for anything else raises ``Unsupported`` (one clear sentence).

Messages are OpenAI-shaped dicts (``{"role": "user", "content": "…"}``) so that the server can
pass requests through unchanged.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from internlocal.errors import Unsupported
from internlocal.i18n import N_, _

Message = dict[str, Any]


class Capability(StrEnum):
    """What an engine can do beyond the protocol's shape; each value names the method(s) it unlocks.

    A new ability becomes a value here with its method or parameter on ``Engine`` when an engine really
    implements it (not before).
    """

    CHAT = "chat"  # streamed, cancellable chat through the model's own template
    COMPLETION = "completion"  # raw text continuation
    TOKENIZE = "tokenize"  # tokenize / detokenize
    LOGLIKELIHOOD = "loglikelihood"  # log P(continuation | context), rolling log-likelihood
    CONSTRAINED = "constrained"  # response_format json_object / json_schema, GBNF grammars
    TOOLS = "tools"  # tool calls
    PROMPT_LOGPROBS = "prompt_logprobs"  # prompt_logprobs(): each prompt token's log-probability (echo + logprobs)
    LOGPROBS = "logprobs"  # GenerationParams.logprobs: each generated token's log-probability and alternatives
    VISION = "vision"  # image content parts in chat messages (engines/images.py); others refuse them by name


# GenerationParams fields beyond temperature/top_p/top_k/repeat_penalty/max_tokens/seed/stop that an
# engine honours only if it lists them in ``sampling_fields``; a request that sets one it does not list
# is refused by name (``EngineBase.check``), never silently sampled without it.
OPTIONAL_SAMPLING = ("frequency_penalty", "presence_penalty", "min_p", "logit_bias")


@dataclass(frozen=True)
class RepetitionGuard:
    """When a generation is repeating itself: a loop the model will not leave on its own (small models
    do this: "The answer is 12345678." until the token limit).

    Two rules, on the text as it streams:
    - the text ends with one unit said ``repeats`` times in a row, and at least ``repeats`` × ``min_span``
      characters of it (a greedy loop is exactly periodic: "The answer is 12345678. " three times, or
      "Cat,\n" ten times);
    - one sentence or line of at least ``min_span`` characters has occurred ``sentence_repeats`` times, and
      since it was first said at least half of the sentences are ones said before (a sampled loop varies
      what lies between its copies; an answer that lists passages under one repeated heading says
      something new under each, and is left alone).
    A unit without a letter or digit is left alone: a Markdown table rule or a line of dashes is
    periodic on purpose.
    """

    min_span: int = 16
    repeats: int = 3
    sentence_repeats: int = 4
    max_period: int = 400  # characters: longer loops are caught by the sentence rule

    def watch(self) -> RepetitionWatch:
        return RepetitionWatch(self)


class RepetitionWatch:
    """One generation's watch: ``feed`` each piece; True once the text loops."""

    _SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])|\n+")  # Chinese puts no space after a sentence

    def __init__(self, guard: RepetitionGuard):
        self.guard = guard
        self.text = ""
        self._counts: dict[str, int] = {}  # long sentences → times said
        self._said: list[str] = []  # every finished sentence, in order
        self._done = 0  # characters already split into finished sentences

    def feed(self, piece: str) -> bool:
        self.text += piece
        looped = self._periodic() or self._sentence_repeated()
        keep = self.guard.repeats * self.guard.max_period + 8  # what the periodic rule can look back on
        if len(self.text) > 2 * keep:
            cut = len(self.text) - keep
            self.text, self._done = self.text[cut:], max(0, self._done - cut)
        return looped

    def _periodic(self) -> bool:
        g, text = self.guard, self.text
        n = len(text)
        if n < g.repeats * g.min_span:
            return False
        # a loop of period p repeats the text's last characters p earlier: only those p are tried (found with
        # rfind, in C), so ordinary text costs a few microseconds a piece, not one comparison per period
        key = text[-4:]
        start = max(0, n - len(key) - g.max_period)
        at = text.rfind(key, start, n - 1)
        while at >= 0:
            period = n - len(key) - at
            need = g.repeats * max(period, g.min_span)  # the loop's length before it counts
            if need > n:
                return False
            tail = text[-need:]
            if tail[period:] == tail[:-period] and any(c.isalnum() for c in tail[-period:]):  # ``period``-periodic
                return True
            at = text.rfind(key, start, at + len(key) - 1)
        return False

    def _sentence_repeated(self) -> bool:
        g = self.guard
        parts = self._SENTENCE_END.split(self.text[self._done :])
        if len(parts) < 2:
            return False
        finished = parts[:-1]  # the last part may still grow
        self._done = len(self.text) - len(parts[-1])
        for sentence in finished:
            key = " ".join(sentence.split()).lower()
            if not key:
                continue
            self._said.append(key)
            if len(key) < g.min_span or not any(c.isalnum() for c in key):
                continue
            self._counts[key] = self._counts.get(key, 0) + 1
            if self._counts[key] >= g.sentence_repeats:
                since = self._said[self._said.index(key) :]
                if 2 * (len(since) - len(set(since))) >= len(since):
                    return True
        return False


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
    # OpenAI's penalties: subtract frequency_penalty × count and presence_penalty × (count > 0) from a token's logit
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    min_p: float = Field(0.0, ge=0.0, le=1.0, description="drop tokens below min_p × the likeliest's probability")
    logit_bias: dict[int, float] = Field(default_factory=dict, description="token id → added to its logit")
    logprobs: int | None = Field(None, ge=0, le=20, description="report each token's log-probability and the top n")
    stop_on_repetition: bool = Field(True, description="end a generation that repeats itself (off for evaluation)")

    @field_validator("logit_bias")
    @classmethod
    def _bias_range(cls, bias: dict[int, float]) -> dict[int, float]:
        for token, value in bias.items():
            if not -100 <= value <= 100:
                raise ValueError(f"the bias for token {token} must be between -100 and 100")
        return bias

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
            raise UserError(_("Invalid {field}: {problem}.").format(field=field, problem=err["msg"].lower())) from None

    @classmethod
    def greedy(cls, **overrides: Any) -> GenerationParams:
        return cls(temperature=0.0, top_k=1, repeat_penalty=1.0, **overrides)

    def watch(self) -> RepetitionWatch | None:
        return RepetitionGuard().watch() if self.stop_on_repetition else None


# how every front end says why a generation ended early with finish_reason "repetition" (shown through _())
REPETITION_NOTE = N_("stopped: the answer was repeating itself")


@dataclass
class GenerationResult:
    text: str = ""
    finish_reason: str = "stop"  # stop | length | cancelled | tool_calls | repetition (RepetitionGuard ended it)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None  # call to first piece of text
    decode_tokens_per_s: float | None = None  # completion tokens after the first, per second
    total_s: float = 0.0
    tool_calls: list[dict[str, Any]] | None = None
    logprobs: list[TokenLogprob] | None = None  # per generated token, when GenerationParams.logprobs is set


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
    data: bytes | None = None  # the token's own bytes (a token may hold part of a UTF-8 character)


def top_logprobs(row, n: int, piece_of: Callable[[int], bytes]) -> dict[str, float]:
    """The ``n`` likeliest tokens of a log-probability row (numpy), as text → log-probability."""
    import numpy as np

    if n <= 0:
        return {}
    best = np.argpartition(-row, n)[:n]
    return {piece_of(int(t)).decode("utf-8", errors="replace"): float(row[t]) for t in best[np.argsort(-row[best])]}


class GeneratedLogprobs:
    """Each generated token's log-probability and its ``top`` likeliest alternatives, from the logits that
    chose it: the model's own distribution, before penalties, biases, grammar and temperature (as OpenAI's)."""

    def __init__(self, top: int, piece_of: Callable[[int], bytes]):
        self.top, self.piece_of = top, piece_of
        self.tokens: list[TokenLogprob] = []
        self._raw = b""

    def add(self, logits, token: int) -> None:
        """``logits``: the raw row (numpy or anything ``np.asarray`` takes) that chose ``token``."""
        import numpy as np

        row = np.asarray(logits, dtype=np.float64)
        peak = row.max()
        row = row - (peak + np.log(np.exp(row - peak).sum()))  # log-softmax
        piece = self.piece_of(token)
        offset = len(self._raw.decode("utf-8", errors="ignore"))
        self._raw += piece
        self.tokens.append(
            TokenLogprob(
                piece.decode("utf-8", errors="replace"),
                float(row[token]),
                top_logprobs(row, self.top, self.piece_of),
                offset,
                piece,
            )
        )


class CancelAlso(threading.Event):
    """A generation's cancel event that also cancels ``target`` (anything with ``cancel()``): a stream built on top
    of another generation or an agent stops what it waits on, not only its own next piece."""

    def __init__(self, target: Any) -> None:
        super().__init__()
        self.target = target

    def set(self) -> None:
        super().set()
        self.target.cancel()


class Generation:
    """A streamed generation: iterate for text pieces; ``result`` is set when iteration ends.

    ``cancel()`` may be called from any thread; the stream then ends at the next token with
    ``finish_reason == "cancelled"`` and the text produced so far. With a ``watch`` (from
    ``GenerationParams.watch()``) a generation that loops is ended the same way and reported as
    ``finish_reason == "repetition"``, its text what was streamed; every engine's generations go
    through here, so every path (chat, agent, knowledge base, server) stops loops alike.
    """

    def __init__(
        self,
        producer: Generator[str, None, GenerationResult],
        cancel_event: threading.Event,
        watch: RepetitionWatch | None = None,
        logprobs: GeneratedLogprobs | None = None,
    ):
        self._producer = producer
        self._cancel = cancel_event
        self._watch = watch
        self._looped = False
        self.result: GenerationResult | None = None
        # with GenerationParams.logprobs: one entry per generated token, filled as the tokens come (a stream
        # sends the new ones with each piece; ``result.logprobs`` holds them all at the end)
        self.token_logprobs: list[TokenLogprob] | None = logprobs.tokens if logprobs is not None else None

    def __iter__(self) -> Generator[str, None, GenerationResult]:
        if self._watch is None:
            self.result = yield from self._producer
            return self.result
        shown: list[str] = []
        producer = self._producer
        try:
            while True:
                piece = next(producer)
                if self._looped:
                    continue  # decoded before the cancel reached the engine: not shown
                shown.append(piece)
                yield piece
                if self._watch.feed(piece):
                    self._looped = True
                    self._cancel.set()
        except StopIteration as end:
            result: GenerationResult = end.value
        if self._looped:
            result.finish_reason = "repetition"
            result.text = "".join(shown)
            if result.logprobs is not None:  # only the tokens of the text shown
                result.logprobs = [t for t in result.logprobs if t.offset < len(result.text)]
        self.result = result
        return result

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set() and not self._looped

    def collect(self) -> GenerationResult:
        """Run to the end and return the result (text included)."""
        for __ in self:
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
    engine_name: str  # the runtime, for messages ("llama.cpp"; a description in words is marked with N_())
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
    sampling_fields: frozenset[str] = frozenset()  # which of OPTIONAL_SAMPLING this engine honours
    context_length: int = 0
    engine_name: str = "engine"

    def require(self, capability: Capability) -> None:
        if capability not in self.capabilities:
            raise Unsupported(
                _(
                    "The {engine} engine cannot do {capability} with {model}; choose another engine or model for this."
                ).format(engine=_(self.engine_name), capability=capability.value, model=self.model_name)
            )

    def check(self, params: GenerationParams) -> GenerationParams:
        """``params`` if this engine honours every field set in them; else ``Unsupported`` naming the field."""
        for name in OPTIONAL_SAMPLING:
            if name not in self.sampling_fields and getattr(params, name):
                raise Unsupported(
                    _("The {engine} engine does not support {name}; leave it out or choose another engine.").format(
                        engine=_(self.engine_name), name=name
                    ),
                    field=name,
                )
        if params.logprobs is not None:
            self.require(Capability.LOGPROBS)
        return params

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
