"""llama.cpp with continuous batching: several requests decode together, one sequence per slot.

``BatchedLlamaCpp`` wraps a loaded ``LlamaCppEngine``: it creates a second llama.cpp context on
the same model weights with one KV sequence per slot, and a scheduler thread that, at every
step, puts one token from each generating slot and a chunk of each new prompt into a single
``llama_decode`` call, then samples every slot with its own sampler chain (grammar, penalties,
top-k/top-p/temperature, seed). Aggregate throughput therefore grows with concurrency, as in
llama-server. Everything else (tokenize, log-likelihood, templates) is the wrapped engine's.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from internlocal.engines.base import (
    OPTIONAL_SAMPLING,
    Capability,
    EngineBase,
    GeneratedLogprobs,
    Generation,
    GenerationParams,
    GenerationResult,
    StreamTimer,
    TextAssembler,
)
from internlocal.engines.images import has_images, text_only
from internlocal.engines.llamacpp import (
    LlamaCppEngine,
    check_bias,
    grammar_for,
    kv_cache_type,
    token_bytes,
)
from internlocal.engines.mtmd import MediaPrompt
from internlocal.errors import ContextOverflow, UserError
from internlocal.i18n import N_, _

log = logging.getLogger(__name__)


@dataclass
class _Request:
    prompt: list[int]
    params: GenerationParams
    grammar: str | None
    logprobs: GeneratedLogprobs | None = None
    media: MediaPrompt | None = None  # a prompt with images: its chunks up to the last image are put by mtmd
    out: queue.Queue = field(default_factory=queue.Queue)  # ("piece", str) … then ("done", GenerationResult)
    cancel: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.perf_counter)


@dataclass
class SchedulerStats:
    """Where the scheduler's time goes, summed over its steps (the server exports these in /metrics)."""

    steps: int = 0
    batch_tokens: int = 0  # tokens decoded, prompt chunks included
    step_seconds: float = 0.0  # whole steps: admission, batch assembly, decode, sampling, delivery
    decode_seconds: float = 0.0  # inside llama_decode
    sample_seconds: float = 0.0  # choosing each slot's next token and handing its text over


@dataclass
class _Slot:
    seq: int
    request: _Request | None = None
    sampler: Any = None
    pending: list[int] = field(default_factory=list)  # prompt tokens not yet decoded
    position: int = 0
    last_token: int | None = None
    text: TextAssembler | None = None
    timer: StreamTimer | None = None
    logprobs: GeneratedLogprobs | None = None
    batch_index: int = -1  # where this slot's logits are in the current batch
    cached: list[int] = field(default_factory=list)  # tokens whose KV this slot holds (kept after a request)


@dataclass(eq=False)
class _SavedPrefix:
    """A sequence's KV kept in host memory after its slot moved on, to be restored into any slot later."""

    cached: list[int]
    state: Any  # the bytes of llama.cpp's sequence state (a ctypes array)
    size: int


class BatchedLlamaCpp(EngineBase):
    engine_name = N_("llama.cpp (batched)")
    base_capabilities = frozenset(
        {
            Capability.CHAT,
            Capability.COMPLETION,
            Capability.TOKENIZE,
            Capability.LOGLIKELIHOOD,
            Capability.CONSTRAINED,
            Capability.TOOLS,
            Capability.PROMPT_LOGPROBS,
            Capability.LOGPROBS,
        }
    )
    sampling_fields = frozenset(OPTIONAL_SAMPLING)

    def __init__(
        self,
        engine: LlamaCppEngine,
        *,
        slots: int = 4,
        ctx_per_slot: int | None = None,
        n_batch: int = 512,
        n_threads: int | None = None,
        kv_cache: str = "f16",
        prompt_cache_mb: int = 256,
    ):
        import llama_cpp

        from internlocal.engines.llamacpp import default_threads

        self.engine = engine
        self.model_name = engine.model_name
        # images when the wrapped engine has a projector (it tokenizes them; this engine puts them in its slots)
        self.capabilities = self.base_capabilities | (engine.capabilities & {Capability.VISION})
        self.slots_n = max(1, slots)
        self.context_length = ctx_per_slot or engine.context_length
        self.n_batch = n_batch
        model = engine._llm._model
        self._vocab = model.vocab
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = self.context_length * self.slots_n
        params.n_batch = n_batch
        params.n_ubatch = n_batch
        params.n_seq_max = self.slots_n
        params.kv_unified = False  # each sequence gets its own n_ctx / n_seq_max window
        threads = n_threads or default_threads()
        params.n_threads = threads
        params.n_threads_batch = threads
        params.no_perf = True
        kv_type = kv_cache_type(kv_cache)
        if kv_type is not None:  # slots' KV in 8 or 4 bits: 2-4x more slots in the same memory
            params.type_k = params.type_v = kv_type
            params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self._ctx = llama_cpp.llama_init_from_model(model.model, params)
        if not self._ctx:
            raise UserError(
                _(
                    "llama.cpp could not create a {slots}-slot context for {model}; lower --slots or the "
                    "context length."
                ).format(slots=self.slots_n, model=self.model_name)
            )
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(n_batch + self.slots_n, 0, self.slots_n)
        self._slots = [_Slot(seq=i) for i in range(self.slots_n)]
        self._waiting: queue.Queue[_Request] = queue.Queue()
        self._wake = threading.Event()
        self._closing = False
        self.active = 0
        self.reused_tokens = 0  # prompt tokens not decoded again thanks to the slots' caches
        self.copied_tokens = 0  # tokens of KV copied from one slot to another to reuse a prefix
        self.costs = CopyCosts()
        # sequences a slot gave up, kept in host memory like llama-server's --cache-ram (most recent last)
        self.prompt_cache_bytes = prompt_cache_mb * 2**20
        self._saved: list[_SavedPrefix] = []
        self.stats = SchedulerStats()
        self._thread = threading.Thread(target=self._loop, name="llama-batch", daemon=True)
        self._thread.start()

    # -- the Engine protocol -----------------------------------------------------------------------

    def render_chat(self, messages, tools=None):
        return self.engine.render_chat(messages, tools)

    def tokenize(self, text, *, add_special=False):
        return self.engine.tokenize(text, add_special=add_special)

    def detokenize(self, tokens):
        return self.engine.detokenize(tokens)

    @property
    def vocab_size(self) -> int:
        return self._n_vocab

    def loglikelihood(self, requests):
        return self.engine.loglikelihood(requests)

    def loglikelihood_rolling(self, texts):
        return self.engine.loglikelihood_rolling(texts)

    def prompt_logprobs(self, text, top=0, *, next_token=False):
        return self.engine.prompt_logprobs(text, top, next_token=next_token)

    def chat(self, messages, params=None, *, response_format=None, tools=None, tool_choice=None) -> Generation:
        params = params or GenerationParams()
        if has_images(messages) and self.engine.projector is not None:
            self.engine._require_images(tools)
            media = self.engine.fit_media(list(messages), params.max_tokens)
            return self._submit(media.tokens, params, response_format, media=media)
        messages = text_only(messages, self.model_name)
        if tools:
            from internlocal.engines.tool_calls import plan_tools

            plan = plan_tools(messages, tools, tool_choice, self.engine.chat_template)
            prompt = self.engine._fit_chat(plan.messages, params.max_tokens, tools=plan.template_tools)
            return plan.wrap(
                self._submit(prompt, params, {"type": "grammar", "grammar": plan.grammar} if plan.grammar else None)
            )
        prompt = self.engine._fit_chat(list(messages), params.max_tokens)
        return self._submit(prompt, params, response_format)

    def complete(self, prompt, params=None, *, response_format=None) -> Generation:
        params = params or GenerationParams()
        tokens = self.tokenize(prompt, add_special=True)
        if not tokens:  # a model without a BOS token has nothing to continue from
            raise UserError(_("The prompt is empty; send some text to continue."))
        if len(tokens) >= self.context_length:
            raise ContextOverflow(
                _("The prompt has {count} tokens but the context holds {context}; shorten it.").format(
                    count=len(tokens), context=self.context_length
                )
            )
        return self._submit(tokens, params, response_format)

    @property
    def prompt_cache_used(self) -> int:
        """Bytes of host memory the saved sequences take (at most ``prompt_cache_bytes``)."""
        return sum(saved.size for saved in self._saved)

    @property
    def queue_depth(self) -> int:
        return self._waiting.qsize()

    def check(self, params: GenerationParams) -> GenerationParams:
        check_bias(params, self._n_vocab)
        return super().check(params)

    def _submit(
        self, prompt: list[int], params: GenerationParams, response_format, media: MediaPrompt | None = None
    ) -> Generation:
        self.check(params)
        grammar = grammar_for(response_format) if response_format else None
        logprobs = GeneratedLogprobs(params.logprobs, self._piece) if params.logprobs is not None else None
        request = _Request(prompt=prompt, params=params, grammar=grammar, logprobs=logprobs, media=media)
        self._waiting.put(request)
        self._wake.set()
        return Generation(self._receive(request), request.cancel, params.watch(), logprobs)

    @staticmethod
    def _receive(request: _Request) -> Generator[str, None, GenerationResult]:
        while True:
            kind, value = request.out.get()
            if kind == "piece":
                yield value
            elif kind == "error":
                raise value
            else:
                return value

    def close(self) -> None:
        import llama_cpp

        if self._closing:
            return
        self._closing = True
        self._wake.set()
        self._thread.join(timeout=30)
        llama_cpp.llama_batch_free(self._batch)
        for slot in self._slots:
            if slot.sampler:
                llama_cpp.llama_sampler_free(slot.sampler)
        llama_cpp.llama_free(self._ctx)

    # -- the scheduler -----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._closing:
            try:
                self._step()
            except Exception as exc:  # a bug fails the requests under way, not the server (the thread goes on)
                log.exception("batch step failed")
                for slot in self._slots:
                    if slot.request is not None:
                        slot.request.out.put(("error", exc))
                        self._free(slot, keep_cache=False)

    def _step(self) -> None:
        import llama_cpp

        started = time.perf_counter()
        self._admit()
        busy = [s for s in self._slots if s.request is not None]
        self.active = len(busy)
        if not busy:
            self._wake.wait(0.5)
            self._wake.clear()
            return
        for slot in busy:
            if slot.request is not None and slot.request.cancel.is_set():
                self._finish(slot, "cancelled")
        busy = [s for s in self._slots if s.request is not None]
        if not busy:
            return
        self._fill_batch(busy)
        decode_started = time.perf_counter()
        code = llama_cpp.llama_decode(self._ctx, self._batch)
        decoded = time.perf_counter()
        if code != 0:
            error = UserError(_("llama.cpp could not decode (code {code}); the context may be full.").format(code=code))
            for slot in busy:
                if slot.request is not None:
                    slot.request.out.put(("error", error))
                self._free(slot, keep_cache=False)
            return
        for slot in busy:
            if slot.batch_index >= 0:
                self._sample(slot)
        ended = time.perf_counter()
        stats = self.stats
        stats.steps += 1
        stats.batch_tokens += self._batch.n_tokens
        stats.decode_seconds += decoded - decode_started
        stats.sample_seconds += ended - decoded
        stats.step_seconds += ended - started
        self.costs.decoded(self._batch.n_tokens, decoded - decode_started)

    def _admit(self) -> None:
        """Give waiting requests free slots, reusing the longest prefix of the prompt that any slot holds
        in its KV cache (a shared system prompt, or the earlier turns of a chat); see ``_place``."""
        import llama_cpp

        while True:
            free = [s for s in self._slots if s.request is None]
            if not free:
                return
            try:
                request = self._waiting.get_nowait()
            except queue.Empty:
                return
            if request.cancel.is_set():
                if request.media is not None:
                    request.media.close()
                request.out.put(
                    ("done", GenerationResult(finish_reason="cancelled", prompt_tokens=len(request.prompt)))
                )
                continue
            slot, source, prefix = self._place(request.prompt, free)
            prefix = min(prefix, len(request.prompt) - 1)  # the last prompt token is decoded again for its logits
            head = 0 if request.media is None else sum(c.n_tokens for c in request.media.head)
            if prefix < head:  # an image's KV is reused whole (same image bytes, same place) or put again from 0
                source, prefix = slot, 0
            self._save(slot, keep=prefix if source is slot else 0)
            if source is not slot and not self._copy_cache(source, slot):
                prefix = 0  # the copy failed (no room in the slot): decode the whole prompt
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq, prefix, -1)
            slot.cached = (source.cached if source is not slot else slot.cached)[:prefix]
            slot.request = request
            slot.pending = list(request.prompt[prefix:])
            slot.position = prefix
            if request.media is not None:
                try:
                    if head and prefix == 0:
                        self._put_media(slot, request.media)
                except Exception as exc:  # this request's images: it fails alone
                    request.out.put(("error", exc))
                    self._free(slot, keep_cache=False)
                    continue
                finally:
                    request.media.close()
            slot.last_token = None
            slot.text = TextAssembler(request.params.stop)
            slot.timer = StreamTimer(started=request.enqueued)
            slot.logprobs = request.logprobs
            try:
                slot.sampler = self._make_sampler(request)
            except Exception as exc:  # this request's settings: it fails alone (a UserError is the client's 400)
                request.out.put(("error", exc))
                self._free(slot, keep_cache=False)
                continue
            self.reused_tokens += prefix

    def _put_media(self, slot: _Slot, media: MediaPrompt) -> None:
        """Put the prompt's text and images up to its last image into the slot's sequence, here in the scheduler
        thread between two decode steps (the other slots wait for the image's encoding, as in llama-server); the
        text after the last image is left pending and joins the next batch like any prompt."""
        projector = self.engine.projector
        assert projector is not None
        started = time.perf_counter()
        position = projector.evaluate(self._ctx, media, seq=slot.seq, n_batch=self.n_batch, limit=self.context_length)
        head = [t for chunk in media.head for t in chunk.tokens]
        assert position == len(head), "mtmd gave the images a different number of positions than tokens"
        slot.cached = list(head)
        slot.position = position
        slot.pending = media.tail
        self.stats.batch_tokens += position
        self.costs.decoded(position, time.perf_counter() - started)

    def _place(self, prompt: list[int], free: list[_Slot]) -> tuple[_Slot, _Slot | _SavedPrefix, int]:
        """The free slot for a prompt, the cache it starts from, and how many tokens it reuses.

        Any slot, busy or free, and any sequence saved in host memory (``_save``) can lend its cached
        prefix: copying a sequence's KV into another slot costs about 2 ms per hundred tokens here,
        decoding them again about a quarter of a second. Copying is worth it when it costs less than
        decoding what it saves (``CopyCosts``); otherwise a free slot reuses only what it holds itself.
        The lowest-numbered free slot that reuses within ``MIN_GAIN`` tokens of the best wins: llama.cpp
        decodes the sequences of separate KV streams together only when their ids are consecutive
        (``split_equal``), so scattered busy slots would split every step into several smaller batches
        (measured: 8 scattered slots cost as much as 16 consecutive ones).
        """
        lenders: list[_Slot | _SavedPrefix] = [*self._slots, *self._saved]
        lender, lent = max(((s, _common_prefix(s.cached, prompt)) for s in lenders), key=lambda sp: sp[1])

        def reuse(slot: _Slot) -> tuple[int, _Slot | _SavedPrefix]:
            own = lent if slot is lender else _common_prefix(slot.cached, prompt)
            if lent > own and self.costs.worth_copying(lent - own, len(lender.cached)):
                return lent, lender
            return own, slot

        reuses = {s.seq: reuse(s) for s in free}
        best = max(prefix for prefix, __ in reuses.values())
        slot = next(s for s in free if reuses[s.seq][0] > best - MIN_GAIN)  # ``free`` is in slot order
        prefix, source = reuses[slot.seq]
        return slot, source, prefix

    def _copy_cache(self, source: _Slot | _SavedPrefix, target: _Slot) -> bool:
        """Replace ``target``'s KV cache with a copy of ``source``'s (through llama.cpp's sequence state)."""
        import llama_cpp

        started = time.perf_counter()
        if isinstance(source, _SavedPrefix):
            buffer, written = source.state, source.size
            if source in self._saved:  # (saving the target's own sequence may just have evicted it)
                self._saved.remove(source)
                self._saved.append(source)  # the most recently used is evicted last
        else:
            buffer, written = self._read_state(source.seq)
        llama_cpp.llama_memory_seq_rm(self._mem, target.seq, -1, -1)
        if written and llama_cpp.llama_state_seq_set_data(self._ctx, buffer, written, target.seq):
            self.copied_tokens += len(source.cached)
            self.costs.copied(len(source.cached), time.perf_counter() - started)
            return True
        llama_cpp.llama_memory_seq_rm(self._mem, target.seq, -1, -1)
        target.cached = []
        return False

    def _read_state(self, seq: int) -> tuple[Any, int]:
        import ctypes

        import llama_cpp

        size = llama_cpp.llama_state_seq_get_size(self._ctx, seq)
        buffer = (ctypes.c_uint8 * size)()
        return buffer, llama_cpp.llama_state_seq_get_data(self._ctx, buffer, size, seq)

    def _save(self, slot: _Slot, *, keep: int) -> None:
        """Keep ``slot``'s sequence in host memory before all but its first ``keep`` tokens are dropped.

        Only the lowest slots stay busy (see ``_place``), so without this a prompt seen a few requests
        ago would be gone from every slot. The oldest saved sequences go first when the memory is full.
        """
        lost = len(slot.cached) - keep
        if lost < MIN_GAIN or not self.costs.worth_copying(lost, len(slot.cached)):
            return
        if any(saved.cached == slot.cached for saved in self._saved):
            return
        started = time.perf_counter()
        buffer, written = self._read_state(slot.seq)
        if not written or written > self.prompt_cache_bytes:
            return
        self.costs.copied(len(slot.cached), time.perf_counter() - started)
        self._saved.append(_SavedPrefix(list(slot.cached), buffer, written))
        while self.prompt_cache_used > self.prompt_cache_bytes:
            self._saved.pop(0)

    def _make_sampler(self, request: _Request):
        import llama_cpp

        p = request.params
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        if request.grammar:
            grammar = llama_cpp.llama_sampler_init_grammar(self._vocab, request.grammar.encode(), b"root")
            if not grammar:
                raise UserError(_("The output grammar could not be compiled; simplify the JSON schema."))
            llama_cpp.llama_sampler_chain_add(chain, grammar)
        if p.logit_bias:
            biases = (llama_cpp.llama_logit_bias * len(p.logit_bias))(
                *(llama_cpp.llama_logit_bias(token, bias) for token, bias in p.logit_bias.items())
            )
            llama_cpp.llama_sampler_chain_add(
                chain, llama_cpp.llama_sampler_init_logit_bias(self._n_vocab, len(p.logit_bias), biases)
            )
        if p.repeat_penalty != 1.0 or p.frequency_penalty or p.presence_penalty:
            # this binding's signature: (n_vocab, last_n, repeat, frequency, presence)
            llama_cpp.llama_sampler_chain_add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    self._n_vocab, 64, p.repeat_penalty, p.frequency_penalty, p.presence_penalty
                ),
            )
        if p.temperature <= 0:
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        else:
            if p.top_k > 0:  # past the vocabulary top-k keeps everything; C's int32 could not even hold it
                top_k = min(p.top_k, self._n_vocab)
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_k(top_k))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
            if p.min_p > 0:
                llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(p.temperature))
            # OpenAI's seed is any integer; llama.cpp's a uint32 (the same seed still gives the same text)
            seed = p.seed % 2**32 if p.seed is not None else random.getrandbits(31)
            llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        return chain

    def _fill_batch(self, busy: list[_Slot]) -> None:
        """One token per generating slot, then prompt chunks for new ones, within n_batch."""
        batch = self._batch
        n = 0
        budget = self.n_batch
        generating = [s for s in busy if not s.pending]
        prefilling = [s for s in busy if s.pending]
        for slot in generating:
            assert slot.last_token is not None  # a slot generates once its prompt is decoded and sampled
            self._add(slot, slot.last_token, logits=True, index=n)
            slot.batch_index = n
            n += 1
        budget -= len(generating)
        for slot in prefilling:
            slot.batch_index = -1
            take = slot.pending[: max(0, budget)]
            if not take:
                continue
            for i, token in enumerate(take):
                last = i == len(take) - 1 and len(take) == len(slot.pending)
                self._add(slot, token, logits=last, index=n)
                if last:
                    slot.batch_index = n
                n += 1
            slot.pending = slot.pending[len(take) :]
            budget -= len(take)
        batch.n_tokens = n

    def _add(self, slot: _Slot, token: int, *, logits: bool, index: int) -> None:
        batch = self._batch
        slot.cached.append(token)
        batch.token[index] = token
        batch.pos[index] = slot.position
        batch.n_seq_id[index] = 1
        batch.seq_id[index][0] = slot.seq
        batch.logits[index] = logits
        slot.position += 1

    def _piece(self, token: int) -> bytes:
        return token_bytes(self._vocab, token)

    def _sample(self, slot: _Slot) -> None:
        import llama_cpp

        request = slot.request
        assert request is not None and slot.text is not None and slot.timer is not None
        token = llama_cpp.llama_sampler_sample(slot.sampler, self._ctx, slot.batch_index)
        if llama_cpp.llama_vocab_is_eog(self._vocab, token):
            slot.batch_index = -1
            return self._finish(slot, "stop")
        if slot.logprobs is not None:  # the logits that chose it: the model's own, before penalties and biases
            import numpy as np

            row = llama_cpp.llama_get_logits_ith(self._ctx, slot.batch_index)
            slot.logprobs.add(np.ctypeslib.as_array(row, shape=(self._n_vocab,)), token)
        slot.batch_index = -1
        slot.timer.token()
        piece = slot.text.feed(token_bytes(self._vocab, token))
        if slot.text.stopped:
            return self._finish(slot, "stop")
        if piece:
            request.out.put(("piece", piece))
        slot.last_token = token
        if slot.timer.tokens >= request.params.max_tokens or slot.position >= self.context_length - 1:
            return self._finish(slot, "length")
        if request.cancel.is_set():
            return self._finish(slot, "cancelled")

    def _finish(self, slot: _Slot, reason: str) -> None:
        request = slot.request
        assert request is not None and slot.text is not None and slot.timer is not None
        rest = slot.text.flush()
        if rest:
            request.out.put(("piece", rest))
        result = GenerationResult(text=slot.text.text, finish_reason=reason, prompt_tokens=len(request.prompt))
        if slot.logprobs is not None:
            result.logprobs = slot.logprobs.tokens
        request.out.put(("done", slot.timer.fill(result)))
        self._free(slot)

    def _free(self, slot: _Slot, *, keep_cache: bool = True) -> None:
        """Release the slot; its KV cache stays for a later request that starts the same way."""
        import llama_cpp

        if slot.sampler:
            llama_cpp.llama_sampler_free(slot.sampler)
        slot.sampler = None
        slot.request = None
        slot.logprobs = None
        slot.pending = []
        if not keep_cache:
            slot.cached = []
            llama_cpp.llama_memory_seq_rm(self._mem, slot.seq, -1, -1)


MIN_GAIN = 16  # prompt tokens: fewer saved do not justify a scattered slot


class CopyCosts:
    """When copying another slot's KV beats decoding the prefix again, from what both cost on this machine.

    A copy moves the lender's whole sequence through host memory; decoding re-computes only the tokens
    saved. Their costs differ by orders of magnitude between machines: on this 2-core CPU a copied token
    costs ~20 us and a prompt token in a large batch ~2.6 ms, on a GPU prompt tokens are cheap and
    copies of a big model's KV are not. So both are measured as the engine runs (moving averages of
    copies, and of decode steps large enough to be mostly prompt), and a copy is made when it saves at
    least twice what it costs. Until a prompt-sized step has been measured a fixed rule stands in: at
    least ``MIN_GAIN`` tokens saved and a quarter of what is copied.
    """

    PROMPT_STEP = 32  # tokens: a decode step this large costs about its prompt tokens' worth
    MARGIN = 2.0

    def __init__(self) -> None:
        self.token_seconds: float | None = None  # decoding one more prompt token in a batch
        self.copy_seconds: float | None = None  # copying one token of KV between slots

    def decoded(self, tokens: int, seconds: float) -> None:
        if tokens >= self.PROMPT_STEP:
            self.token_seconds = _average(self.token_seconds, seconds / tokens)

    def copied(self, tokens: int, seconds: float) -> None:
        if tokens:
            self.copy_seconds = _average(self.copy_seconds, seconds / tokens)

    def worth_copying(self, gained: int, copied: int) -> bool:
        if self.token_seconds is None:
            return gained >= MIN_GAIN and 4 * gained >= copied
        # before the first copy is timed, guess it at 1/32 of a token's decode (a copy then measures it)
        copy_seconds = self.copy_seconds if self.copy_seconds is not None else self.token_seconds / 32
        return gained > 0 and gained * self.token_seconds >= self.MARGIN * copied * copy_seconds


def _average(old: float | None, new: float, weight: float = 0.2) -> float:
    return new if old is None else (1 - weight) * old + weight * new


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i
