"""OpenAI request bodies (the parts we honour) and OpenAI-style errors."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field


class APIError(Exception):
    """Becomes ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type_: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")  # clients send fields we do not use (user, logit_bias, …)


class FunctionSpec(_Lenient):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolSpec(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionSpec


class StreamOptions(_Lenient):
    include_usage: bool = False


class SamplingFields(_Lenient):
    """The fields a generation request may carry. Every one is honoured; a field not declared here is
    refused by name (``refuse_unknown``), except the few in ``IGNORED`` that cannot change an answer."""

    IGNORED: ClassVar[frozenset[str]] = frozenset(
        {"user", "metadata", "store", "safety_identifier", "prompt_cache_key"}  # bookkeeping for OpenAI's side
    )

    model: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1)
    repeat_penalty: float | None = Field(None, ge=0.5, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    min_p: float | None = Field(None, ge=0, le=1)
    logit_bias: dict[str, float] | None = None
    response_format: dict[str, Any] | None = None
    service_tier: Literal["auto", "default"] | None = None  # one tier here; others are refused
    # internlocal's own: end a generation that repeats itself (unset: the server's --repetition-stop setting)
    stop_on_repetition: bool | None = None

    def refuse_unknown(self) -> None:
        for name in self.model_extra or {}:
            if name not in self.IGNORED:
                raise APIError(400, f"The field {name!r} is not supported by this server; leave it out.", param=name)


class ChatMessageIn(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        """The content as text, for endpoints that take text only (the Ollama API's chat)."""
        if isinstance(self.content, list):  # content parts: only text parts are supported here
            parts = []
            for part in self.content:
                if part.get("type") != "text":
                    raise APIError(
                        400, f"Content part type {part.get('type')!r} is not supported; send text.", param="messages"
                    )
                parts.append(str(part.get("text", "")))
            return "".join(parts)
        return self.content or ""


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessageIn] = Field(min_length=1)
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True  # false: at most one tool call per reply
    logprobs: bool = False  # the generated tokens' log-probabilities
    top_logprobs: int | None = Field(None, ge=0, le=20)  # and the likeliest alternatives at each (needs logprobs)


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False
    logprobs: int | None = Field(
        None, ge=0, le=20
    )  # each token's log-probability and the top n (echo: the prompt's too)
    max_tokens: int | None = Field(None, ge=0)  # 0 is allowed with echo + logprobs (score the prompt only)


class EmbeddingRequest(_Lenient):
    model: str | None = None
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"  # the openai client asks for base64 float32
