"""Pulling models from a real HTTP server on 127.0.0.1 (Hub, ModelScope and plain URL look-alikes)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from internlocal.errors import UserError
from internlocal.hub.download import Downloader, DownloadError, RemoteFile
from internlocal.hub.files import sha256_dir, sha256_file
from internlocal.hub.pull import pull_model
from internlocal.hub.sources import _choose_files
from internlocal.hub.store import Store, safe_relative_path
from tests.conftest import QUESTION
from tests.hubserver import HubServer

REPO = "acme/tiny-GGUF"


@pytest.fixture
def hub(tmp_path, monkeypatch, gguf_path, minilm_path):
    server = HubServer(tmp_path / "srv")
    server.add_repo_file(REPO, "tiny-q4_1.gguf", gguf_path)
    server.add_repo_file(REPO, "README.md", b"# tiny\n")
    for f in sorted(minilm_path.rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            server.add_repo_file("acme/minilm", f.relative_to(minilm_path).as_posix(), f)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("MODELSCOPE_DOMAIN", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    yield server
    server.close()


def pull(services, spec, timeout=120, **params):
    job = services.jobs.submit(pull_model, {"spec": spec, **params}, kind="models.pull", title=f"Pull {spec}")
    return services.jobs.wait(job.id, timeout=timeout)


def store_of(services) -> Store:
    return Store(services.settings.store_dir)


def test_pull_gguf_from_the_hub_registers_verifies_and_chats(services, hub, gguf_path):
    job = pull(services, f"hf:{REPO}:*.gguf")
    assert job.status == "succeeded", job.error
    model = services.catalog.get_model(job.result["model"])
    assert (model.name, model.format, model.storage, model.quantization) == ("tiny-q4_1", "gguf", "store", "Q4_1")
    assert model.sha256 == sha256_file(gguf_path) == sha256_file(Path(model.path))
    assert model.source.startswith(f"hf:{REPO}:*.gguf@")
    assert (
        hub.bytes_sent[f"/{REPO}/resolve/0123456789abcdef0123456789abcdef01234567/tiny-q4_1.gguf"]
        == gguf_path.stat().st_size
    )
    events, _ = services.jobs.read_events(job.id)
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] == gguf_path.stat().st_size
    assert len(progress) > 2  # a moving bar, not just the end
    # it chats
    from internlocal.engines.base import GenerationParams
    from internlocal.engines.llamacpp import LlamaCppEngine

    with LlamaCppEngine(model.path, n_ctx=512) as engine:
        messages = [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": QUESTION},
        ]
        assert "Paris" in engine.chat(messages, GenerationParams.greedy(max_tokens=16)).collect().text
    # pulling again is a no-op
    again = pull(services, f"hf:{REPO}:*.gguf")
    assert again.result["status"] == "already present"


def test_pull_a_hugging_face_folder_verifies_small_files_by_git_sha1(services, hub, minilm_path):
    job = pull(services, "hf:acme/minilm")
    assert job.status == "succeeded", job.error
    model = services.catalog.get_model("minilm")
    assert (model.format, model.kind, model.architecture) == ("hf", "embedding", "BertModel")
    assert Path(model.path).is_dir() and (Path(model.path) / "config.json").is_file()
    assert model.sha256 == sha256_dir(Path(model.path))
    pulled = {f.relative_to(model.path).as_posix() for f in Path(model.path).rglob("*") if f.is_file()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "1_Pooling/config.json"} <= pulled
    assert "README.md" not in pulled  # only what a model folder needs
    for rel in pulled:
        assert (Path(model.path) / rel).read_bytes() == (minilm_path / rel).read_bytes()


def test_same_file_under_two_models_is_stored_once_and_rm_keeps_what_is_shared(services, hub, gguf_path):
    url = hub.add_file("tiny.gguf", gguf_path.read_bytes())
    first = pull(services, f"hf:{REPO}:*.gguf")
    second = pull(services, f"{url}#sha256={sha256_file(gguf_path)}", name="tiny-by-url")
    assert first.status == second.status == "succeeded", (first.error, second.error)
    assert hub.bytes_sent.get("/files/tiny.gguf", 0) == 0  # the blob was already there: nothing fetched
    store = store_of(services)
    blobs = list(store.blobs.glob("sha256-*"))
    assert len(blobs) == 1

    from internlocal.hub.library import remove_model

    result = remove_model(services.catalog, store, "tiny-q4_1")
    assert result["blobs_removed"] == []  # still used by tiny-by-url
    assert blobs[0].exists() and Path(services.catalog.get_model("tiny-by-url").path).is_file()
    result = remove_model(services.catalog, store, "tiny-by-url")
    assert len(result["blobs_removed"]) == 1 and not blobs[0].exists()
    assert list(store.manifests.glob("*.json")) == []
    with pytest.raises(UserError, match="built into the installation"):
        remove_model(services.catalog, store, "smollm2-135m-instruct-q4_1")


def test_resume_after_kill_continues_from_the_partial_bytes(services, hub, gguf_path):
    size = gguf_path.stat().st_size
    hub.faults["delay_s"] = 0.004  # ~16 MB/s per connection: slow enough to kill mid-file
    job = services.jobs.submit(pull_model, {"spec": f"hf:{REPO}:*.gguf", "parts": 2}, kind="models.pull", title="p")
    store = store_of(services)

    def recorded() -> int:
        sidecars = list(store.partial.glob("*.json"))
        if not sidecars:
            return 0
        try:
            return sum(p["done"] for p in json.loads(sidecars[0].read_text())["parts"])
        except ValueError:
            return 0

    deadline = time.monotonic() + 60
    while recorded() < size // 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert recorded() >= size // 4
    os.kill(services.catalog.get_job(job.id).pid, signal.SIGKILL)
    services.jobs.wait(job.id, timeout=10)
    assert services.catalog.get_job(job.id).status == "interrupted"
    assert not services.catalog.has_model("tiny-q4_1")
    kept = recorded()
    sent_before = hub.total_sent()
    hub.faults.pop("delay_s")

    services.jobs.resume(job.id)
    job = services.jobs.wait(job.id, timeout=60)
    assert job.status == "succeeded", job.error
    sent_after = hub.total_sent() - sent_before
    assert sent_after <= size - kept + (2 << 20)  # only what was missing (plus at most the unrecorded tail)
    assert sent_after < size
    assert job.result["bytes"] == sent_after + kept or job.result["bytes"] >= sent_after
    assert sha256_file(Path(services.catalog.get_model("tiny-q4_1").path)) == sha256_file(gguf_path)
    assert list(store.partial.iterdir()) == []


def test_the_same_pull_started_twice_downloads_once(services, hub, gguf_path):
    """The second waits for the first's lock, then finds the model registered."""
    hub.faults["delay_s"] = 0.002  # slow enough that the two overlap
    jobs = [
        services.jobs.submit(pull_model, {"spec": f"hf:{REPO}:*.gguf"}, kind="models.pull", title=f"pull {i}")
        for i in range(2)
    ]
    done = [services.jobs.wait(job.id, timeout=120) for job in jobs]
    assert [job.status for job in done] == ["succeeded", "succeeded"], [job.error for job in done]
    assert sorted(job.result["status"] for job in done) == ["already present", "pulled"]
    assert hub.total_sent() < gguf_path.stat().st_size + (1 << 20)  # one download
    assert [m.name for m in services.catalog.list_models()].count("tiny-q4_1") == 1


def test_dropped_connection_is_retried_from_where_it_stopped(services, hub, gguf_path):
    hub.faults["drop_after"] = 5 << 20
    job = pull(services, f"hf:{REPO}:*.gguf", parts=1)
    assert job.status == "succeeded", job.error
    ranged = [r for m, p, r in hub.requests if m == "GET" and p.endswith("tiny-q4_1.gguf") and r]
    assert ranged and ranged[0].startswith("bytes=5242880-")
    assert hub.total_sent() == gguf_path.stat().st_size  # nothing fetched twice


def test_wrong_checksum_is_rejected_and_nothing_is_registered(services, hub):
    hub.faults["wrong_sha256"] = {"tiny-q4_1.gguf"}
    job = pull(services, f"hf:{REPO}:*.gguf")
    assert job.status == "failed" and "checksum" in job.error
    store = store_of(services)
    assert not services.catalog.has_model("tiny-q4_1")
    assert list(store.blobs.iterdir()) == [] and list(store.partial.iterdir()) == []


def test_missing_and_forbidden_give_clear_messages(services, hub):
    job = pull(services, "hf:acme/does-not-exist")
    assert job.status == "failed" and "was not found" in job.error
    hub.faults["status"] = {f"/api/models/{REPO}/revision/main": 401, f"/api/models/{REPO}": 401}
    job = pull(services, f"hf:{REPO}:*.gguf")
    assert job.status == "failed" and "HF_TOKEN" in job.error
    hub.faults["status"] = {"/files/gone.gguf": 404}
    job = pull(services, f"{hub.url}/files/gone.gguf")
    assert job.status == "failed" and "404" in job.error


def test_not_enough_disk_is_refused_before_downloading(services, hub):
    hub.faults["claimed_size"] = {"tiny-q4_1.gguf": 10**16}
    job = pull(services, f"hf:{REPO}:*.gguf")
    assert job.status == "failed" and "are kept free beside it" in job.error and "GiB is free" in job.error
    assert hub.total_sent() == 0


def test_a_file_that_is_not_a_model_is_not_registered(services, hub):
    url = hub.add_file("model.gguf", b"<html>Sign in to continue</html>" * 100)
    job = pull(services, url)
    assert job.status == "failed" and "not a usable model" in job.error and "not a GGUF" in job.error
    store = store_of(services)
    assert not services.catalog.has_model("model")
    assert list(store.blobs.iterdir()) == [] and list(store.manifests.iterdir()) == []


def test_path_traversal_in_a_remote_name_is_refused(services, hub):
    data = b"x" * 10
    hub.faults["extra_siblings"] = [
        {
            "rfilename": "../../evil.gguf",
            "size": 10,
            "blobId": "0" * 40,
            "lfs": {"sha256": hashlib.sha256(data).hexdigest(), "size": 10, "pointerSize": 134},
        }
    ]
    job = pull(services, f"hf:{REPO}:*.gguf")
    assert job.status == "failed" and "escape the model folder" in job.error
    assert hub.total_sent() == 0
    for bad in ("/etc/passwd", "a/../../b", "C:\\x", ""):
        with pytest.raises(UserError):
            safe_relative_path(bad)
    assert safe_relative_path("sub/dir/model.safetensors") == "sub/dir/model.safetensors"


def test_files_in_the_hugging_face_cache_are_reused(services, hub, gguf_path, tmp_path):
    snapshot = (
        tmp_path / "hf-cache" / "models--acme--tiny-GGUF" / "snapshots" / "0123456789abcdef0123456789abcdef01234567"
    )
    snapshot.mkdir(parents=True)
    os.link(gguf_path, snapshot / "tiny-q4_1.gguf")
    (tmp_path / "hf-cache" / "models--acme--tiny-GGUF" / "refs").mkdir()
    (tmp_path / "hf-cache" / "models--acme--tiny-GGUF" / "refs" / "main").write_text(
        "0123456789abcdef0123456789abcdef01234567"
    )
    job = pull(services, f"hf:{REPO}:*.gguf")
    assert job.status == "succeeded", job.error
    assert job.result["bytes"] == 0 and hub.total_sent() == 0


def test_modelscope_source(services, hub, gguf_path):
    job = pull(services, f"modelscope:{REPO}:*.gguf", name="tiny-ms")
    assert job.status == "succeeded", job.error
    model = services.catalog.get_model("tiny-ms")
    assert model.sha256 == sha256_file(gguf_path) and model.source.startswith("modelscope:acme/tiny-GGUF")


def test_registry_name_resolves_to_the_official_repo(services, hub, gguf_path):
    hub.add_repo_file("internlm/internlm2_5-1_8b-chat-gguf", "internlm2_5-1_8b-chat-q4_k_m.gguf", gguf_path)
    job = pull(services, "internlm2_5-1_8b-chat")
    assert job.status == "succeeded", job.error
    model = services.catalog.get_model("internlm2_5-1_8b-chat-q4_k_m")
    assert model.metadata_dict["registry"] == "internlm2_5-1_8b-chat" and model.metadata_dict["tag"] == "q4_k_m"
    job = pull(services, "internlm2_5-1_8b-chat:q9_9")
    assert job.status == "failed" and "no tag 'q9_9'" in job.error


def test_downloader_without_ranges_and_with_stalls(tmp_path, hub, gguf_path):
    store = Store(tmp_path / "store")
    data = gguf_path.read_bytes()[: 3 << 20]
    url = hub.add_file("part.bin", data)
    digest = hashlib.sha256(data).hexdigest()
    hub.faults["no_ranges"] = True
    blob, got = Downloader(store, parts=4).fetch(RemoteFile(url=url, path="part.bin", size=len(data), sha256=digest))
    assert got == digest and blob.read_bytes() == data
    blob.unlink()
    hub.faults.clear()
    hub.faults.update(stall_after=1 << 20, stall_s=3)
    seen = []
    blob, got = Downloader(store, parts=1, stall_timeout=0.5, backoff_s=0.01).fetch(
        RemoteFile(url=url, path="part.bin", size=len(data), sha256=digest), on_bytes=seen.append
    )
    assert got == digest and sum(seen) >= len(data)


def test_nobody_listening_is_told_after_three_tries_and_a_busy_server_gets_all_six(tmp_path, hub):
    """A refused connection seldom heals in seconds: the user hears it after three tries (it was six, with a
    wait after the last: 33 s for a mistyped address). A server that answers 503 is tried as often as allowed."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    waits: list[int] = []
    downloader = Downloader(Store(tmp_path / "store"), retries=6)
    downloader._backoff = waits.append  # count the waits between tries instead of sleeping
    with pytest.raises(DownloadError, match="could not be reached"):
        downloader.fetch(RemoteFile(url=f"http://127.0.0.1:{port}/m.gguf", path="m.gguf"))
    assert waits == [0, 1]
    url = hub.add_file("busy.gguf", b"GGUF")
    hub.faults["status"] = {"/files/busy.gguf": 503}
    waits.clear()
    with pytest.raises(DownloadError, match="could not be reached"):
        downloader.fetch(RemoteFile(url=url, path="busy.gguf"))
    assert waits == [0, 1, 2, 3, 4]


def test_split_gguf_parts_come_together():
    names = ["q-00001-of-00002.gguf", "q-00002-of-00002.gguf", "other.gguf", "README.md"]
    assert _choose_files(names, "q-00001-of-00002.gguf", "r") == {"q-00001-of-00002.gguf", "q-00002-of-00002.gguf"}
    with pytest.raises(UserError, match="No file in r matches"):
        _choose_files(names, "*.safetensors", "r")
    with pytest.raises(UserError, match="pick one with :FILE"):
        _choose_files(names, None, "r")


def test_a_registry_choice_resolves_to_files_on_its_hub(hub, gguf_path):
    """sources.resolve_choice: the registry's choice (repository + pattern) becomes the Hub's files, under the
    registry's name and with its metadata added to the source's."""
    from internlocal.hub.registry import RegistryChoice
    from internlocal.hub.sources import resolve_choice

    choice = RegistryChoice(
        hub="hf", repo=REPO, pattern="*.gguf", default_name="tiny-chat-q4_1", metadata={"registry": "tiny-chat"}
    )
    resolved = resolve_choice(choice)
    assert resolved.default_name == "tiny-chat-q4_1" and resolved.format == "gguf"
    assert [(f.path, f.size) for f in resolved.files] == [("tiny-q4_1.gguf", gguf_path.stat().st_size)]
    assert resolved.metadata["registry"] == "tiny-chat" and resolved.metadata["repo"] == REPO
    assert resolved.source.startswith(f"hf:{REPO}:*.gguf@")


def test_unknown_spec_and_bad_urls():
    from internlocal.hub.sources import resolve

    with pytest.raises(UserError, match="not in the model registry"):
        resolve("no-such-model")
    with pytest.raises(UserError, match="not a repository id"):
        resolve("hf:justaname")
    with pytest.raises(UserError, match="64-character hex"):
        resolve("https://example.invalid/x.gguf#sha256=abc")
    with pytest.raises(DownloadError):
        raise DownloadError("x")
