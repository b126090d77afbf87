"""llama.cpp engine (llama-cpp-python): GGUF models on the CPU, or offloaded to a GPU build.

Generation drives ``Llama.generate`` token by token (not ``create_completion``) so that the
engine knows exact token counts and timings, can stop between any two tokens, and keeps
llama-cpp-python's KV-cache prefix reuse across turns of a chat.
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from internlocal.engines.base import (
    OPTIONAL_SAMPLING,
    Capability,
    EngineBase,
    GeneratedLogprobs,
    Generation,
    GenerationParams,
    GenerationResult,
    LogLikelihood,
    Message,
    StreamTimer,
    TextAssembler,
    TokenLogprob,
    top_logprobs,
)
from internlocal.engines.images import fit_image, has_images, message_images, text_only, with_markers
from internlocal.engines.mtmd import MediaPrompt
from internlocal.errors import ContextOverflow, ModelFileError, NotEnoughMemory, Unsupported, UserError
from internlocal.hub.inspect import read_gguf
from internlocal.i18n import _

# Bytes of memory per KV-cache element (f16) and a margin for compute buffers, for the fit check.
_KV_BYTES = 2
_OVERHEAD_BYTES = 256 << 20


def default_threads() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


class LlamaCppEngine(EngineBase):
    engine_name = "llama.cpp"
    capabilities = frozenset(
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
        path: str | Path,
        *,
        model_name: str | None = None,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_gpu_layers: int = 0,
        chat_template: str | None = None,
        check_memory: bool = True,
        kv_cache: str = "f16",
        lora_path: str | Path | None = None,
        flash_attention: bool = False,
        projector_path: str | Path | None = None,
    ):
        path = Path(path)
        info = read_gguf(path)  # clear errors for missing / foreign / truncated files before llama.cpp sees them
        self.model_name = model_name or path.stem
        self.info = info
        n_ctx = min(n_ctx, info.context_length or n_ctx)
        if check_memory and n_gpu_layers == 0:
            _check_fits(path, info, n_ctx)

        import llama_cpp

        # Without flash attention llama.cpp computes a position's logits differently when it is decoded alone
        # than inside a batch (0.1 nats apart on the embedded model), so a generated token's logprob would not
        # match the same text scored. The server turns it on (its batched engine always uses it); elsewhere
        # llama.cpp's default stays, which evaluation baselines and finetuning experiments were measured with.
        extra: dict[str, Any] = {"flash_attn": True} if flash_attention else {}
        kv_type = kv_cache_type(kv_cache)
        if kv_type is not None:
            extra |= {"type_k": kv_type, "type_v": kv_type, "flash_attn": True}
        if lora_path is not None:
            extra["lora_path"] = str(lora_path)
        try:
            self._llm = llama_cpp.Llama(
                str(path),
                n_ctx=n_ctx,
                n_threads=n_threads or default_threads(),
                n_gpu_layers=n_gpu_layers,
                verbose=False,
                **extra,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelFileError(
                _("llama.cpp could not load {path} ({error}); the file may be corrupt, download it again.").format(
                    path=path, error=exc
                )
            ) from None
        self.context_length = self._llm.n_ctx()
        self.projector = None
        if projector_path is not None:  # a vision model: its projector turns images into the model's tokens
            from internlocal.engines.mtmd import Projector

            self.projector = Projector(
                projector_path,
                self._llm._model.model,
                n_threads=n_threads or default_threads(),
                use_gpu=n_gpu_layers != 0,
                flash_attn=bool(extra.get("flash_attn")),
            )
            self.capabilities = type(self).capabilities | {Capability.VISION}
        self._lock = threading.Lock()  # one generation at a time per loaded model
        # (context tokens, logits at its last position) of the last scoring request
        self._context_logits: tuple[tuple[int, ...], Any] | None = None
        self._formatter = None
        template = chat_template or info.chat_template
        self.chat_template = template
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            model = self._llm._model
            eos, bos = self._llm.token_eos(), self._llm.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=template,
                eos_token=model.token_get_text(eos) if eos != -1 else "",
                bos_token=model.token_get_text(bos) if bos != -1 else "",
            )

    # -- text --------------------------------------------------------------------------------------

    def render_chat(self, messages: Sequence[Message], tools: list[dict] | None = None) -> str:
        """The prompt the model sees: its own chat template applied, generation prompt added."""
        if self._formatter is None:
            raise UserError(
                _("{model} has no chat template; use completion, or import it with a template.").format(
                    model=self.model_name
                )
            )
        try:
            return self._formatter(messages=list(messages), tools=tools).prompt
        except Exception as exc:  # jinja2 raise_exception() from the template (e.g. roles out of order)
            raise UserError(
                _("The chat template of {model} rejected the conversation: {error}.").format(
                    model=self.model_name, error=exc
                )
            ) from None

    def tokenize(self, text: str, *, add_special: bool = False) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self._llm.detokenize(list(tokens)).decode("utf-8", errors="replace")

    @property
    def vocab_size(self) -> int:
        return self._llm.n_vocab()

    def _last_logits(self):
        """The logits of the context's last decoded position (what the sampler just chose from), as numpy."""
        import llama_cpp
        import numpy as np

        row = llama_cpp.llama_get_logits_ith(self._llm._ctx.ctx, -1)
        return np.ctypeslib.as_array(row, shape=(self.vocab_size,))

    # -- generation --------------------------------------------------------------------------------

    def chat(self, messages, params=None, *, response_format=None, tools=None, tool_choice=None) -> Generation:
        params = params or GenerationParams()
        if has_images(messages) and self.projector is not None:
            self._require_images(tools)
            media = self.fit_media(list(messages), params.max_tokens)
            return self._generation(media.tokens, params, response_format, media=media)
        messages = text_only(messages, self.model_name)
        if tools:
            from internlocal.engines.tool_calls import plan_tools

            plan = plan_tools(messages, tools, tool_choice, self.chat_template)
            prompt_tokens = self._fit_chat(plan.messages, params.max_tokens, tools=plan.template_tools)
            grammar_format = {"type": "grammar", "grammar": plan.grammar} if plan.grammar else None
            return plan.wrap(self._generation(prompt_tokens, params, grammar_format))
        prompt_tokens = self._fit_chat(list(messages), params.max_tokens)
        return self._generation(prompt_tokens, params, response_format)

    def complete(self, prompt, params=None, *, response_format=None) -> Generation:
        params = params or GenerationParams()
        tokens = self.tokenize(prompt, add_special=True)
        if len(tokens) >= self.context_length:
            raise ContextOverflow(
                _("The prompt has {count} tokens but the context holds {context}; shorten it.").format(
                    count=len(tokens), context=self.context_length
                )
            )
        return self._generation(tokens, params, response_format)

    def _require_images(self, tools) -> None:
        self.require(Capability.VISION)
        if tools:
            raise Unsupported(
                _("Tools and images in one request are not supported yet; send them separately."), field="tools"
            )

    def fit_media(self, messages: list[Message], max_tokens: int) -> MediaPrompt:
        """The prompt with its images as llama.cpp chunks; the oldest turns after the system prompt are dropped
        (images and all) until it fits, as ``_fit_chat`` does for text."""
        assert self.projector is not None
        budget = self.context_length - min(max_tokens, self.context_length // 4)
        first = 1 if messages and messages[0].get("role") == "system" else 0
        max_side = self.projector.max_side
        while True:
            images = [fit_image(data, max_side=max_side).data for data in message_images(messages)]
            prompt = self.render_chat(with_markers(messages, self.projector.marker))
            media = self.projector.tokenize(prompt, images)
            if len(media.tokens) > budget and len(messages) - first <= 1:
                media.close()
                raise ContextOverflow(
                    _(
                        "The message with its images is {count} tokens but {model}'s context holds {context}; send "
                        "fewer or smaller images, or raise the context length."
                    ).format(count=len(media.tokens), model=self.model_name, context=self.context_length)
                )
            if len(media.tokens) <= budget:
                if not media.tail:
                    raise UserError(
                        _("The chat template of {model} ends the prompt with an image; it needs text after it.").format(
                            model=self.model_name
                        )
                    )
                return media
            media.close()
            del messages[first]
            while len(messages) - first > 1 and messages[first].get("role") != "user":
                del messages[first]

    def _fit_chat(self, messages: list[Message], max_tokens: int, tools: list[dict] | None = None) -> list[int]:
        """Tokenized prompt; the oldest turns after the system prompt are dropped until it fits.

        Turns go whole (from the oldest user message up to the next one) so that templates which
        insist on user/assistant alternation still accept the rest.
        """
        budget = self.context_length - min(max_tokens, self.context_length // 4)
        first = 1 if messages and messages[0].get("role") == "system" else 0
        while True:
            tokens = self.tokenize(self.render_chat(messages, tools), add_special=False)
            if len(tokens) <= budget:
                return tokens
            if len(messages) - first <= 1:
                raise ContextOverflow(
                    _(
                        "The message is {count} tokens but {model}'s context holds {context}; shorten it or raise "
                        "the context length."
                    ).format(count=len(tokens), model=self.model_name, context=self.context_length)
                )
            excess, dropped = len(tokens) - budget, 0
            while len(messages) - first > 1 and (dropped < excess or messages[first].get("role") != "user"):
                dropped += len(self.tokenize(str(messages[first].get("content") or ""))) + 4
                del messages[first]

    def check(self, params: GenerationParams) -> GenerationParams:
        check_bias(params, self.vocab_size)
        return super().check(params)

    def _generation(
        self, prompt_tokens: list[int], params: GenerationParams, response_format, media: MediaPrompt | None = None
    ) -> Generation:
        self.check(params)
        grammar = _grammar(response_format) if response_format else None
        cancel = threading.Event()
        vocab = self._llm._model.vocab
        logprobs = (
            GeneratedLogprobs(params.logprobs, lambda t: token_bytes(vocab, t)) if params.logprobs is not None else None
        )
        stream = self._stream(prompt_tokens, params, grammar, cancel, logprobs, media)
        return Generation(stream, cancel, params.watch(), logprobs)

    def _put_media(self, media: MediaPrompt) -> None:
        """Decode the prompt's text and images up to its last image into the context, unless the context already
        holds exactly that (the next turn of a chat about the same images); ``generate`` then matches that prefix
        through the placeholder ids and decodes only the rest."""
        assert self.projector is not None
        llm = self._llm
        head = [t for chunk in media.head for t in chunk.tokens]
        if llm.n_tokens >= len(head) and list(llm.input_ids[: len(head)]) == head:
            return
        llm.reset()
        llm._ctx.kv_cache_clear()
        end = self.projector.evaluate(llm._ctx.ctx, media, seq=0, n_batch=llm.n_batch, limit=self.context_length)
        llm.input_ids[:end] = head
        llm.n_tokens = end
        llm._requires_eval = True

    def _stream(
        self, prompt_tokens, params: GenerationParams, grammar, cancel: threading.Event, logprobs=None, media=None
    ) -> Generator[str, None, GenerationResult]:
        import llama_cpp

        llm = self._llm
        result = GenerationResult(prompt_tokens=len(prompt_tokens))
        timer = StreamTimer()
        text = TextAssembler(params.stop)
        vocab = llm._model.vocab
        with self._lock:
            self._context_logits = None  # generation moves the KV cache on
            if media is not None:
                try:
                    self._put_media(media)
                finally:
                    media.close()
            llm.set_seed(params.seed if params.seed is not None else random.getrandbits(31))
            tokens = llm.generate(
                prompt_tokens,
                temp=params.temperature,
                top_k=params.top_k,
                top_p=params.top_p,
                min_p=params.min_p,
                repeat_penalty=params.repeat_penalty,
                frequency_penalty=params.frequency_penalty,
                presence_penalty=params.presence_penalty,
                logits_processor=_biased(params.logit_bias) if params.logit_bias else None,
                grammar=grammar,
            )
            result.finish_reason = "length"
            try:
                for token in tokens:
                    if cancel.is_set():
                        result.finish_reason = "cancelled"
                        break
                    if llama_cpp.llama_vocab_is_eog(vocab, token):
                        result.finish_reason = "stop"
                        break
                    timer.token()
                    if logprobs is not None:  # the logits that chose it: the model's own, before penalties
                        logprobs.add(self._last_logits(), token)
                    piece = text.feed(token_bytes(vocab, token))
                    if text.stopped:
                        result.finish_reason = "stop"
                        break
                    if piece:
                        yield piece
                    if timer.tokens >= params.max_tokens or llm.n_tokens >= self.context_length - 1:
                        break
                    if cancel.is_set():
                        result.finish_reason = "cancelled"
                        break
            finally:
                tokens.close()
            rest = text.flush()
            if rest:
                yield rest
        result.text = text.text
        if logprobs is not None:
            result.logprobs = logprobs.tokens
        return timer.fill(result)

    # -- scoring -----------------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLikelihood]:
        """log P(continuation | context) for each pair, from the model's logits (not by generating).

        The context is tokenized with BOS, the continuation without, and the two are joined as
        token lists (lm-evaluation-harness convention). Contexts too long for the window are cut
        from the left. Consecutive requests with a shared context reuse its KV cache.
        """
        out = []
        with self._lock:
            for context, continuation in requests:
                ctx_tokens = self.tokenize(context, add_special=True)
                cont_tokens = self.tokenize(continuation, add_special=False)
                if not cont_tokens:
                    raise UserError(_("A log-likelihood request has an empty continuation; give it some text."))
                out.append(self._score(ctx_tokens, cont_tokens))
        return out

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """Total log-likelihood of each whole text (for perplexity), in disjoint context-sized windows."""
        totals = []
        with self._lock:
            for text in texts:
                tokens = self.tokenize(text, add_special=False)
                bos = self._llm.token_bos()
                window = self.context_length - 1
                total = 0.0
                for start in range(0, len(tokens), window):
                    chunk = tokens[start : start + window]
                    # the first window is predicted from BOS; later ones from the tokens just before them
                    prefix = [bos] if start == 0 else tokens[max(0, start - 1) : start]
                    total += self._score(prefix, chunk).logprob
                totals.append(total)
        return totals

    def prompt_logprobs(self, text: str, top: int = 0, *, next_token: bool = False) -> list[TokenLogprob]:
        """Log-probability of each token of ``text`` given the ones before it (OpenAI ``echo`` + ``logprobs``).

        The first token has none unless the model adds BOS (which is not listed). ``next_token``
        appends the greedy next token with its log-probability (a server's ``max_tokens=1``).
        """
        import numpy as np

        with self._lock:
            tokens = self.tokenize(text, add_special=True)
            if not tokens:
                raise UserError(_("The prompt is empty; give it some text."))
            if len(tokens) + int(next_token) > self.context_length:
                raise ContextOverflow(
                    _("The prompt is {count} tokens; the context holds {context}.").format(
                        count=len(tokens), context=self.context_length
                    )
                )
            # row i predicts tokens[i + 1]; a placeholder target makes the last row the next-token one
            rows = self._logprob_rows(tokens[:1], [*tokens[1:], 0])
        vocab = self._llm._model.vocab
        has_bos = len(tokens) > 1 and tokens[0] == self._llm.token_bos()
        out: list[TokenLogprob] = []
        raw = b""
        for i in range(1 if has_bos else 0, len(tokens)):
            piece = token_bytes(vocab, tokens[i])
            offset = len(raw.decode("utf-8", errors="ignore"))
            raw += piece
            if i == 0:
                out.append(TokenLogprob(piece.decode("utf-8", errors="replace"), None, {}, offset))
            else:
                row = rows[i - 1]
                out.append(
                    TokenLogprob(
                        piece.decode("utf-8", errors="replace"),
                        float(row[tokens[i]]),
                        self._top(row, top, vocab),
                        offset,
                    )
                )
        if next_token:
            row = rows[-1]
            best = int(np.argmax(row))
            out.append(
                TokenLogprob(
                    token_bytes(vocab, best).decode("utf-8", errors="replace"),
                    float(row[best]),
                    self._top(row, top, vocab),
                    len(raw.decode("utf-8", errors="ignore")),
                )
            )
        return out

    @staticmethod
    def _top(row, n: int, vocab) -> dict[str, float]:
        return top_logprobs(row, n, lambda token: token_bytes(vocab, token))

    def _score(self, context: list[int], continuation: list[int]) -> LogLikelihood:
        import numpy as np

        logprobs = self._logprob_rows(context, continuation)
        n = len(logprobs)
        targets = np.array(continuation[-n:])
        picked = logprobs[np.arange(n), targets]
        greedy = bool((logprobs.argmax(axis=1) == targets).all())
        return LogLikelihood(logprob=float(picked.sum()), is_greedy=greedy, n_tokens=n)

    def _logprob_rows(self, context: list[int], continuation: list[int]):
        """Log-softmax rows predicting each continuation token (all but those cut by the window)."""
        import llama_cpp
        import numpy as np

        llm = self._llm
        n_ctx = self.context_length
        tokens = (context + continuation)[-n_ctx:]
        n_cont = min(len(continuation), len(tokens) - 1)
        first_scored = len(tokens) - n_cont  # logits at positions first_scored-1 … len-2 predict the continuation
        rows: list[np.ndarray] = []
        key = tuple(tokens[:first_scored])
        cached_row = self._context_logits
        if (
            cached_row is not None
            and cached_row[0] == key
            and llm.n_tokens >= first_scored
            and list(llm.input_ids[:first_scored]) == list(key)
        ):
            # the same context as the previous request (the options of one multiple-choice item): its
            # last position's logits are known, so only the continuation's own tokens are decoded
            prefix, want_from = first_scored, first_scored
            rows.append(cached_row[1])
        else:
            # reuse the KV cache for the longest prefix already evaluated
            prefix = 0
            cached = llm.input_ids[: llm.n_tokens]
            limit = min(len(cached), first_scored - 1)
            while prefix < limit and cached[prefix] == tokens[prefix]:
                prefix += 1
            want_from = first_scored - 1
        llm._ctx.kv_cache_seq_rm(-1, prefix, -1)
        llm.n_tokens = prefix
        to_eval = tokens[prefix:-1] if len(tokens) > 1 else tokens
        batch = llm._batch
        pos = prefix
        n_vocab = llm.n_vocab()
        for start in range(0, len(to_eval), llm.n_batch):
            chunk = to_eval[start : start + llm.n_batch]
            batch.set_batch(batch=chunk, n_past=pos, logits_all=False)
            wanted = [i for i in range(len(chunk)) if pos + i >= want_from]
            for i in range(len(chunk)):
                batch.batch.logits[i] = i in wanted
            llm._ctx.decode(batch)
            for i in wanted:
                ptr = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, i)
                row = np.ctypeslib.as_array(ptr, shape=(n_vocab,)).copy()
                if pos + i == first_scored - 1:
                    self._context_logits = (key, row)
                rows.append(row)
            llm.input_ids[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
            llm.n_tokens = pos
        llm._requires_eval = True  # the last logits are a scoring batch's, not a sampling state
        logits = np.stack(rows).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def close(self) -> None:
        llm = getattr(self, "_llm", None)
        if llm is not None:
            with self._lock:
                if self.projector is not None:
                    self.projector.close()
                llm.close()
            self._llm = None


def check_bias(params: GenerationParams, n_vocab: int) -> None:
    bad = [t for t in params.logit_bias if not 0 <= t < n_vocab]
    if bad:
        raise Unsupported(
            _("logit_bias names token {token}, which is not in this model's vocabulary of {n_vocab} tokens.").format(
                token=bad[0], n_vocab=n_vocab
            ),
            field="logit_bias",
        )


def _biased(bias: dict[int, float]):
    """A llama-cpp-python logits processor adding OpenAI's ``logit_bias`` (−100 bans a token, 100 forces it)."""
    import numpy as np

    ids = np.array(list(bias), dtype=np.int64)
    values = np.array(list(bias.values()), dtype=np.float32)

    def process(_input_ids, scores):
        scores[ids] += values
        return scores

    from llama_cpp import LogitsProcessorList

    return LogitsProcessorList([process])


def token_bytes(vocab, token: int) -> bytes:
    """The bytes of one token (llama-cpp-python's own helper returns its whole zero-padded buffer)."""
    import llama_cpp

    buf = ctypes.create_string_buffer(64)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    if n < 0:
        buf = ctypes.create_string_buffer(-n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    return buf.raw[:n]


def grammar_for(response_format: dict[str, Any]) -> str | None:
    """GBNF text for an OpenAI ``response_format`` (json_object, json_schema) or a raw grammar."""
    from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return JSON_GBNF
    if kind == "json_schema":
        spec = response_format.get("json_schema") or {}
        schema = spec.get("schema", spec)
        try:
            return json_schema_to_gbnf(json.dumps(schema))
        except Exception as exc:
            raise UserError(
                _("The JSON schema cannot be turned into a grammar ({error}); simplify it.").format(error=exc)
            ) from None
    if kind == "grammar":
        return str(response_format["grammar"])
    raise UserError(_("Unknown response_format type {kind!r}; use text, json_object or json_schema.").format(kind=kind))


def _grammar(response_format: dict[str, Any]):
    """The compiled grammar ``Llama.generate`` takes, or None for plain text."""
    from llama_cpp.llama_grammar import LlamaGrammar

    text = grammar_for(response_format)
    return LlamaGrammar.from_string(text, verbose=False) if text else None


def kv_cache_type(name: str) -> int | None:
    """The ggml type of a quantized KV cache (None for the default f16); a quantized V cache needs flash attention."""
    import llama_cpp

    types = {"f16": None, "q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}
    if name not in types:
        raise UserError(_("KV cache type {name!r} is not one of {types}.").format(name=name, types=", ".join(types)))
    return types[name]


def memory_estimate(info, n_ctx: int) -> int:
    """Bytes a GGUF model holds loaded with ``n_ctx`` tokens of KV cache (all slots together): weights, an f16
    cache, and llama.cpp's working buffers."""
    meta = info.metadata
    arch = info.architecture or ""
    layers = int(meta.get(f"{arch}.block_count", 0) or 0)
    heads = int(meta.get(f"{arch}.attention.head_count", 1) or 1)
    kv_heads = int(meta.get(f"{arch}.attention.head_count_kv", heads) or heads)
    embd = int(meta.get(f"{arch}.embedding_length", 0) or 0)
    kv = 2 * n_ctx * layers * (embd // heads * kv_heads if heads else 0) * _KV_BYTES
    return info.size_bytes + kv + _OVERHEAD_BYTES


def _check_fits(path: Path, info, n_ctx: int) -> None:
    """Refuse to load a model whose weights plus KV cache exceed the memory that is free."""
    import psutil

    need = memory_estimate(info, n_ctx)
    free = psutil.virtual_memory().available
    if need > free:
        raise NotEnoughMemory(
            _(
                "{name} needs about {need:.1f} GiB of memory but {free:.1f} GiB is free; choose a smaller "
                "quantization, lower the context length, or close other programs."
            ).format(name=path.name, need=need / 2**30, free=free / 2**30)
        )
