"""transformers engine: Hugging Face model folders, optionally with a peft adapter (applied or merged),
in bitsandbytes 4/8-bit, on CUDA when present and the CPU otherwise.

Generation is an explicit token loop over the model's forward pass with a KV cache (no
``generate`` thread): that gives exact counts and timings, cancellation between tokens, the same
stop-string and UTF-8 handling as llama.cpp (``TextAssembler``), and grammar-free sampling with
temperature / top-k / top-p / repeat penalty. Log-likelihoods are batched, longest first.
"""

from __future__ import annotations

import threading
import time
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
    StreamTimer,
    TextAssembler,
)
from internlocal.errors import ContextOverflow, ModelFileError, Unsupported, UserError
from internlocal.i18n import _


class TransformersEngine(EngineBase):
    engine_name = "transformers"
    capabilities = frozenset(
        {Capability.CHAT, Capability.COMPLETION, Capability.TOKENIZE, Capability.LOGLIKELIHOOD, Capability.LOGPROBS}
    )
    sampling_fields = frozenset(OPTIONAL_SAMPLING)

    def __init__(
        self,
        path: str | Path,
        *,
        model_name: str | None = None,
        adapter: str | Path | None = None,
        merge_adapter: bool = False,
        quantization: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        chat_template: str | None = None,
        n_ctx: int | None = None,
        threads: int | None = None,
    ):
        import torch

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ModelFileError(_("{path} is not a Hugging Face model folder (no config.json).").format(path=path))
        self.model_name = model_name or path.name
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        if threads and self.device == "cpu":
            torch.set_num_threads(threads)
        kwargs: dict[str, Any] = {}
        if quantization in ("4bit", "8bit"):
            try:
                from transformers import BitsAndBytesConfig
            except ImportError:  # pragma: no cover - transformers always has it
                raise UserError(_("This transformers has no bitsandbytes support.")) from None
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=quantization == "4bit",
                load_in_8bit=quantization == "8bit",
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16 if self.device == "cuda" else torch.float32,
            )
            kwargs["device_map"] = {"": 0} if self.device == "cuda" else "cpu"
        elif quantization not in (None, "", "none"):
            raise UserError(
                _("Quantization {quantization!r} is not one of 4bit, 8bit.").format(quantization=quantization)
            )
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if self.device == "cuda" else torch.float32)
        try:
            self.model = self._load_model(path, torch_dtype, kwargs)
        except (OSError, ValueError) as exc:
            raise ModelFileError(
                _("transformers could not load {path}: {error}").format(path=path, error=exc)
            ) from None
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(adapter))
            if merge_adapter:
                self.model = self.model.merge_and_unload()
        if "device_map" not in kwargs:
            self.model.to(self.device)
        self.model.eval()
        if chat_template and not self.tokenizer.chat_template:
            self.tokenizer.chat_template = chat_template
        config = self.model.config
        limit = (  # vision-language models keep it in their text config
            getattr(config, "max_position_embeddings", None)
            or getattr(getattr(config, "text_config", None), "max_position_embeddings", None)
            or 4096
        )
        self.context_length = min(n_ctx or limit, limit)
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        configured = configured if isinstance(configured, list) else [configured]
        self._eos = {t for t in [self.tokenizer.eos_token_id, *configured] if t is not None}
        self._lock = threading.Lock()
        import inspect

        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model  # under peft
        forward = inspect.signature(base.forward).parameters
        # transformers renamed past_key_values to cache (5.2x); logits_to_keep skips unused logits
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"
        self._last_logits_only = {"logits_to_keep": 1} if "logits_to_keep" in forward else {}
        self._keep_logits = "logits_to_keep" in forward
        # packing options needs position_ids and a custom 4-D mask, which remote-code models may ignore
        self._packing = "position_ids" in forward and not getattr(self.model.config, "auto_map", None)

    def _load_model(self, path: Path, dtype, kwargs: dict[str, Any]):
        """The model, with ``self.tokenizer`` set; a subclass loads another model class (transformers_vision.py)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        return AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)

    # -- text --------------------------------------------------------------------------------------

    def render_chat(self, messages) -> str:
        if not self.tokenizer.chat_template:
            raise UserError(_("{model} has no chat template; use completion.").format(model=self.model_name))
        return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)

    def tokenize(self, text, *, add_special=False) -> list[int]:
        return self.tokenizer(text, add_special_tokens=add_special)["input_ids"]

    def detokenize(self, tokens) -> str:
        return self.tokenizer.decode(list(tokens), skip_special_tokens=True)

    # -- generation --------------------------------------------------------------------------------

    def chat(self, messages, params=None, *, response_format=None, tools=None, tool_choice=None) -> Generation:
        if tools:
            self.require(Capability.TOOLS)
        if response_format and response_format.get("type") not in (None, "text"):
            self.require(Capability.CONSTRAINED)
        params = params or GenerationParams()
        from internlocal.engines.images import text_only

        prompt = self.tokenize(self.render_chat(text_only(messages, self.model_name)), add_special=False)
        return self._generation(prompt, params)

    def complete(self, prompt, params=None, *, response_format=None) -> Generation:
        if response_format and response_format.get("type") not in (None, "text"):
            self.require(Capability.CONSTRAINED)
        return self._generation(self.tokenize(prompt, add_special=True), params or GenerationParams())

    def _generation(
        self, prompt: list[int], params: GenerationParams, first_inputs: dict[str, Any] | None = None
    ) -> Generation:
        if len(prompt) + 1 >= self.context_length:
            raise ContextOverflow(
                _("The prompt has {count} tokens but {model}'s context holds {context}; shorten it.").format(
                    count=len(prompt), model=self.model_name, context=self.context_length
                )
            )
        self.check(params)
        vocab = self.model.get_output_embeddings().weight.shape[0]
        if any(not 0 <= t < vocab for t in params.logit_bias):
            raise Unsupported(
                _("logit_bias names a token outside this model's {vocab} tokens.").format(vocab=vocab),
                field="logit_bias",
            )
        cancel = threading.Event()
        logprobs = (
            GeneratedLogprobs(params.logprobs, lambda t: _token_bytes(self.tokenizer, t))
            if params.logprobs is not None
            else None
        )
        stream = self._stream(prompt, params, cancel, logprobs, first_inputs=first_inputs)
        return Generation(stream, cancel, params.watch(), logprobs)

    def _stream(
        self,
        prompt: list[int],
        params: GenerationParams,
        cancel: threading.Event,
        logprobs=None,
        *,
        first_inputs: dict[str, Any] | None = None,
    ) -> Generator[str, None, GenerationResult]:
        """The token loop; ``first_inputs`` (an image's ``pixel_values``, the prompt's ``attention_mask`` …) go
        to the first forward pass only, as ``generate`` does: later steps read the KV cache."""
        import torch

        result = GenerationResult(prompt_tokens=len(prompt), finish_reason="length")
        timer = StreamTimer()
        text = TextAssembler(params.stop)
        generator = torch.Generator(device=self.device)  # sampling stays on the device: no logits copy per token
        generator.manual_seed(params.seed if params.seed is not None else int(time.time_ns() % (2**31)))
        with self._lock, torch.inference_mode():
            ids = torch.tensor([prompt], device=self.device)
            past = None
            seen = list(prompt)
            while True:
                if cancel.is_set():
                    result.finish_reason = "cancelled"
                    break
                extra, first_inputs = first_inputs or {}, None
                out = self.model(
                    input_ids=ids, use_cache=True, **{self._cache_arg: past}, **self._last_logits_only, **extra
                )
                past = getattr(out, "cache", None) or out.past_key_values
                logits = out.logits[0, -1].float()
                raw = logits.cpu().numpy().copy() if logprobs is not None else None  # _sample edits logits
                token = _sample(logits, params, seen, generator, generated=seen[len(prompt) :])
                if token in self._eos:
                    result.finish_reason = "stop"
                    break
                timer.token()
                if logprobs is not None:
                    logprobs.add(raw, token)
                seen.append(token)
                piece = text.feed(_token_bytes(self.tokenizer, token))
                if text.stopped:
                    result.finish_reason = "stop"
                    break
                if piece:
                    yield piece
                if timer.tokens >= params.max_tokens or len(seen) >= self.context_length:
                    break
                ids = torch.tensor([[token]], device=self.device)
            rest = text.flush()
            if rest:
                yield rest
        result.text = text.text
        if logprobs is not None:
            result.logprobs = logprobs.tokens
        return timer.fill(result)

    # -- scoring -----------------------------------------------------------------------------------

    def loglikelihood(self, requests: Sequence[tuple[str, str]], batch_size: int = 8) -> list[LogLikelihood]:
        """log P(continuation | context), batched with right padding, longest sequences first.

        Requests that share a context (the options of a multiple-choice item) are packed into one
        sequence: the context once, then each continuation, with positions restarting after the
        context and a mask that lets every continuation see only the context and itself. The
        options' log-likelihoods equal separate passes (float rounding aside) at a fraction of the
        tokens; logits are computed only where a continuation token is predicted.
        """
        import torch

        encoded = []
        for context, continuation in requests:
            ctx = self.tokenize(context, add_special=True)
            cont = self.tokenize(continuation, add_special=False)
            if not cont:
                raise UserError(_("A log-likelihood request has an empty continuation; give it some text."))
            tokens = (ctx + cont)[-self.context_length :]
            n_cont = min(len(cont), len(tokens) - 1)
            encoded.append((tokens[:-n_cont], tokens[-n_cont:]))
        packs = self._packs(encoded)
        order = sorted(range(len(packs)), key=lambda k: -len(packs[k].ids))
        results: list[LogLikelihood | None] = [None] * len(encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with self._lock, torch.inference_mode():
            for start in range(0, len(order), batch_size):
                chunk = [packs[k] for k in order[start : start + batch_size]]
                width = max(len(pack.ids) for pack in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                positions = torch.zeros((len(chunk), width), dtype=torch.long)
                mask = torch.eye(width, dtype=torch.bool).repeat(len(chunk), 1, 1)  # padding sees itself (no NaN rows)
                for row, pack in enumerate(chunk):
                    n = len(pack.ids)
                    ids[row, :n] = torch.tensor(pack.ids)
                    positions[row, :n] = torch.tensor(pack.positions)
                    mask[row, :n, :n] = pack.mask()
                needed = sorted({i for pack in chunk for i in pack.scored_rows()})
                kwargs: dict[str, Any] = {"position_ids": positions.to(self.device)}
                if self._keep_logits:
                    kwargs["logits_to_keep"] = torch.tensor(needed, device=self.device)
                logits = self.model(
                    input_ids=ids.to(self.device), attention_mask=mask[:, None].to(self.device), **kwargs
                ).logits
                column = {i: c for c, i in enumerate(needed)} if self._keep_logits else {i: i for i in range(width)}
                for row, pack in enumerate(chunk):
                    for request, predictors, targets in pack.scoring():
                        # log-softmax over only the continuation's positions, not the whole padded batch
                        rows = torch.log_softmax(logits[row, [column[i] for i in predictors]].float(), -1)
                        wanted = torch.tensor(targets, device=rows.device)
                        picked = rows.gather(1, wanted[:, None]).squeeze(1)
                        greedy = bool((rows.argmax(-1) == wanted).all())
                        results[request] = LogLikelihood(
                            logprob=float(picked.sum()), is_greedy=greedy, n_tokens=len(targets)
                        )
        assert all(r is not None for r in results)  # every request sits in one of the packs
        return [r for r in results if r is not None]

    def _packs(self, encoded: list[tuple[list[int], list[int]]]) -> list[_Pack]:
        """Requests grouped by identical context tokens, each group split to stay within the context window."""
        packs: list[_Pack] = []
        open_pack: dict[tuple[int, ...], _Pack] = {}
        for i, (ctx, cont) in enumerate(encoded):
            key = tuple(ctx)
            pack = open_pack.get(key) if self._packing else None
            if pack is None or len(pack.ids) + len(cont) > self.context_length:
                pack = _Pack(list(ctx))
                packs.append(pack)
                open_pack[key] = pack
            pack.add(i, cont)
        return packs

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        totals = []
        bos = self.tokenizer.bos_token_id
        for text in texts:
            tokens = self.tokenize(text, add_special=False)
            window = self.context_length - 1
            total = 0.0
            for start in range(0, len(tokens), window):
                chunk = tokens[start : start + window]
                prefix = ([bos] if bos is not None else chunk[:1]) if start == 0 else tokens[start - 1 : start]
                if start == 0 and bos is None:
                    chunk = chunk[1:]
                    if not chunk:
                        continue
                total += self._score(prefix, chunk)
            totals.append(total)
        return totals

    def _score(self, prefix: list[int], chunk: list[int]) -> float:
        import torch

        with self._lock, torch.inference_mode():
            ids = torch.tensor([prefix + chunk], device=self.device)
            logprobs = torch.log_softmax(self.model(input_ids=ids).logits.float(), -1)[0].cpu()
        start = len(prefix) - 1
        return float(sum(logprobs[start + i, t] for i, t in enumerate(chunk)))

    def close(self) -> None:
        self.model = None
        import gc

        gc.collect()


def _token_bytes(tokenizer, token: int) -> bytes:
    """One token's bytes; byte-level BPE tokens map back to raw bytes (so split UTF-8 reassembles)."""
    piece = tokenizer.convert_ids_to_tokens(token)
    try:
        from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode
    except ImportError:  # pragma: no cover
        return tokenizer.decode([token]).encode()
    table = _byte_decoder(bytes_to_unicode)
    if piece is not None and all(ch in table for ch in piece):
        return bytes(table[ch] for ch in piece)
    return tokenizer.decode([token], skip_special_tokens=True).encode()


_BYTE_DECODER: dict[str, int] | None = None


def _byte_decoder(bytes_to_unicode) -> dict[str, int]:
    global _BYTE_DECODER
    if _BYTE_DECODER is None:
        _BYTE_DECODER = {v: k for k, v in bytes_to_unicode().items()}
    return _BYTE_DECODER


def _sample(logits, params: GenerationParams, seen: list[int], generator, generated: Sequence[int] = ()) -> int:
    """The next token, the way llama.cpp's sampler chain picks it: logit bias, penalties, then greedy or
    top-k, top-p, min-p and temperature."""
    import torch

    if params.logit_bias:
        ids = torch.tensor(list(params.logit_bias), device=logits.device)
        logits[ids] += torch.tensor(list(params.logit_bias.values()), device=logits.device, dtype=logits.dtype)
    if (params.frequency_penalty or params.presence_penalty) and generated:
        from collections import Counter

        counts = Counter(generated[-64:])  # the same window as llama.cpp's penalties
        ids = torch.tensor(list(counts), device=logits.device)
        n = torch.tensor(list(counts.values()), device=logits.device, dtype=logits.dtype)
        logits[ids] -= n * params.frequency_penalty + params.presence_penalty
    if params.repeat_penalty != 1.0 and seen:
        recent = torch.tensor(sorted(set(seen[-64:])), device=logits.device)
        values = logits[recent]
        logits[recent] = torch.where(values > 0, values / params.repeat_penalty, values * params.repeat_penalty)
    if params.temperature <= 0:
        return int(logits.argmax())
    logits = logits / params.temperature
    if params.top_k > 0:
        kth = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
        logits[logits < kth] = float("-inf")
    probs = torch.softmax(logits, -1)
    if params.top_p < 1.0:
        sorted_probs, indices = torch.sort(probs, descending=True)
        cumulative = sorted_probs.cumsum(-1)
        drop = cumulative - sorted_probs > params.top_p
        sorted_probs[drop] = 0
        probs = torch.zeros_like(probs).scatter(0, indices, sorted_probs)
        probs /= probs.sum()
    if params.min_p > 0:
        probs[probs < params.min_p * probs.max()] = 0
        probs /= probs.sum()
    return int(torch.multinomial(probs, 1, generator=generator))


class _Pack:
    """One context followed by several continuations, each attending to the context and itself only."""

    def __init__(self, context: list[int]):
        self.context_len = len(context)
        self.ids = list(context)
        self.positions = list(range(len(context)))
        self.segments = [-1] * len(context)
        self.members: list[tuple[int, int, int]] = []  # (request index, start in ids, length)

    def add(self, request: int, continuation: list[int]) -> None:
        self.members.append((request, len(self.ids), len(continuation)))
        self.segments += [len(self.members)] * len(continuation)
        self.positions += range(self.context_len, self.context_len + len(continuation))
        self.ids += continuation

    def mask(self):
        import torch

        seg = torch.tensor(self.segments)
        n = len(self.ids)
        causal = torch.ones(n, n, dtype=torch.bool).tril()
        return causal & ((seg[None, :] == -1) | (seg[None, :] == seg[:, None]))

    def scoring(self):
        """(request, rows whose logits predict its tokens, its tokens) for each continuation."""
        for request, start, length in self.members:
            predictors = [self.context_len - 1, *list(range(start, start + length - 1))]
            yield request, predictors, self.ids[start : start + length]

    def scored_rows(self) -> set[int]:
        return {i for __, predictors, ___ in self.scoring() for i in predictors}
