"""Run model-written Python in a subprocess with limits: memory, CPU, wall clock, output, no network.

Layers, each cheap and each covering what the others miss:

- bubblewrap (Debian's ``bubblewrap``), where the machine has it and may create namespaces: the code
  sees a read-only system (``/usr``, the libraries, Python's own installation), a writable scratch
  folder and an empty ``/tmp`` and home, nothing else of the user's files; no network at all
  (``--unshare-net``: only a loopback nobody listens on) and its own process tree. Without it the
  layers below remain, and the tool says once that it runs with the weaker guard;
- a separate process (``sys.executable -I``: no user site, no cwd on the path, PYTHON* ignored)
  in its own session, in a fresh empty folder, with a minimal environment;
- ``RLIMIT_AS`` (allocations fail → ``MemoryError``), ``RLIMIT_CPU`` (SIGXCPU on a busy loop),
  and a wall-clock deadline after which the whole process group is killed;
- output read by the parent with a cap, so a print loop cannot fill our memory;
- an audit hook installed before the code runs (audit hooks cannot be removed) that refuses
  socket connect/bind/resolve and starting processes. This is a guard against a model's
  mistakes and casual misuse, not a boundary against a determined attacker (ctypes tricks are
  refused too, but native extensions can still do anything): run untrusted code in a container.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path

OUTPUT_CAP = 16_000  # bytes kept per stream

SCRATCH = "/scratch"  # the only writable folder the code sees under bubblewrap (its working directory)
SANDBOX_HOME = "/home/sandbox"  # an empty tmpfs home
# What of /etc the interpreter needs (the dynamic loader's cache, the time zone); not passwd, shadow or the
# rest of the machine's configuration.
_ETC = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives")
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64")

WEAK_GUARD_NOTE = (
    "The python tool runs without bubblewrap ({why}): network and new processes are blocked, but the code can "
    "read and write any file you can. Install bubblewrap (Debian/Ubuntu: apt install bubblewrap) for a sandbox "
    "that sees only a scratch folder."
)

# Runs in the child before the model's code; sys.argv[1:] carries nothing, the code comes on stdin.
_PRELUDE = r"""
import sys

def _guard():
    blocked_prefixes = ("socket.connect", "socket.bind", "socket.getaddrinfo", "socket.gethostbyname",
                        "socket.gethostbyaddr", "socket.sendto", "socket.sendmsg", "subprocess.Popen",
                        "os.system", "os.exec", "os.spawn", "os.posix_spawn", "os.fork", "os.forkpty",
                        "pty.spawn", "ctypes.dlsym", "ctypes.call_function", "ctypes.cdata",
                        "sys.remote_exec", "webbrowser.open")

    def hook(event, args):
        if event == "import" and args and args[0] == "_posixsubprocess":
            event = "subprocess.Popen"  # a fresh copy of the module would bring back fork_exec
        if event.startswith(blocked_prefixes):
            kind = "network access" if event.startswith("socket.") else (
                "starting processes" if event.startswith(("subprocess", "os.", "pty.")) else "this operation")
            raise PermissionError(f"{kind} is not allowed in the python tool (blocked {event})")

    # fork_exec (what subprocess and multiprocessing use) raises no audit event of its own
    import _posixsubprocess

    def fork_exec(*args, **kwargs):
        raise PermissionError("starting processes is not allowed in the python tool")

    _posixsubprocess.fork_exec = fork_exec
    sys.addaudithook(hook)

_guard()
del _guard
sys.stdout.reconfigure(encoding="utf-8", errors="replace")
sys.stderr.reconfigure(encoding="utf-8", errors="replace")
_source = sys.stdin.read()
sys.stdin = open("/dev/null")
del sys

def _run(source):
    import ast, sys, traceback
    try:
        tree = ast.parse(source, "<code>", "exec")
    except SyntaxError as exc:
        print(f"SyntaxError: {exc.msg} (line {exc.lineno})", file=sys.stderr)
        sys.exit(1)
    last = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):  # show a last bare expression, as a notebook does
        last = ast.Expression(tree.body.pop().value)
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(tree, "<code>", "exec"), scope)
        if last is not None:
            value = eval(compile(last, "<code>", "eval"), scope)
            if value is not None:
                print(repr(value))
    except MemoryError:
        print("MemoryError: the code ran out of memory", file=sys.stderr)
        sys.exit(3)
    except SystemExit:
        raise
    except BaseException as exc:
        # only the model's own frames: the prelude's are noise to it
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<code>"]
        where = f" (line {frames[-1].lineno})" if frames else ""
        print(f"{type(exc).__name__}{where}: {exc}", file=sys.stderr)
        sys.exit(1)

_run(_source)
"""


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    returncode: int | None
    timed_out: bool
    killed_for_memory: bool
    output_cut: bool = False
    isolation: str = "guard"  # "bubblewrap", or "guard": the audit hook and limits only


@dataclass(frozen=True)
class Isolation:
    """How the python tool will run here: under bubblewrap, or with the weaker guard and why."""

    bubblewrap: str | None  # the bwrap executable that works here
    why_not: str | None = None

    @property
    def name(self) -> str:
        return "bubblewrap" if self.bubblewrap else "guard"

    @property
    def note(self) -> str | None:
        """The sentence to show once when the sandbox is the weaker one; None under bubblewrap."""
        return None if self.bubblewrap else WEAK_GUARD_NOTE.format(why=self.why_not)


@cache
def isolation() -> Isolation:
    """Whether bubblewrap is installed and can make its namespaces here (probed once per process: a kernel or a
    container may forbid user namespaces even where the binary exists)."""
    found = shutil.which("bwrap")
    if found is None:
        return Isolation(None, "bubblewrap is not installed")
    try:
        probe = subprocess.run(
            [found, *_bwrap_args(tempfile.gettempdir()), "--", sys.executable, "-I", "-c", "pass"],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Isolation(None, f"bubblewrap did not start: {exc}")
    if probe.returncode != 0:
        detail = probe.stderr.decode("utf-8", "replace").strip().splitlines()
        return Isolation(
            None, f"bubblewrap cannot create its sandbox here: {detail[-1] if detail else probe.returncode}"
        )
    return Isolation(found)


def _bwrap_args(workdir: str) -> list[str]:
    """bubblewrap's view of the machine: read-only system and Python, a writable scratch folder, nothing else."""
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    # the empty /tmp and home first: Python's installation is bound on top of them below, since a venv often
    # lives under the user's home or /tmp (mounted later, the tmpfs would hide it)
    args += ["--tmpfs", "/tmp", "--tmpfs", "/home", "--dir", SANDBOX_HOME]
    shared: list[str] = [*_SYSTEM, *_ETC]
    # Python's installation and, for a venv, the venv (its bin/python links to the base interpreter; pyvenv.cfg
    # beside it brings the venv's packages): read-only like the system
    executable = Path(sys.executable)
    for path in (
        sys.base_prefix,
        sys.prefix,
        sys.exec_prefix,
        str(executable.parent),
        str(executable.resolve().parent),
    ):
        shared.append(path)
    seen: set[str] = set()
    for path in shared:
        if path in seen:
            continue
        seen.add(path)
        args += ["--ro-bind-try", path, path]
    args += ["--proc", "/proc", "--dev", "/dev", "--bind", workdir, SCRATCH, "--chdir", SCRATCH]
    return args


def run_python(
    code: str, timeout_s: float = 10, memory_mb: int = 512, *, bubblewrap: bool | None = None
) -> SandboxResult:
    """Run ``code`` in a limited subprocess and return what it printed and how it ended.

    ``bubblewrap``: None uses it where it works (``isolation()``); True requires it; False is the guard alone.
    """
    where = isolation()
    if bubblewrap and where.bubblewrap is None:
        raise RuntimeError(where.note)
    use = where.bubblewrap if bubblewrap is not False else None
    with tempfile.TemporaryDirectory(prefix="internlocal-python-") as workdir:
        if use:
            env = {"HOME": SANDBOX_HOME, "TMPDIR": "/tmp", "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"}
            command = [use, *_bwrap_args(workdir), "--", sys.executable, "-I", "-c", _PRELUDE]
        else:
            env = {"HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "PATH": "/usr/bin:/bin"}
            command = [sys.executable, "-I", "-c", _PRELUDE]
        proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workdir,
            env=env,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_limits(timeout_s, memory_mb),
        )
        out, err = _Reader(proc.stdout), _Reader(proc.stderr)
        try:
            assert proc.stdin is not None  # stdin=PIPE
            proc.stdin.write(code.encode("utf-8", "replace"))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # the child died at start (e.g. memory limit too small); its stderr says why
        deadline = time.monotonic() + timeout_s
        timed_out = False
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait()
        _kill_group(proc)  # anything the code left behind in its session
        out.join()
        err.join()
        stderr = err.text()
        returncode = proc.returncode
        if use and returncode is not None and returncode > 128 and proc.returncode - 128 in _SIGNALS:
            returncode = -(returncode - 128)  # bubblewrap passes a signal death on as 128 + the signal
        if returncode == -signal.SIGXCPU:
            timed_out = True
        killed_for_memory = (returncode == 3 and "MemoryError" in stderr) or (
            returncode is not None and returncode < 0 and "MemoryError" in stderr
        )
        return SandboxResult(
            stdout=out.text(),
            stderr=stderr,
            returncode=returncode,
            timed_out=timed_out,
            killed_for_memory=killed_for_memory,
            output_cut=out.cut or err.cut,
            isolation="bubblewrap" if use else "guard",
        )


def describe(result: SandboxResult, timeout_s: float, memory_mb: int) -> str:
    """A sandbox result as the text a model reads."""
    parts = []
    if result.stdout:
        parts.append(result.stdout.rstrip("\n"))
    if result.timed_out:
        parts.append(f"Error: the code was stopped after its time limit of {timeout_s:g} s.")
    elif result.killed_for_memory:
        parts.append(f"Error: the code ran out of memory (limit {memory_mb} MB).")
    elif result.returncode:
        detail = result.stderr.strip() or f"exit status {result.returncode}"
        parts.append(f"Error: {detail}")
    elif result.stderr.strip():
        parts.append(f"(stderr) {result.stderr.strip()}")
    if result.output_cut:
        parts.append(f"[output cut at {OUTPUT_CAP} bytes]")
    return "\n".join(parts) if parts else "The code ran and printed nothing; print() the values you need."


def _limits(timeout_s: float, memory_mb: int):
    def apply() -> None:  # runs in the child between fork and exec: keep it to system calls
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (memory_mb * 2**20, memory_mb * 2**20))
        cpu = max(1, int(timeout_s + 1))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


_SIGNALS = {int(s) for s in signal.Signals}


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


class _Reader:
    """Drains a pipe in a thread, keeping the first OUTPUT_CAP bytes (draining the rest lets the child finish)."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self._chunks: list[bytes] = []
        self._kept = 0
        self.cut = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while chunk := self._stream.read1(65536):
            room = OUTPUT_CAP - self._kept
            if room > 0:
                self._chunks.append(chunk[:room])
                self._kept += min(room, len(chunk))
            if len(chunk) > room:
                self.cut = True
        self._stream.close()

    def join(self) -> None:
        self._thread.join(timeout=5)

    def text(self) -> str:
        return b"".join(self._chunks).decode("utf-8", "replace")
