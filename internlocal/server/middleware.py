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
from starlette.exceptions import HTTPException as StarletteHTTPException

from internlocal.errors import UserError
from internlocal.server.openai_schema import APIError
from internlocal.server.state import ServerState


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


async def guard(request: Request, call_next):
    """The API key (paths under ``/v1/``), the body size limit, and a metrics entry for every request."""
    state = ServerState.of(request.app)
    config, metrics = state.config, state.metrics
    started = time.perf_counter()
    path = request.url.path
    if (
        config.api_key
        and path.startswith("/v1/")
        and not key_matches(request.headers.get("authorization", ""), config.api_key)
    ):
        metrics.request(path, 401)
        return JSONResponse(
            APIError(
                401,
                "Invalid or missing API key; send Authorization: Bearer <key>.",
                type_="authentication_error",
                code="invalid_api_key",
            ).body(),
            status_code=401,
        )
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > config.max_body_bytes:
        metrics.request(path, 413)
        return JSONResponse(
            APIError(413, f"The request body is larger than {config.max_body_bytes} bytes.").body(), status_code=413
        )
    response = await call_next(request)
    metrics.request(path, response.status_code, time.perf_counter() - started, request.method)
    return response


def install(app: FastAPI) -> None:
    """The error handlers and the guard, on ``app`` (whose ``ServerState`` is attached)."""
    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(UserError, user_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.middleware("http")(guard)
