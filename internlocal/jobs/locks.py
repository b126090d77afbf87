"""What must not run twice at once: a knowledge base's sync, a training run, a model's conversion, a pull.

Each holds an OS file lock (``filelock``: ``flock`` on Linux, released by the kernel when its holder dies,
even by SIGKILL, so a crashed job never leaves a stale lock) and writes who holds it beside the lock. A
second one waits, saying for what and cancellable, or is refused with a sentence naming the holder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.jobs.context import JobContext


def holder(lock_path: Path) -> str:
    """Who holds the lock, as the holder wrote it ("pid 1234, job 7"), or "another process"."""
    try:
        info = json.loads(lock_path.with_name(lock_path.name + ".owner").read_text())
        if info.get("job"):
            return _("pid {pid}, job {job}").format(pid=info["pid"], job=info["job"])
        return _("pid {pid}").format(pid=info["pid"])
    except (OSError, ValueError, KeyError):
        return _("another process")


@contextmanager
def exclusive(lock_path: Path, what: str, *, wait: bool, ctx: JobContext | None = None) -> Iterator[None]:
    """Run the body holding ``lock_path``. Held elsewhere: with ``wait``, wait for it (a job says so in its log
    and stays cancellable); without, refuse with a sentence that says what is running and where."""
    from filelock import FileLock, Timeout

    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        who = holder(lock_path)
        if not wait:
            raise UserError(
                _("{what} is already running ({who}); wait for it to finish, or cancel it first.").format(
                    what=what, who=who
                )
            ) from None
        if ctx is not None:
            ctx.log(f"waiting: {what} is already running ({who})")
        while True:
            if ctx is not None:
                ctx.check_cancelled()
            try:
                lock.acquire(timeout=0.5)
                break
            except Timeout:
                time.sleep(0)
    owner = lock_path.with_name(lock_path.name + ".owner")
    owner.write_text(json.dumps({"pid": os.getpid(), "job": ctx.job_id if ctx is not None else None}))
    try:
        yield
    finally:
        owner.unlink(missing_ok=True)
        lock.release()
