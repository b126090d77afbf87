"""The job runner: subprocess and thread jobs, progress events, cancel, crash, resume."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from internlocal.catalog.schema import Model
from internlocal.errors import UserError
from internlocal.hub.verify import verify_models
from internlocal.jobs.events import EventWriter, ProgressTracker, read_events
from tests import jobs_for_tests

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _importable_test_jobs(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def wait_for(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def test_verify_job_in_a_subprocess_reports_progress_and_result(services):
    job = services.jobs.submit(verify_models, {"names": None}, kind="models.verify", title="Verify models")
    assert job.status == "queued" and job.pid
    job = services.jobs.wait(job.id, timeout=120)
    assert job.status == "succeeded", job.error
    assert job.result == {"smollm2-135m-instruct-q4_1": "ok", "all-minilm-l6-v2": "ok"}
    events, _ = services.jobs.read_events(job.id)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "status" and kinds[-1] == "status" and "result" in kinds
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["done"] == progress[-1]["total"] > 150_000_000
    assert progress[-1]["unit"] == "bytes"


def test_verify_job_finds_changed_and_missing_files(services, tmp_path, gguf_path):
    from internlocal.hub.files import sha256_file

    changed, missing = tmp_path / "changed.gguf", tmp_path / "missing.gguf"
    changed.write_bytes(gguf_path.read_bytes()[:4096])
    digest = sha256_file(changed)
    changed.write_bytes(b"x" + changed.read_bytes()[1:])
    services.catalog.add_model(Model(name="changed", format="gguf", path=str(changed), sha256=digest))
    services.catalog.add_model(Model(name="missing", format="gguf", path=str(missing), sha256=digest))
    job = services.jobs.submit(verify_models, {"names": ["changed", "missing"]}, kind="models.verify", title="v")
    job = services.jobs.wait(job.id, timeout=60)
    assert job.result == {"changed": "changed", "missing": "missing"}


def test_cancel_then_resume_continues_from_saved_state(services):
    runner = services.jobs
    job = runner.submit(jobs_for_tests.count, {"n": 150, "delay": 0.02}, kind="test.count", title="count")
    wait_for(
        lambda: (
            json.loads(runner.state_path(job.id).read_text() or "{}").get("i", 0) >= 5
            if runner.state_path(job.id).exists()
            else False
        )
    )
    runner.cancel(job.id)
    job = runner.wait(job.id, timeout=30)
    assert job.status == "cancelled"
    done_before = json.loads(runner.state_path(job.id).read_text())["i"]
    assert 5 <= done_before < 150

    runner.resume(job.id)
    job = runner.wait(job.id, timeout=60)
    assert job.status == "succeeded" and job.attempts == 2
    assert job.result == {"counted": 150, "resumed_from": done_before}
    tracker = ProgressTracker()
    tracker.feed(runner.read_events(job.id)[0])
    assert tracker.progress.done == 150 and tracker.status == "succeeded"
    assert tracker.last_metric["value"] == 150**2


def test_killed_worker_is_found_interrupted_and_resumes(services):
    runner = services.jobs
    job = runner.submit(jobs_for_tests.count, {"n": 150, "delay": 0.02}, kind="test.count", title="count")
    wait_for(lambda: runner.state_path(job.id).exists())
    os.kill(job.pid, signal.SIGKILL)
    wait_for(lambda: runner.refresh_one(services.catalog.get_job(job.id)).status == "interrupted")

    # a new runner (as after a restart of the app) sees the same
    from internlocal.jobs.runner import JobRunner

    assert (
        JobRunner(services.catalog, services.settings).refresh_one(services.catalog.get_job(job.id)).status
        == "interrupted"
    )
    runner.resume(job.id)
    job = runner.wait(job.id, timeout=60)
    assert job.status == "succeeded"
    assert 0 < job.result["resumed_from"] < 150


def test_a_killed_worker_takes_the_processes_it_started_with_it(services, tmp_path):
    """Before the parent-death signal, a SIGKILLed job's children (the training loop, the converter) ran on,
    orphaned, holding memory."""
    import psutil

    runner = services.jobs
    pid_file = tmp_path / "child.pid"
    job = runner.submit(jobs_for_tests.starts_a_child, {"pid_file": str(pid_file)}, kind="test.child", title="child")
    wait_for(lambda: pid_file.exists() and pid_file.read_text())
    child = psutil.Process(int(pid_file.read_text()))
    assert child.is_running()
    os.kill(job.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs([child], timeout=10)
    assert alive == []
    assert runner.wait(job.id, timeout=30).status == "interrupted"


def test_a_job_that_never_checks_is_stopped_by_force_and_resumes(services, tmp_path, internlocal_bin, cli_env):
    """Before ``--force``, cancel only asked: a job stuck in a call that never returns to its check ran on, and the
    user's only way out was kill -9 by hand. Forced, the worker and its child die, the job reads cancelled (not
    interrupted), says why in its events, and resumes from what it saved."""
    import subprocess

    import psutil

    runner = services.jobs
    pid_file = tmp_path / "child.pid"
    job = runner.submit(jobs_for_tests.never_checks, {"pid_file": str(pid_file)}, kind="test.stuck", title="stuck")
    wait_for(lambda: pid_file.exists() and pid_file.read_text() and runner.state_path(job.id).exists())
    child = psutil.Process(int(pid_file.read_text()))

    assert runner.cancel(job.id).status == "running"  # asked: it never checks, so it runs on
    time.sleep(1.0)
    assert services.catalog.get_job(job.id).status == "running" and child.is_running()

    forced = subprocess.run(
        [internlocal_bin, "jobs", "cancel", str(job.id), "--force", "--json"],
        env={**cli_env, "PYTHONPATH": os.environ["PYTHONPATH"]},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert forced.returncode == 0, forced.stderr
    assert json.loads(forced.stdout)["status"] == "cancelled"
    _, alive = psutil.wait_procs([child], timeout=10)
    assert alive == []
    job = runner.refresh_one(services.catalog.get_job(job.id))
    assert job.status == "cancelled"  # not "interrupted": the user stopped it
    events, _ = runner.read_events(job.id)
    assert any("stopped by force" in e.get("message", "") for e in events) and events[-1]["status"] == "cancelled"

    runner.resume(job.id)
    assert runner.wait(job.id, timeout=60).result == {"resumed": True}
    assert runner.cancel(job.id, force=True).status == "succeeded"  # a finished job: nothing to kill


def test_thread_jobs_and_failures(services):
    runner = services.jobs
    ok = runner.submit(jobs_for_tests.count, {"n": 3, "delay": 0}, kind="t", title="t", in_thread=True)
    assert runner.wait(ok.id, timeout=10).status == "succeeded"

    clear = runner.wait(runner.submit(jobs_for_tests.fail_clearly, kind="t", title="t", in_thread=True).id, timeout=10)
    assert (clear.status, clear.error) == ("failed", "The dataset file is empty; add some rows.")

    bug = runner.wait(runner.submit(jobs_for_tests.crash, kind="t", title="t", in_thread=True).id, timeout=10)
    assert bug.status == "failed" and bug.error.startswith("ZeroDivisionError")
    logs = [e for e in runner.read_events(bug.id)[0] if e["type"] == "log"]
    assert "Traceback" in logs[-1]["message"]

    with pytest.raises(UserError, match="only failed, cancelled or interrupted"):
        runner.resume(ok.id)
    with pytest.raises(TypeError):
        runner.submit(jobs_for_tests.count, {"n": object()}, kind="t", title="t")


def test_thread_job_cancel(services):
    runner = services.jobs
    job = runner.submit(jobs_for_tests.count, {"n": 10_000, "delay": 0.005}, kind="t", title="t", in_thread=True)
    wait_for(lambda: runner.state_path(job.id).exists())
    runner.cancel(job.id)
    assert runner.wait(job.id, timeout=10).status == "cancelled"


def test_event_reader_skips_partial_and_torn_lines(tmp_path):
    path = tmp_path / "e.jsonl"
    writer = EventWriter(path)
    writer.emit("progress", done=1, total=4, unit="items")
    writer.close()
    with path.open("a") as fh:
        fh.write('{"t": 1, "type": "log", "mess\n')  # torn by a crash
        fh.write('{"t": 2, "type": "progress", "done": 2}\n')
        fh.write('{"t": 3, "type": "progress", "do')  # still being written
    events, offset = read_events(path)
    assert [e.get("done") for e in events] == [1, 2]
    with path.open("a") as fh:
        fh.write('ne": 3}\n')
    more, _ = read_events(path, offset)
    assert [e["done"] for e in more] == [3]


def test_progress_tracker_rate_and_eta():
    tracker = ProgressTracker()
    tracker.feed(
        [
            {"t": 100.0, "type": "progress", "done": 0, "total": 1000, "unit": "bytes"},
            {"t": 102.0, "type": "progress", "done": 200, "total": 1000, "unit": "bytes"},
        ]
    )
    p = tracker.progress
    assert p.rate == pytest.approx(100.0) and p.eta_s == pytest.approx(8.0) and p.fraction == pytest.approx(0.2)
