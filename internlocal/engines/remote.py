"""Any OpenAI-compatible endpoint as an engine: an existing Ollama, vLLM, LMDeploy or internlocal server.

Chat and completion stream over SSE; JSON output and tools are passed through to the server.
Tokenization and log-likelihoods stay with the server's own API, which the OpenAI protocol does
not expose, so they raise ``Unsupported``.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Generator
from typing import Any

from internlocal.engines.base import (
    Capability,
    EngineBase,
    Generation,
    GenerationParams,
    GenerationResult,
    StreamTimer,
)
from internlocal.errors import UserError


class RemoteEngine(EngineBase):
    engine_name = "remote OpenAI endpoint"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.CONSTRAINED, Capability.TOOLS})

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, api_key_env: str | None = None,
                 model_name: str | None = None, context_length: int = 0, timeout: float = 600):
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
        body: dict[str, Any] = {"model": self.remote_model, "stream": True, "stream_options": {"include_usage": True},
                                "temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens}
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = params.stop
        body.update({k: v for k, v in extra.items() if v is not None})
        return body

    def chat(self, messages, params=None, *, response_format=None, tools=None, tool_choice=None) -> Generation:
        params = params or GenerationParams()
        body = self._body(params, messages=list(messages), response_format=response_format,
                          tools=list(tools) if tools else None, tool_choice=tool_choice)
        cancel = threading.Event()
        return Generation(self._stream("/chat/completions", body, cancel, chat=True), cancel)

    def complete(self, prompt, params=None, *, response_format=None) -> Generation:
        params = params or GenerationParams()
        cancel = threading.Event()
        return Generation(self._stream("/completions", self._body(params, prompt=prompt), cancel, chat=False), cancel)

    def _stream(self, path: str, body: dict, cancel: threading.Event, *, chat: bool) -> Generator[str, None, GenerationResult]:
        import requests

        url = f"{self.base_url}{path}"
        result = GenerationResult(finish_reason="stop")
        timer = StreamTimer()
        text: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        try:
            response = self._session.post(url, headers=self._headers, data=json.dumps(body), stream=True, timeout=(10, self._timeout))
        except requests.RequestException as exc:
            raise UserError(f"Cannot reach {self.base_url} ({exc}); is the server running?") from None
        with response:
            if response.status_code >= 400:
                try:
                    message = response.json().get("error", {}).get("message") or response.text[:200]
                except ValueError:
                    message = response.text[:200]
                hint = " (check the API key)" if response.status_code in (401, 403) else ""
                raise UserError(f"{self.base_url} answered {response.status_code}: {message}{hint}")
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
                        entry = calls.setdefault(call.get("index", 0), {"id": call.get("id"), "type": "function",
                                                                        "function": {"name": "", "arguments": ""}})
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

    def close(self) -> None:
        self._session.close()
