"""LMDeploy engine against a stand-in `lmdeploy` (tests/fake_lmdeploy.py): same CLI, same HTTP protocol.

The real one needs an NVIDIA GPU; what is tested here is ours: command construction, the
environment it runs in, starting and waiting for health, talking OpenAI to it, restarting a server
that died, stopping its process group, and the AWQ quantization job.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from internlocal.engines.base import GenerationParams
from internlocal.engines.lmdeploy_engine import LMDeployEngine, LMDeployOptions, server_command
from internlocal.envs import lmdeploy_install_commands
from internlocal.errors import UserError
from tests.conftest import QUESTION

REPO = Path(__file__).resolve().parents[1]
ASK = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": QUESTION}]


@pytest.fixture
def fake_lmdeploy(tmp_path, monkeypatch):
    exe = tmp_path / "bin" / "lmdeploy"
    exe.parent.mkdir()
    exe.write_text(f'#!/bin/sh\nexec {sys.executable} {REPO / "tests" / "fake_lmdeploy.py"} "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "argv.jsonl"
    monkeypatch.setenv("INTERNLOCAL_LMDEPLOY", str(exe))
    monkeypatch.setenv("FAKE_LMDEPLOY_RECORD", str(record))
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return record


def test_commands_are_built_as_lmdeploy_expects(tmp_path):
    command = server_command(
        Path("/env/bin/lmdeploy"),
        "/models/x",
        "x",
        23333,
        LMDeployOptions(backend="pytorch", kv_cache="int8", model_format="awq", tp=2),
    )
    assert command[:4] == ["/env/bin/lmdeploy", "serve", "api_server", "/models/x"]
    flags = dict(zip(command[4::2], command[5::2], strict=True))
    assert flags == {
        "--server-name": "127.0.0.1",
        "--server-port": "23333",
        "--backend": "pytorch",
        "--model-name": "x",
        "--session-len": "8192",
        "--tp": "2",
        "--quant-policy": "8",
        "--cache-max-entry-count": "0.8",
        "--model-format": "awq",
    }
    with pytest.raises(UserError, match="KV cache type"):
        server_command(Path("l"), "m", "m", 1, LMDeployOptions(kv_cache="int2"))
    venv, _upgrade, install = lmdeploy_install_commands(tmp_path)
    assert venv[-1] == str(tmp_path / "envs" / "lmdeploy") and install[-1] == "lmdeploy==0.18.*"


def test_serves_chats_restarts_and_stops(tmp_path, fake_lmdeploy, monkeypatch):
    engine = LMDeployEngine(
        "/models/internlm2_5-7b-chat",
        home=tmp_path,
        model_name="internlm2_5-7b-chat",
        options=LMDeployOptions(session_len=1024, kv_cache="int4"),
        start_timeout=120,
    )
    try:
        argv = json.loads(fake_lmdeploy.read_text().splitlines()[0])
        assert argv[:3] == ["serve", "api_server", "/models/internlm2_5-7b-chat"] and "--quant-policy" in argv
        generation = engine.chat(ASK, GenerationParams.greedy(max_tokens=24))
        pieces = list(generation)
        assert len(pieces) > 1 and "Paris" in generation.result.text
        assert generation.result.completion_tokens > 0

        # the server dies: the next call restarts it
        first = engine.process
        os.killpg(first.pid, 9)
        first.wait(10)
        assert not engine.alive
        assert "Paris" in engine.chat(ASK, GenerationParams.greedy(max_tokens=24)).collect().text
        assert engine.restarts == 1 and engine.process.pid != first.pid
    finally:
        engine.stop()
    assert engine.process.poll() is not None


def test_a_server_that_cannot_start_fails_clearly(tmp_path, fake_lmdeploy, monkeypatch):
    monkeypatch.setenv("FAKE_LMDEPLOY_FAIL_START", "1")
    with pytest.raises(UserError, match=r"LMDeploy exited with code 1 while starting: .*no CUDA GPUs"):
        LMDeployEngine("/models/m", home=tmp_path, model_name="m", start_timeout=60)


def test_not_installed_says_how(tmp_path, monkeypatch):
    monkeypatch.delenv("INTERNLOCAL_LMDEPLOY", raising=False)
    with pytest.raises(UserError, match="engines install lmdeploy"):
        LMDeployEngine("/models/m", home=tmp_path, model_name="m")


def test_awq_job_registers_an_lmdeploy_model(services, fake_lmdeploy, hf_model_dir):
    from internlocal.engines.loader import choose_engine
    from internlocal.hub.convert import quantize_awq
    from internlocal.hub.library import import_model
    from internlocal.hub.store import Store

    hf = import_model(services.catalog, Store(services.settings.store_dir), hf_model_dir, name="smol-hf")
    job = services.jobs.submit(quantize_awq, {"model": "smol-hf"}, kind="models.quantize", title="awq")
    job = services.jobs.wait(job.id, timeout=120)
    assert job.status == "succeeded", job.error
    awq = services.catalog.get_model(job.result["model"])
    assert (awq.name, awq.format, awq.quantization) == ("smol-awq", "hf", "AWQ-W4A16")
    assert json.loads((Path(awq.path) / "config.json").read_text())["quantization_config"]["quant_method"] == "awq"
    assert services.catalog.parents(("model", awq.id))[0].operation == "quantize.awq"
    assert choose_engine(awq, services.settings) == "lmdeploy"
    assert choose_engine(hf, services.settings) == "transformers"  # no CUDA here
    argv = [json.loads(line) for line in fake_lmdeploy.read_text().splitlines()]
    assert argv[-1][:2] == ["lite", "auto_awq"]
