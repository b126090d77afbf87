"""The one progress mechanism: each job appends JSON events to its own JSONL file.

Event types (every event has ``t``, seconds since the epoch, and ``type``):

- ``status``   {"status": "running" | "succeeded" | ...}
- ``progress`` {"done": n, "total": n | null, "unit": "bytes", "message": "…"}
- ``metric``   {"step": n, "loss": …, …}   (free-form numbers, e.g. one line per training step)
- ``log``      {"level": "info", "message": "…"}
- ``result``   {"result": …}
- ``error``    {"message": "…"}

Writers append whole lines and flush; readers tail the file by byte offset and ignore a last
line that is still being written. The TUI and the CLI both read these files.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class EventWriter:
    def __init__(self, path: Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._fh = self.path.open("a", encoding="utf-8")

    def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"t": round(time.time(), 3), "type": type_, **fields}
        line = json.dumps(event, ensure_ascii=False, default=str) + "\n"
        with self._lock:
            self._fh.write(line)
            self._fh.flush()
        return event

    def close(self) -> None:
        with self._lock:
            self._fh.close()


def read_events(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events written since byte ``offset``, and the offset to continue from."""
    try:
        with Path(path).open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1  # a partial last line is left for the next read
    events = []
    for raw in data[:end].splitlines():
        if raw.strip():
            try:
                events.append(json.loads(raw))
            except json.JSONDecodeError:
                continue  # a line torn by a crash mid-write is skipped, the rest still reads
    return events, offset + end


@dataclass
class Progress:
    """A job's progress as the last progress events describe it."""

    done: float = 0
    total: float | None = None
    unit: str = ""
    message: str = ""
    rate: float | None = None  # units per second over the recent window
    eta_s: float | None = None

    @property
    def fraction(self) -> float | None:
        if not self.total:
            return None
        return min(1.0, self.done / self.total)


class ProgressTracker:
    """Folds a stream of events into a ``Progress`` (rate and ETA over the last ~10 s)."""

    WINDOW_S = 10.0

    def __init__(self) -> None:
        self.progress = Progress()
        self._samples: list[tuple[float, float]] = []
        self.status: str | None = None
        self.last_metric: dict[str, Any] | None = None
        self.logs: list[dict[str, Any]] = []
        self.result: Any = None
        self.error: str | None = None

    def feed(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            kind = event.get("type")
            if kind == "progress":
                self._on_progress(event)
            elif kind == "status":
                self.status = event.get("status")
                if self.status == "running":
                    self._samples.clear()  # a resumed job's rate starts afresh
            elif kind == "metric":
                self.last_metric = event
            elif kind == "log":
                self.logs.append(event)
            elif kind == "result":
                self.result = event.get("result")
            elif kind == "error":
                self.error = event.get("message")

    def _on_progress(self, event: dict[str, Any]) -> None:
        p = self.progress
        p.done = event.get("done", p.done)
        p.total = event.get("total", p.total)
        p.unit = event.get("unit", p.unit) or ""
        p.message = event.get("message", p.message) or ""
        t = event["t"]
        self._samples.append((t, p.done))
        while len(self._samples) > 2 and t - self._samples[0][0] > self.WINDOW_S:
            self._samples.pop(0)
        (t0, d0), (t1, d1) = self._samples[0], self._samples[-1]
        if t1 > t0 and d1 >= d0:
            p.rate = (d1 - d0) / (t1 - t0)
            p.eta_s = (p.total - p.done) / p.rate if p.total and p.rate > 0 else None
