"""A scripted model: a real OpenAI-compatible HTTP server on 127.0.0.1 whose replies a test sets.

For what the 135M embedded model cannot do on demand (loop on purpose, judge relevance, call a tool
when told to): register it as a remote model, or point a ``RemoteEngine`` at ``url``. Each reply is
streamed as OpenAI streams it (one chunk per ``piece``), or answered whole; ``requests`` keeps the
bodies the server received.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class ScriptedModel:
    def __init__(self) -> None:
        # each reply as its streamed pieces, or a tool call, served in order (the last repeats)
        self.replies: list[list[str] | dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.delay_s = 0.0  # between streamed pieces
        self.url = ""
        self.sent_pieces = 0  # pieces actually written, across replies (a client that stops early sees fewer)

    def reply(self, *pieces: str) -> None:
        self.replies.append(list(pieces))

    def call_tool(self, name: str, arguments: dict[str, Any]) -> None:
        """A reply that is one tool call (what a model steered by a document would send)."""
        self.replies.append({"name": name, "arguments": json.dumps(arguments)})

    def _next(self) -> list[str] | dict[str, Any]:
        return self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]


def _handler(model: ScriptedModel):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep the test output clean
            pass

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._json({"object": "list", "data": [{"id": "scripted", "object": "model"}]})
            else:
                self.send_error(404)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            model.requests.append(body)
            pieces = model._next()
            chat = self.path.endswith("/chat/completions")
            if isinstance(pieces, dict):
                self._tool_call(pieces, bool(body.get("stream")))
                return
            if not body.get("stream"):
                text = "".join(pieces)
                choice = {"index": 0, "finish_reason": "stop"}
                choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
                self._json({"id": "x", "object": "chat.completion", "choices": [choice], "usage": _usage(text)})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            try:
                for piece in pieces:
                    delta = {"delta": {"content": piece}} if chat else {"text": piece}
                    self._event({"id": "x", "choices": [{"index": 0, "finish_reason": None, **delta}]})
                    model.sent_pieces += 1
                    if model.delay_s:
                        time.sleep(model.delay_s)
                end = {"delta": {}} if chat else {"text": ""}
                self._event({"id": "x", "choices": [{"index": 0, "finish_reason": "stop", **end}]})
                self._event({"id": "x", "choices": [], "usage": _usage("".join(pieces))})
                self.wfile.write(b"data: [DONE]\n\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client stopped reading

        def _tool_call(self, call: dict[str, Any], stream: bool) -> None:
            entry = {"id": "call_1", "type": "function", "function": call}
            if not stream:
                message = {"role": "assistant", "content": None, "tool_calls": [entry]}
                choice = {"index": 0, "finish_reason": "tool_calls", "message": message}
                self._json({"id": "x", "object": "chat.completion", "choices": [choice], "usage": _usage("")})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            delta = {"role": "assistant", "tool_calls": [{"index": 0, **entry}]}
            self._event({"id": "x", "choices": [{"index": 0, "finish_reason": None, "delta": delta}]})
            self._event({"id": "x", "choices": [{"index": 0, "finish_reason": "tool_calls", "delta": {}}]})
            self.wfile.write(b"data: [DONE]\n\n")

        def _event(self, payload: dict[str, Any]) -> None:
            self.wfile.write(f"data: {json.dumps(payload)}\n\n".encode())
            self.wfile.flush()

        def _json(self, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _usage(text: str) -> dict[str, int]:
    n = len(text.split())
    return {"prompt_tokens": 1, "completion_tokens": n, "total_tokens": n + 1}


@contextmanager
def scripted_model() -> Iterator[ScriptedModel]:
    """A ``ScriptedModel`` served on a free loopback port for the block; ``model.url`` ends in ``/v1``."""
    model = ScriptedModel()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(model))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    model.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    try:
        yield model
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
