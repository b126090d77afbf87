"""Start-up: time from launching `internlocal` to the first painted Chat screen, in a real terminal.

Drives tmux as a person would: a fresh tmux window runs the command, and the screen is polled
(capture-pane every 5 ms; tmux's own start, ~10 ms, is included) until the Chat screen's text appears, then until
the catalog has filled in (status line says "ready"). The floor it is compared with is a minimal Textual app
(one Static, same Python, same terminal): the cost of Python + Textual alone.

    python benchmarks/startup.py [--runs 7]

Target (issue 2): first paint ≤ 0.8 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOOR_APP = """
from textual.app import App
from textual.widgets import Static
class Floor(App):
    def compose(self):
        yield Static("Chats  floor app")
Floor().run()
"""


def tmux(*args: str) -> str:
    return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout


def time_to_text(command: str, env: dict[str, str], marks: list[str], timeout: float = 30.0) -> list[float]:
    """Seconds from launch until each of ``marks`` is on the screen (in order)."""
    session = f"bench{os.getpid()}{time.monotonic_ns()}"
    env_args = " ".join(f"{k}={v!r}" for k, v in env.items())
    start = time.perf_counter()
    tmux("new-session", "-d", "-s", session, "-x", "120", "-y", "40", f"env {env_args} {command}")
    found: list[float] = []
    screen = ""
    try:
        while len(found) < len(marks) and time.perf_counter() - start < timeout:
            screen = tmux("capture-pane", "-p", "-t", session)
            if marks[len(found)] in screen:
                found.append(time.perf_counter() - start)
                continue
            time.sleep(0.005)
    finally:
        tmux("send-keys", "-t", session, "C-q", "")
        time.sleep(0.3)
        tmux("kill-session", "-t", session)
    if len(found) < len(marks):
        raise RuntimeError(f"{command!r} never showed {marks[len(found)]!r}; the screen was:\n{screen}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    if not shutil.which("tmux"):
        sys.exit("tmux is needed: apt-get install tmux")
    exe = Path(sys.executable).with_name("internlocal")
    home = Path(tempfile.mkdtemp(prefix="il-startup-"))
    env = {"INTERNLOCAL_HOME": str(home), "TERM": "xterm-256color"}
    floor_file = home / "floor.py"
    floor_file.write_text(FLOOR_APP)

    # an idle session keeps one tmux server up: a server exiting with its last session can take
    # the next session down with it
    anchor = f"bench-anchor-{os.getpid()}"
    tmux("new-session", "-d", "-s", anchor, "sleep 3600")
    first_start = time_to_text(str(exe), env, ["Chats", "ready"])  # registers and hashes the embedded models
    ours, ready, floor = [], [], []
    for _ in range(args.runs):
        paint, filled = time_to_text(str(exe), env, ["Chats", "ready"])
        ours.append(paint)
        ready.append(filled)
        floor.append(time_to_text(f"{sys.executable} {floor_file}", env, ["Chats"])[0])
    tmux("kill-session", "-t", anchor)
    shutil.rmtree(home, ignore_errors=True)

    med = statistics.median
    print(f"first start ever (empty data dir): paint {first_start[0]:.3f} s, catalog ready {first_start[1]:.3f} s")
    print(
        f"internlocal first paint   median {med(ours):.3f} s  (min {min(ours):.3f}, max {max(ours):.3f}, n={args.runs})"
    )
    print(f"internlocal catalog ready median {med(ready):.3f} s")
    print(f"minimal Textual app       median {med(floor):.3f} s")
    print(f"ratio internlocal / minimal Textual app: {med(ours) / med(floor):.2f}  (target: first paint <= 0.8 s)")


if __name__ == "__main__":
    main()
