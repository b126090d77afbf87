"""Child processes that never outlive the process that owns them.

A job's worker is detached on purpose (it outlives the window that started it), but what the worker
starts — the training loop and its ranks, the GGUF converter, a tokenizing pool, an LMDeploy server —
belongs to it: when the worker dies, even by SIGKILL (which runs no cleanup), Linux's parent-death
signal ends them too, so a killed job leaves no process behind holding memory or a GPU.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Arm SIGKILL for this process when its parent dies; ``parent`` (the pid that started us) closes the race
    where the parent died before the signal was armed. Elsewhere than Linux this does nothing."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent is not None and os.getppid() != parent:
        os._exit(1)


def owned_child() -> Callable[[], None]:
    """``preexec_fn`` for ``subprocess.Popen``: the child dies with the process (thread) that starts it."""
    parent = os.getpid()
    return lambda: die_with_parent(parent)
