"""Errors as OpenAI-shaped JSON, and the guard every request passes: API key, body size, request id, metrics.

Every error leaves the server as ``{"error": {message, type, param, code}}``: our ``APIError``, a
body FastAPI cannot validate, and a ``UserError`` an engine raised (one sentence, status 400).
"""

from __future__ import annotations

import hmac
import logging
import re
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from internlocal.errors import UserError
from internlocal.server.openai_schema import APIError
from internlocal.server.state import ServerConfig, ServerState


def shaped(path: str, error: APIError) -> JSONResponse:
    """The error in its API's shape: Ollama's ``{"error": "…"}`` under ``/api/``, OpenAI's everywhere else."""
    if path.startswith("/api/"):
        return JSONResponse({"error": error.message}, status_code=error.status, headers=error.headers)
    return JSONResponse(error.body(), status_code=error.status, headers=error.headers)


def answer(request: Request, error: APIError) -> JSONResponse:
    return shaped(request.url.path, error)


async def api_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)  # registered for APIError only (Starlette types handlers by Exception)
    return answer(request, exc)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return answer(request, APIError(400, "The request body is not valid JSON."))
    if err.get("type") == "extra_forbidden":
        message = f"The field {loc[-1]!r} is not supported by this server; leave it out."
    else:
        message = f"Invalid value for {'.'.join(loc) or 'the request'}: {err.get('msg')}."
    return answer(request, APIError(400, message, param=".".join(loc) or None))


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own refusals (a body that is not JSON text at all, an unknown path, a wrong method) in the same
    shape as every other error."""
    assert isinstance(exc, StarletteHTTPException)
    message = (
        "The request body is not valid JSON." if exc.detail == "There was an error parsing the body" else exc.detail
    )
    return answer(request, APIError(exc.status_code, str(message), headers=dict(exc.headers or {})))


async def user_error(request: Request, exc: Exception) -> JSONResponse:
    return answer(request, APIError(400, str(exc), param=getattr(exc, "field", None)))


def key_matches(authorization: str, api_key: str) -> bool:
    """``Authorization: Bearer <key>``, compared in constant time."""
    return hmac.compare_digest(authorization.encode(), f"Bearer {api_key}".encode())


OPEN_PATHS = frozenset({"/health"})  # the only route answered without the key when one is set (load balancers)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

log = logging.getLogger("internlocal.server")


def request_id(headers: Headers) -> str:
    """The client's ``X-Request-ID`` when it is a sane token, else a new one; answered in the same header and
    logged with the request, so a client's report can be matched to the server's log."""
    given = headers.get("x-request-id", "")
    return given if REQUEST_ID.match(given) else f"req-{uuid.uuid4().hex[:24]}"


class Guard:
    """The API key (every route but ``/health``), the body size limit, a request id, and a metrics entry and a
    log line for every request.

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
        headers = Headers(scope=scope)
        ident = request_id(headers)
        answered = False

        def done(status: int) -> None:
            seconds = time.perf_counter() - started
            metrics.request(path, status, seconds, method, ident)
            log.info("%s %s %s %d %.1f ms", ident, method, path, status, seconds * 1000)

        async def timed_send(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start":  # timed until the response starts, as a client sees it
                answered = True
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", ident.encode())]}
                done(message["status"])
            await send(message)

        refusal = refuse(state.config, path, method, headers)
        if refusal is not None:
            return await shaped(path, refusal)(scope, receive, timed_send)
        try:
            await self.app(scope, receive, timed_send)
        except Exception:  # Starlette's outermost middleware answers 500 for it
            if not answered:
                done(500)
            raise


def refuse(config: ServerConfig, path: str, method: str, headers: Headers) -> APIError | None:
    """The answer to a request without the API key or with too large a body; None lets it through.

    One rule for every route (OpenAI's, Ollama's, /metrics, the TUI's log, any added later) but ``/health``:
    with a key set, a request carries it. A browser's CORS preflight carries no credentials by design, so
    OPTIONS passes to the CORS layer, which answers it without reaching a route."""
    if (
        config.api_key
        and path not in OPEN_PATHS
        and not (method == "OPTIONS" and config.cors_origins)
        and not key_matches(headers.get("authorization", ""), config.api_key)
    ):
        return APIError(
            401,
            "Invalid or missing API key; send Authorization: Bearer <key>.",
            type_="authentication_error",
            code="invalid_api_key",
        )
    length = headers.get("content-length")
    if length and length.isdigit() and int(length) > config.max_body_bytes:
        return APIError(413, f"The request body is larger than {config.max_body_bytes} bytes.")
    return None


def install(app: FastAPI) -> None:
    """The error handlers, CORS (only for the origins configured) and the guard, on ``app`` (whose
    ``ServerState`` is attached). The guard is added last, so it runs first."""
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(UserError, user_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    origins = ServerState.of(app).config.cors_origins
    if origins:  # off by default: a web page on another origin cannot read this server's answers
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(Guard)
