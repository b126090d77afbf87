"""LMDeploy engine (NVIDIA GPUs): ``lmdeploy serve api_server`` in its own virtual environment.

LMDeploy's wheels need CUDA and pin torch<=2.12.1 and peft<=0.14, which conflict with ours, so
``internlocal engines install lmdeploy`` gives it a virtual environment of its own
(``<home>/envs/lmdeploy``, see ``envs.py``). The engine starts the server as a subprocess (TurboMind or PyTorch
backend, AWQ W4A16 models, KV-cache int8/int4 via ``--quant-policy``), waits until it answers,
talks to it over the OpenAI protocol (``RemoteEngine``), and stops its whole process group.
``INTERNLOCAL_LMDEPLOY`` may point at another ``lmdeploy`` executable.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from internlocal.engines.base import Capability, EngineBase, Generation
from internlocal.engines.remote import RemoteEngine
from internlocal.envs import lmdeploy_executable
from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.jobs.processes import owned_child

KV_QUANT = {"none": 0, "int8": 8, "int4": 4}


@dataclass
class LMDeployOptions:
    backend: str = "turbomind"  # turbomind | pytorch
    session_len: int = 8192
    kv_cache: str = "none"  # none | int8 | int4
    tp: int = 1
    model_format: str | None = None  # awq for W4A16 models
    cache_max_entry_count: float = 0.8


def server_command(lmdeploy: Path, model_path: str, model_name: str, port: int, options: LMDeployOptions) -> list[str]:
    if options.backend not in ("turbomind", "pytorch"):
        raise UserError(_("LMDeploy backend {backend!r} is not turbomind or pytorch.").format(backend=options.backend))
    if options.kv_cache not in KV_QUANT:
        raise UserError(
            _("KV cache type {kv_cache!r} is not one of {types}.").format(
                kv_cache=options.kv_cache, types=", ".join(KV_QUANT)
            )
        )
    command = [
        str(lmdeploy),
        "serve",
        "api_server",
        model_path,
        "--server-name",
        "127.0.0.1",
        "--server-port",
        str(port),
        "--backend",
        options.backend,
        "--model-name",
        model_name,
        "--session-len",
        str(options.session_len),
        "--tp",
        str(options.tp),
        "--quant-policy",
        str(KV_QUANT[options.kv_cache]),
        "--cache-max-entry-count",
        str(options.cache_max_entry_count),
    ]
    if options.model_format:
        command += ["--model-format", options.model_format]
    return command


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LMDeployEngine(EngineBase):
    engine_name = "LMDeploy"
    capabilities = frozenset({Capability.CHAT, Capability.COMPLETION, Capability.CONSTRAINED, Capability.TOOLS})

    def __init__(
        self,
        model_path: str,
        *,
        home: Path,
        model_name: str,
        options: LMDeployOptions | None = None,
        start_timeout: float = 600,
        log_path: Path | None = None,
    ):
        lmdeploy = lmdeploy_executable(home)
        if lmdeploy is None:
            raise UserError(
                _(
                    "LMDeploy is not installed; run `internlocal engines install lmdeploy` on a machine with "
                    "an NVIDIA GPU."
                )
            )
        self.model_name = model_name
        self.options = options or LMDeployOptions()
        self.context_length = self.options.session_len
        self._model_path = model_path
        self._lmdeploy = lmdeploy
        self._start_timeout = start_timeout
        self._log_path = log_path or Path(home) / "jobs" / f"lmdeploy-{model_name}.log"
        self.process: subprocess.Popen | None = None
        self.restarts = 0
        self._remote: RemoteEngine | None = None
        self.start()

    # -- process lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.port = _free_port()
        self.command = server_command(self._lmdeploy, self._model_path, self.model_name, self.port, self.options)
        self._log_path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=owned_child(),  # a server holding the GPU ends with the app that started it
        )
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._wait_ready()
        self._remote = RemoteEngine(
            self.url, self.model_name, model_name=self.model_name, context_length=self.context_length
        )

    def _wait_ready(self) -> None:
        import requests

        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise UserError(
                    _("LMDeploy exited with code {code} while starting: {log}").format(
                        code=self.process.returncode, log=self.last_log()
                    )
                )
            try:
                if requests.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.stop()
        raise UserError(
            _("LMDeploy did not answer within {timeout:.0f} s; see {log}.").format(
                timeout=self._start_timeout, log=self._log_path
            )
        )

    def last_log(self, lines: int = 3) -> str:
        try:
            text = self._log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return _("(no log)")
        return " | ".join(text[-lines:]) or _("(empty log)")

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _ensure_alive(self) -> RemoteEngine:
        """A server that died is restarted once per call; twice in a row is an error."""
        if not self.alive:
            code = self.process.returncode if self.process else None
            if self.restarts >= 3:
                raise UserError(
                    _("LMDeploy keeps exiting (last code {code}): {log}").format(code=code, log=self.last_log())
                )
            self.restarts += 1
            self.start()
        assert self._remote is not None
        return self._remote

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)  # the server and any workers it started
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        if self._remote is not None:
            self._remote.close()

    close = stop

    # -- the Engine protocol (through the server) --------------------------------------------------

    def chat(self, messages, params=None, *, response_format=None, tools=None, tool_choice=None) -> Generation:
        from internlocal.engines.images import text_only

        messages = text_only(messages, self.model_name)  # LMDeploy's VLM pipelines are not wired here yet
        return self._ensure_alive().chat(
            messages, params, response_format=response_format, tools=tools, tool_choice=tool_choice
        )

    def complete(self, prompt, params=None, *, response_format=None) -> Generation:
        return self._ensure_alive().complete(prompt, params, response_format=response_format)
