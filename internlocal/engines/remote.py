"""Any OpenAI-compatible endpoint as an engine: an existing Ollama, vLLM, LMDeploy or internlocal server.

Chat and completion stream over SSE; JSON output and tools are passed through to the server.
Log-likelihoods come from the legacy completions API's ``echo`` + ``logprobs`` (prompt token
log-probabilities: vLLM, internlocal serve); a server without them raises ``Unsupported``.
Tokenization stays with the server, which the OpenAI protocol does not expose.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Generator, Sequence
from typing import Any

from internlocal.engines.base import (
    OPTIONAL_SAMPLING,
    Capability,
    EngineBase,
    Generation,
    GenerationParams,
    GenerationResult,
    LogLikelihood,
    StreamTimer,
)
from internlocal.errors import ContextOverflow, NetworkError, Unsupported, UserError
from internlocal.i18n import N_, _


class RemoteEngine(EngineBase):
    engine_name = N_("remote OpenAI endpoint")
    capabilities = frozenset(
        {
            Capability.CHAT,
            Capability.COMPLETION,
            Capability.CONSTRAINED,
            Capability.TOOLS,
            Capability.LOGLIKELIHOOD,
            Capability.VISION,  # image parts are sent on as data: URIs; a text-only endpoint answers for itself
        }
    )
    sampling_fields = frozenset(OPTIONAL_SAMPLING)  # sent on; the endpoint answers for them

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        model_name: str | None = None,
        context_length: int = 0,
        timeout: float = 600,
    ):
        import requests

        self.base_url = base_url.rstrip("/")
        self.remote_model = model
        self.model_name = model_name or model
        self.context_length = context_length
        key = api_key or (os.environ.get(api_key_env) if api_key_env else None)
        self._headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self._timeout = timeout
        self._session = requests.Session()

    def _body(self, params: GenerationParams, **extra: Any) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.remote_model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_tokens,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        # passed on as they are: the endpoint honours them or answers with its own error
        if params.frequency_penalty:
            body["frequency_penalty"] = params.frequency_penalty
        if params.presence_penalty:
            body["presence_penalty"] = params.presence_penalty
        if params.min_p:
            body["min_p"] = params.min_p
        if params.logit_bias:
            body["logit_bias"] = {str(k): v for k, v in params.logit_bias.items()}
        body.update({k: v for k, v in extra.items() if v is not None})
        return body

    def chat(self, messages, params=None, *, response_format=None, tools=None, tool_choice=None) -> Generation:
        params = self.check(params or GenerationParams())
        body = self._body(
            params,
            messages=list(messages),
            response_format=response_format,
            tools=list(tools) if tools else None,
            tool_choice=tool_choice,
        )
        cancel = threading.Event()
        return Generation(self._stream("/chat/completions", body, cancel, chat=True), cancel, params.watch())

    def complete(self, prompt, params=None, *, response_format=None) -> Generation:
        params = self.check(params or GenerationParams())
        cancel = threading.Event()
        body = self._body(params, prompt=prompt)
        return Generation(self._stream("/completions", body, cancel, chat=False), cancel, params.watch())

    def _stream(
        self, path: str, body: dict, cancel: threading.Event, *, chat: bool
    ) -> Generator[str, None, GenerationResult]:
        import requests

        url = f"{self.base_url}{path}"
        result = GenerationResult(finish_reason="stop")
        timer = StreamTimer()
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        try:
            response = self._session.post(
                url, headers=self._headers, data=json.dumps(body), stream=True, timeout=(10, self._timeout)
            )
        except requests.RequestException as exc:
            raise NetworkError(
                _("Cannot reach {url} ({error}); is the server running?").format(url=self.base_url, error=exc)
            ) from None
        with response:
            if response.status_code >= 400:
                try:
                    message = response.json().get("error", {}).get("message") or response.text[:200]
                except ValueError:
                    message = response.text[:200]
                hint = _(" (check the API key)") if response.status_code in (401, 403) else ""
                error = (
                    ContextOverflow if response.status_code == 400 and "context" in str(message).lower() else UserError
                )
                raise error(
                    _("{url} answered {status_code}: {message}{hint}").format(
                        url=self.base_url, status_code=response.status_code, message=message, hint=hint
                    )
                )
            for line in response.iter_lines(decode_unicode=True):
                if cancel.is_set():
                    result.finish_reason = "cancelled"
                    break
                if not line or not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if chunk.get("usage"):
                    result.prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
                    result.completion_tokens = chunk["usage"].get("completion_tokens", 0)
                for choice in chunk.get("choices") or []:
                    piece = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                    for call in (choice.get("delta") or {}).get("tool_calls") or []:
                        entry = calls.setdefault(
                            call.get("index", 0),
                            {"id": call.get("id"), "type": "function", "function": {"name": "", "arguments": ""}},
                        )
                        fn = call.get("function") or {}
                        entry["function"]["name"] += fn.get("name") or ""
                        entry["function"]["arguments"] += fn.get("arguments") or ""
                    if piece:
                        timer.token()
                        text.append(piece)
                        yield piece
                    if choice.get("finish_reason"):
                        result.finish_reason = choice["finish_reason"]
        tokens = result.completion_tokens
        result.text = "".join(text)
        timer.fill(result)
        if tokens:
            result.completion_tokens = tokens  # the server's count (pieces may hold several tokens)
        if calls:
            result.tool_calls = [calls[i] for i in sorted(calls)]
        return result

    # -- scoring through prompt logprobs ----------------------------------------------------------

    def loglikelihood(self, requests: Sequence[tuple[str, str]]) -> list[LogLikelihood]:
        """log P(continuation | context): the server scores context + continuation as one prompt.

        The continuation's tokens are those starting at or after the context's end (a token that
        straddles the boundary counts as continuation), found from the returned ``text_offset``.
        """
        out = []
        for context, continuation in requests:
            if not continuation:
                raise UserError(_("A log-likelihood request has an empty continuation; give it some text."))
            entries = self._prompt_logprobs(context + continuation)
            boundary = len(context)
            first = next((i for i, e in enumerate(entries) if e["end"] > boundary), len(entries))
            scored = entries[first:]
            if not scored or any(e["logprob"] is None for e in scored):
                raise Unsupported(
                    _("{url} gave no log-probability for the continuation {continuation!r}.").format(
                        url=self.base_url, continuation=continuation
                    )
                )
            greedy = all(e["logprob"] >= max(e["top"].values(), default=e["logprob"]) - 1e-6 for e in scored)
            out.append(LogLikelihood(logprob=sum(e["logprob"] for e in scored), is_greedy=greedy, n_tokens=len(scored)))
        return out

    def loglikelihood_rolling(self, texts: Sequence[str]) -> list[float]:
        """Total log-likelihood of each text; a first token the server cannot predict (no BOS) adds nothing."""
        return [sum(e["logprob"] for e in self._prompt_logprobs(text) if e["logprob"] is not None) for text in texts]

    def _prompt_logprobs(self, prompt: str) -> list[dict[str, Any]]:
        import requests

        body = {
            "model": self.remote_model,
            "prompt": prompt,
            "echo": True,
            "logprobs": 1,
            "max_tokens": 1,
            "temperature": 0,
        }
        try:
            response = self._session.post(
                f"{self.base_url}/completions",
                headers=self._headers,
                data=json.dumps(body),
                timeout=(10, self._timeout),
            )
        except requests.RequestException as exc:
            raise NetworkError(
                _("Cannot reach {url} ({error}); is the server running?").format(url=self.base_url, error=exc)
            ) from None
        unsupported = Unsupported(
            _(
                "{url} does not return prompt log-probabilities (completions with echo and logprobs), so "
                "it cannot score multiple-choice or perplexity tasks; run generation tasks against it, or "
                "serve the model with internlocal or vLLM."
            ).format(url=self.base_url)
        )
        if response.status_code in (400, 404, 422, 501):
            message = response.text[:300]
            if "context" in message.lower():
                raise ContextOverflow(f"{self.base_url}: {message}")
            raise Unsupported(f"{unsupported} ({response.status_code}: {message})")
        if response.status_code >= 400:
            raise UserError(
                _("{url} answered {status_code}: {body}").format(
                    url=self.base_url, status_code=response.status_code, body=response.text[:200]
                )
            )
        try:
            logprobs = response.json()["choices"][0]["logprobs"]
            tokens, values, offsets = logprobs["tokens"], logprobs["token_logprobs"], logprobs["text_offset"]
            tops = logprobs.get("top_logprobs") or [None] * len(tokens)
        except (ValueError, KeyError, IndexError, TypeError):
            raise unsupported from None
        entries = []
        for token, value, offset, top in zip(tokens, values, offsets, tops, strict=False):
            if offset >= len(prompt):
                break  # the generated token (max_tokens=1), not part of the prompt
            entries.append({"logprob": value, "top": top or {}, "end": offset + len(token)})
        return entries

    def close(self) -> None:
        self._session.close()


class RemoteEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint; its dimension is learnt from one probe request."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None = None,
        model_name: str | None = None,
        timeout: float = 120,
        batch_size: int = 64,
    ):
        import requests

        self.base_url = base_url.rstrip("/")
        self.remote_model = model
        self.model_name = model_name or model
        key = os.environ.get(api_key_env) if api_key_env else None
        self._headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        self._timeout, self._batch = timeout, batch_size
        self._session = requests.Session()
        self._last_usage: tuple[tuple[str, ...], int | None] | None = None  # texts last embedded, their token count
        self.dimension = len(self.embed(["dimension probe"])[0])

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        import requests

        vectors: list[list[float]] = []
        tokens: int | None = 0  # the endpoint's usage, summed over batches; None when a batch reports none
        for start in range(0, len(texts), self._batch):
            batch = list(texts[start : start + self._batch])
            try:
                response = self._session.post(
                    f"{self.base_url}/embeddings",
                    headers=self._headers,
                    timeout=(10, self._timeout),
                    data=json.dumps({"model": self.remote_model, "input": batch}),
                )
            except requests.RequestException as exc:
                raise NetworkError(
                    _("Cannot reach {url} ({error}); is the embedding server running?").format(
                        url=self.base_url, error=exc
                    )
                ) from None
            if response.status_code >= 400:
                raise UserError(
                    _("{url}/embeddings answered {status_code}: {body}").format(
                        url=self.base_url, status_code=response.status_code, body=response.text[:200]
                    )
                )
            try:
                answer = response.json()
                data = sorted(answer["data"], key=lambda d: d["index"])
                vectors.extend([float(x) for x in d["embedding"]] for d in data)
            except (ValueError, KeyError, TypeError):
                raise UserError(
                    _("{url}/embeddings did not answer in the OpenAI format.").format(url=self.base_url)
                ) from None
            usage = answer.get("usage") if isinstance(answer, dict) else None
            used = usage.get("prompt_tokens") if isinstance(usage, dict) else None
            tokens = tokens + used if tokens is not None and isinstance(used, int) else None
        self._last_usage = (tuple(texts), tokens)
        return vectors

    def count_tokens(self, texts: Sequence[str]) -> int:
        """The endpoint's own count: the ``usage`` its embeddings answer reports (texts just embedded are not sent
        again). An endpoint that reports no usage raises ``Unsupported``."""
        last = self._last_usage
        if last is None or last[0] != tuple(texts):
            self.embed(texts)
            last = self._last_usage
        if last is None or last[1] is None:
            raise Unsupported(
                _("{url}/embeddings reports no token usage, so its tokens cannot be counted.").format(url=self.base_url)
            )
        return last[1]
