"""Serve screen: start and stop `internlocal serve` (a subprocess: the UI never owns the server), its
URL and an example request, live totals and a log of recent requests."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import Button, DataTable, Input, Label, Static

from internlocal.i18n import N_, _
from internlocal.jobs.processes import owned_child
from internlocal.tui.screens.base import AppScreen
from internlocal.tui.widgets.footer import Footer


class ServeScreen(AppScreen):
    DEFAULT_CSS = """
    ServeScreen #form { height: 3; }
    ServeScreen #form Label { padding: 1 1 0 1; }
    ServeScreen #model { width: 1fr; }
    ServeScreen #port { width: 10; }
    ServeScreen #slots { width: 8; }
    ServeScreen #state { padding: 0 1; height: auto; }
    ServeScreen #totals { padding: 0 1; height: 1; color: $text-muted; }
    ServeScreen DataTable { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("ctrl+s", "toggle_server", N_("Start/stop server"), priority=True)]

    def __init__(self) -> None:
        super().__init__()
        self.process: subprocess.Popen | None = None
        self.url: str | None = None
        self._seen = 0.0

    def compose(self) -> ComposeResult:
        yield Static(
            _("Serve  —  an OpenAI-compatible API on this machine (chat, completions, embeddings, tools)"),
            classes="heading",
        )
        with Horizontal(id="form"):
            yield Label(_("model"))
            yield Input(placeholder=_("catalog GGUF model (empty: the default)"), id="model")
            yield Label(_("port"))
            yield Input("8000", id="port", restrict=r"[0-9]*")
            yield Label(_("slots"))
            yield Input("4", id="slots", restrict=r"[0-9]*")
            yield Button(_("Start"), id="toggle", variant="success")
        yield Static(_("stopped"), id="state")
        yield Static("", id="totals")
        yield DataTable(id="log", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#log", DataTable)
        for key, label in (
            ("time", _("time")),
            ("method", _("method")),
            ("path", _("path")),
            ("status", _("status")),
            ("ms", "ms"),
        ):
            table.add_column(label, key=key)
        self.set_interval(1.0, self.poll)

    @on(Button.Pressed, "#toggle")
    def pressed(self) -> None:
        self.action_toggle_server()

    def action_toggle_server(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.stop()
        else:
            self.start()

    def start(self) -> None:
        if self.services is None:
            return
        model = self.query_one("#model", Input).value.strip()
        port = self.query_one("#port", Input).value.strip() or "8000"
        slots = self.query_one("#slots", Input).value.strip() or "4"
        log = self.ready_services.settings.jobs_dir / "serve.log"
        command = [sys.executable, "-m", "internlocal.cli.entry", "serve", "--port", port, "--slots", slots]
        if model:
            command.insert(4, model)
        env = dict(os.environ, INTERNLOCAL_HOME=str(self.ready_services.settings.home))
        with Path(log).open("w") as stderr:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                env=env,
                start_new_session=True,
                preexec_fn=owned_child(),  # the server ends with the window that started it, even a killed one
            )
        self.url = f"http://127.0.0.1:{port}"
        self.query_one("#toggle", Button).label = _("Stop")
        self.query_one("#state", Static).update(_("starting on {url} … (log: {log})").format(url=self.url, log=log))

    def stop(self) -> None:
        self._stop_process()
        self.query_one("#toggle", Button).label = _("Start")
        self.query_one("#state", Static).update(_("stopped"))

    def _stop_process(self) -> None:
        import signal

        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # uvicorn's graceful shutdown
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def on_unmount(self) -> None:
        self._stop_process()  # leaving the app stops the server it started

    @work(thread=True, exclusive=True, group="serve-poll")
    def poll(self) -> None:
        import requests

        if self.process is None or self.url is None:
            return
        if self.process.poll() is not None:
            code = self.process.returncode
            self.app.call_from_thread(self._exited, code)
            return
        try:
            data = requests.get(f"{self.url}/internlocal/log", timeout=1).json()
        except (requests.RequestException, ValueError):
            return  # still loading the model
        self.app.call_from_thread(self._show, data)

    def _exited(self, code: int) -> None:
        if self.process is not None:
            log = self.ready_services.settings.jobs_dir / "serve.log" if self.services else None
            last = ""
            if log and Path(log).exists():
                lines = [line for line in Path(log).read_text(errors="replace").splitlines() if line.strip()]
                last = lines[-1] if lines else ""
            self.query_one("#state", Static).update(
                _("the server stopped (exit {code}) {last}").format(code=code, last=last)
            )
            self.query_one("#toggle", Button).label = _("Start")
            self.process = None

    def _show(self, data: dict) -> None:
        model = data["model"]
        self.query_one("#state", Static).update(
            _("serving [b]{model}[/b] at {url}/v1").format(model=model, url=self.url)
            + "\n"
            # an example command to copy and run: its text is read by curl and the server
            + f"curl {self.url}/v1/chat/completions -H 'Content-Type: application/json' "  # i18n: not translated
            f'-d \'{{"model": "{model}", "messages": [{{"role": "user", "content": "Hello"}}]}}\''
        )
        t = data["totals"]
        speed = (
            " · " + _("last {speed} tok/s").format(speed=t["last_tokens_per_s"]) if t.get("last_tokens_per_s") else ""
        )
        self.query_one("#totals", Static).update(
            _(
                "{requests} requests · {prompt_tokens} prompt + {completion_tokens} generated tokens · "
                "{in_flight} in flight · {queued} queued"
            ).format(
                requests=t["requests"],
                prompt_tokens=t["prompt_tokens"],
                completion_tokens=t["completion_tokens"],
                in_flight=data["in_flight"],
                queued=data["queue_depth"],
            )
            + speed
            + "\n"
            + _("loaded: {models}").format(models=loaded_line(data.get("loaded", [])))
        )
        table = self.query_one("#log", DataTable)
        for entry in data["recent"]:
            if entry["t"] <= self._seen:
                continue
            self._seen = entry["t"]
            table.add_row(
                datetime.fromtimestamp(entry["t"]).strftime("%H:%M:%S"),
                entry["method"],
                entry["path"],
                str(entry["status"]),
                str(entry["ms"]),
            )
            table.scroll_end(animate=False)


def loaded_line(loaded: list[dict]) -> str:
    """'smollm2 (kept) · smol-q8 (unloads in 4 min)': the models the server holds, most recently used first."""
    import time

    parts = []
    for model in loaded:
        expires = model.get("expires_at")
        if expires is None:
            parts.append(_("{name} (kept)").format(name=model["name"]))
            continue
        left = max(0.0, expires - time.time())
        parts.append(
            _("{name} (unloads in {minutes:.0f} min)").format(name=model["name"], minutes=left / 60)
            if left >= 60
            else _("{name} (unloads in {seconds:.0f} s)").format(name=model["name"], seconds=left)
        )
    return " · ".join(parts) or _("none")
