"""The `internlocal` console script, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess

from tests.conftest import QUESTION


def run(bin_, env, *args, input_=None, timeout=120):
    return subprocess.run([bin_, *args], env=env, capture_output=True, text=True, input=input_, timeout=timeout)


def test_chat_answers_on_stdout(internlocal_bin, cli_env):
    out = run(internlocal_bin, cli_env, "chat", QUESTION, "--temperature", "0")
    assert out.returncode == 0, out.stderr
    assert "Paris" in out.stdout


def test_chat_json_and_stdin(internlocal_bin, cli_env):
    out = run(internlocal_bin, cli_env, "chat", "--json", "--temperature", "0", "--max-tokens", "24", input_=QUESTION)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert "Paris" in answer["text"]
    assert answer["model"] == "smollm2-135m-instruct-q4_1"
    assert answer["completion_tokens"] > 0 and answer["prompt_tokens"] > 10


def test_chat_session_is_saved(internlocal_bin, cli_env, home):
    from internlocal.catalog.catalog import Catalog

    cat = Catalog(home / "catalog.sqlite")
    chat = cat.create_chat("cli", "You are a helpful assistant.", "smollm2-135m-instruct-q4_1", {"temperature": 0})
    out = run(internlocal_bin, cli_env, "chat", QUESTION, "--session", str(chat.id), "--max-tokens", "24")
    assert out.returncode == 0, out.stderr
    messages = cat.messages(chat.id)
    assert [m.role for m in messages] == ["user", "assistant"] and "Paris" in messages[1].content


def test_models_list_json(internlocal_bin, cli_env):
    out = run(internlocal_bin, cli_env, "models", "list", "--json")
    assert out.returncode == 0, out.stderr
    models = {m["name"]: m for m in json.loads(out.stdout)}
    chat = models["smollm2-135m-instruct-q4_1"]
    assert (chat["format"], chat["quantization"], chat["context_length"], chat["storage"]) == (
        "gguf",
        "Q4_1",
        8192,
        "reference",
    )
    assert len(chat["sha256"]) == 64
    assert models["all-minilm-l6-v2"]["kind"] == "embedding"
    table = run(internlocal_bin, cli_env, "models", "list")
    assert "smollm2-135m-instruct-q4_1" in table.stdout


def test_doctor_json(internlocal_bin, cli_env, home):
    out = run(internlocal_bin, cli_env, "doctor", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["paths"]["home"] == str(home)
    assert info["catalog"]["status"] == "ok" and info["catalog"]["models"] == 2
    assert info["cpu"]["logical_cores"] >= 1 and info["memory"]["total_bytes"] > 0
    assert isinstance(info["gpus"], list)
    assert info["packages"]["llama-cpp-python"]
    assert all(info["embedded_models"].values())


def test_verify_job_from_the_cli_streams_ndjson(internlocal_bin, cli_env):
    out = run(internlocal_bin, cli_env, "models", "verify", "--json")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stdout.splitlines()]
    assert any(e["type"] == "progress" for e in events)
    assert events[-1] == {**events[-1], "type": "status", "status": "succeeded"}
    listed = json.loads(run(internlocal_bin, cli_env, "jobs", "list", "--json").stdout)
    assert listed[0]["kind"] == "models.verify" and listed[0]["status"] == "succeeded"


def test_user_errors_are_one_line_without_traceback(internlocal_bin, cli_env, home):
    out = run(internlocal_bin, cli_env, "chat", "hi", "--model", "no-such-model")
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        == "error: No model 'no-such-model' in the catalog; `internlocal models list` shows the ones there are."
    )

    out = run(internlocal_bin, cli_env, "chat", "hi", "--temperature", "9")
    assert out.returncode == 1 and "Traceback" not in out.stderr and "temperature" in out.stderr

    out = run(internlocal_bin, cli_env, "jobs", "resume", "424242")
    assert out.returncode == 1 and out.stderr.startswith("error: No job with id 424242")


def test_corrupt_catalog_is_reported_not_replaced(internlocal_bin, cli_env, home):
    catalog = home / "catalog.sqlite"
    for suffix in ("-wal", "-shm"):
        (home / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    catalog.write_bytes(b"garbage" * 1000)
    out = run(internlocal_bin, cli_env, "models", "list")
    assert out.returncode == 1
    assert "corrupt" in out.stderr and "Traceback" not in out.stderr
    assert catalog.read_bytes() == b"garbage" * 1000


def test_unwritable_home(internlocal_bin, cli_env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    env = dict(cli_env, INTERNLOCAL_HOME=str(blocker / "home"))
    out = run(internlocal_bin, env, "models", "list")
    assert out.returncode == 1
    assert out.stderr.startswith("error: Cannot create the data directory") and "INTERNLOCAL_HOME" in out.stderr


def test_killed_mid_reply_keeps_everything_before(internlocal_bin, cli_env, home):
    """kill -9 while a reply streams: earlier messages and the question survive, the catalog is intact."""
    import signal
    import time

    from internlocal.catalog.catalog import Catalog

    cat = Catalog(home / "catalog.sqlite")
    chat = cat.create_chat("kept", "You are a helpful assistant.", "smollm2-135m-instruct-q4_1", {"max_tokens": 2000})
    cat.add_message(chat.id, "user", "earlier question")
    cat.add_message(chat.id, "assistant", "earlier answer", finish_reason="stop")
    proc = subprocess.Popen(
        [internlocal_bin, "chat", "Write a very long story about a dragon.", "--session", str(chat.id)],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    streamed = b""
    deadline = time.monotonic() + 60
    while len(streamed) < 40 and time.monotonic() < deadline:
        streamed += proc.stdout.read1(64)
    assert len(streamed) >= 40, proc.stderr.read()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    messages = Catalog(home / "catalog.sqlite").messages(chat.id)
    assert [(m.role, m.content) for m in messages] == [
        ("user", "earlier question"),
        ("assistant", "earlier answer"),
        ("user", "Write a very long story about a dragon."),
    ]
    assert sqlite3_ok(home / "catalog.sqlite")


def sqlite3_ok(path) -> bool:
    import sqlite3

    return sqlite3.connect(path).execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_models_pull_show_du_rm_from_the_command_line(internlocal_bin, cli_env, tmp_path, gguf_path):
    from tests.hubserver import HubServer

    server = HubServer(tmp_path / "srv")
    try:
        server.add_repo_file("acme/tiny-GGUF", "tiny-q4_1.gguf", gguf_path)
        env = dict(cli_env, HF_ENDPOINT=server.url, HF_HUB_CACHE=str(tmp_path / "hf-cache"))
        out = run(internlocal_bin, env, "models", "pull", "hf:acme/tiny-GGUF:*.gguf", "--json")
        assert out.returncode == 0, out.stderr
        events = [json.loads(line) for line in out.stdout.splitlines()]
        progress = [e for e in events if e["type"] == "progress"]
        assert progress and progress[-1]["done"] == progress[-1]["total"] == gguf_path.stat().st_size
        result = next(e for e in events if e["type"] == "result")["result"]
        assert result["model"] == "tiny-q4_1" and result["status"] == "pulled"

        shown = json.loads(run(internlocal_bin, env, "models", "show", "tiny-q4_1", "--json").stdout)
        assert shown["storage"] == "store" and shown["quantization"] == "Q4_1"
        usage = json.loads(run(internlocal_bin, env, "models", "du", "--json").stdout)
        assert usage["store_bytes"] == gguf_path.stat().st_size

        out = run(internlocal_bin, env, "chat", QUESTION, "--model", "tiny-q4_1", "--temperature", "0")
        assert "Paris" in out.stdout

        out = run(internlocal_bin, env, "models", "pull", "hf:acme/nothing-here")
        assert out.returncode == 3 and "was not found" in out.stderr and "Traceback" not in out.stderr  # the job failed

        removed = json.loads(run(internlocal_bin, env, "models", "rm", "tiny-q4_1", "--json").stdout)
        assert removed[0]["blobs_removed"]
        assert json.loads(run(internlocal_bin, env, "models", "du", "--json").stdout)["store_bytes"] == 0
    finally:
        server.close()


def test_models_search_and_import(internlocal_bin, cli_env, gguf_path):
    found = json.loads(run(internlocal_bin, cli_env, "models", "search", "internlm", "--json").stdout)
    assert {m["name"] for m in found} >= {"internlm2_5-7b-chat", "internlm3-8b-instruct"}
    assert all(m["hf"] and m["license"] for m in found)
    table = run(internlocal_bin, cli_env, "models", "search", "qwen")
    assert "qwen2.5-7b-instruct" in table.stdout
    imported = json.loads(
        run(internlocal_bin, cli_env, "models", "import", str(gguf_path), "--name", "mine", "--json").stdout
    )
    assert imported["storage"] == "reference" and imported["path"] == str(gguf_path)
    out = run(internlocal_bin, cli_env, "models", "import", "/etc/hostname")
    assert out.returncode == 1 and "neither a GGUF file" in out.stderr


def test_gpus_are_read_from_nvidia_smi_without_a_cuda_context():
    from internlocal.doctor import parse_nvidia_smi

    text = (
        "0, NVIDIA H100 80GB HBM3, 81559, 80897, 9.0\n"
        "1, NVIDIA GeForce RTX 3070, 8192, 7800, 8.6\n"
        "2, Tesla T4, 15360, 15000, 7.5\n"
    )
    every = parse_nvidia_smi(text)
    assert [g["name"] for g in every] == ["NVIDIA H100 80GB HBM3", "NVIDIA GeForce RTX 3070", "Tesla T4"]
    assert every[1]["free_bytes"] == 7800 * 2**20 and [g["bf16"] for g in every] == [True, True, False]
    visible = parse_nvidia_smi(text, "2,1")  # CUDA numbers the visible devices from 0, in the order given
    assert [(g["index"], g["name"]) for g in visible] == [(0, "Tesla T4"), (1, "NVIDIA GeForce RTX 3070")]
