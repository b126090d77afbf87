"""Errors as OpenAI-shaped JSON, and the guard every request passes: API key, body size, metrics.

Every error leaves the server as ``{"error": {message, type, param, code}}``: our ``APIError``, a
body FastAPI cannot validate, and a ``UserError`` an engine raised (one sentence, status 400).
"""

from __future__ import annotations

import hmac
import time

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from internlocal.errors import UserError
from internlocal.server.openai_schema import APIError
from internlocal.server.state import ServerConfig, ServerState


async def api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)  # registered for APIError only (Starlette types handlers by Exception)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return JSONResponse(APIError(400, "The request body is not valid JSON.").body(), status_code=400)
    message = f"Invalid value for {'.'.join(loc) or 'the request'}: {err.get('msg')}."
    return JSONResponse(APIError(400, message, param=".".join(loc) or None).body(), status_code=400)


async def http_error(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own refusals (a body that is not JSON text at all, an unknown path, a wrong method) in the same
    OpenAI shape as every other error."""
    assert isinstance(exc, StarletteHTTPException)
    message = (
        "The request body is not valid JSON." if exc.detail == "There was an error parsing the body" else exc.detail
    )
    return JSONResponse(
        APIError(exc.status_code, str(message)).body(), status_code=exc.status_code, headers=exc.headers
    )


async def user_error(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(APIError(400, str(exc)).body(), status_code=400)


def key_matches(authorization: str, api_key: str) -> bool:
    """``Authorization: Bearer <key>``, compared in constant time."""
    return hmac.compare_digest(authorization.encode(), f"Bearer {api_key}".encode())


class Guard:
    """The API key (paths under ``/v1/``), the body size limit, and a metrics entry for every request.

    Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware`` passes every
    chunk of a streamed response through an extra memory stream and task, which costs the event loop
    (and, on a small machine, the decode threads it shares the cores with) work for every token.
    """

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = ServerState.of(scope["app"])
        metrics = state.metrics
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        refusal = refuse(state.config, path, Headers(scope=scope))
        if refusal is not None:
            metrics.request(path, refusal.status_code)
            return await refusal(scope, receive, send)
        answered = False

        async def timed_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":  # timed until the response starts, as a client sees it
                answered = True
                metrics.request(path, message["status"], time.perf_counter() - started, method)
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        except Exception:  # Starlette's outermost middleware answers 500 for it
            if not answered:
                metrics.request(path, 500, time.perf_counter() - started, method)
            raise


def refuse(config: ServerConfig, path: str, headers: Headers) -> JSONResponse | None:
    """The answer to a request without the API key or with too large a body; None lets it through."""
    if config.api_key and path.startswith("/v1/") and not key_matches(headers.get("authorization", ""), config.api_key):
        return JSONResponse(
            APIError(
                401,
                "Invalid or missing API key; send Authorization: Bearer <key>.",
                type_="authentication_error",
                code="invalid_api_key",
            ).body(),
            status_code=401,
        )
    length = headers.get("content-length")
    if length and length.isdigit() and int(length) > config.max_body_bytes:
        return JSONResponse(
            APIError(413, f"The request body is larger than {config.max_body_bytes} bytes.").body(), status_code=413
        )
    return None


def install(app: FastAPI) -> None:
    """The error handlers and the guard, on ``app`` (whose ``ServerState`` is attached)."""
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(UserError, user_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(Guard)
