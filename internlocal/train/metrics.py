"""A run's ``metrics.jsonl``: the loop appends one JSON line per event, the job, the CLI and the Train screen
follow it (LLaMA-Factory's ``trainer_log.jsonl`` idea: the UI only tails a file).

Events: ``start``, ``step`` (loss, lr, grad_norm, tokens/s, peak memory, ETA …), ``eval`` (validation
loss and sample answers), ``checkpoint``, ``warning``, ``resumed``, ``stopped``, ``done``, ``error``.
A resumed run rewrites the file without the events after its checkpoint, so the curve continues
from there and not from the crash; readers see a new file and start over.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from internlocal.errors import TrainingError
from internlocal.i18n import _

KEPT_ON_RESUME = ("step", "eval", "checkpoint", "warning")


class MetricsLog:
    """The loop's side: append events (the leader process only writes)."""

    def __init__(self, path: Path, writes: bool):
        self.path, self.writes = path, writes

    def emit(self, kind: str, **values: Any) -> None:
        if not self.writes:
            return
        try:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"type": kind, "t": round(time.time(), 3), **values}, ensure_ascii=False) + "\n")
        except OSError as exc:  # a full disk: one sentence (the last checkpoint is intact) instead of a trace
            if kind == "error":
                return  # reporting the error itself failed: stderr still has it
            raise TrainingError(
                _(
                    "Could not write {file} ({reason}); free disk space and resume the run from its last checkpoint."
                ).format(file=self.path.name, reason=exc.strerror or exc)
            ) from None

    def start_over(self) -> None:
        """A fresh run (or a resume with no checkpoint yet): a fresh curve."""
        if self.writes:
            self.path.unlink(missing_ok=True)

    def keep_until(self, step: int) -> None:
        """Drop the events after ``step`` (a resume from its checkpoint); written to a new file and renamed."""
        if not self.writes or not self.path.exists():
            return
        events = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [
            line
            for line in events
            if json.loads(line).get("step", 0) <= step and json.loads(line).get("type") in KEPT_ON_RESUME
        ]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, self.path)  # a new file: readers following the old one start over

    def last_loss(self) -> float | None:
        if not self.writes or not self.path.exists():
            return None
        losses = [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        steps = [e["loss"] for e in losses if e.get("type") == "step"]
        return steps[-1] if steps else None


class MetricsTail:
    """Follows a run's metrics.jsonl: complete lines since the last read. A resumed run rewrites the file
    (steps after its checkpoint are dropped), so a new file means reading again from the start."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.inode: int | None = None
        self.offset = 0

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """(new events, restarted): ``restarted`` means the file was replaced and the events start over."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return [], False
        restarted = self.inode is not None and (stat.st_ino != self.inode or stat.st_size < self.offset)
        if restarted or self.inode is None:
            self.inode, self.offset = stat.st_ino, 0
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        events = [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]
        return events, restarted
