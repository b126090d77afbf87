"""A disk that fills up while work is under way: a private mount namespace (``unshare -m``, root only, so a crashed
test leaks no mount) puts the data directory on a small tmpfs that is nearly full. Each operation ends with a
sentence, not a traceback, and what was stored before is intact."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

DRIVER = r"""
import json, os, shutil, subprocess, sys
from pathlib import Path

home, scratch, docs, internlocal, free_kb = sys.argv[1:6]
# the data directory itself becomes the small disk (its catalog names paths inside it): copied aside, mounted
# over, copied back
shutil.copytree(home, Path(scratch) / "home-copy")
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", home], check=True)
shutil.copytree(Path(scratch) / "home-copy", home, dirs_exist_ok=True)
filler = Path(home) / "filler"


def fill():
    stat = os.statvfs(home)
    with filler.open("wb") as fh:
        fh.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - int(free_kb) * 1024))


def run(*args):
    env = dict(os.environ, INTERNLOCAL_HOME=str(home), NO_COLOR="1", COLUMNS="200")
    try:
        proc = subprocess.run([internlocal, *args], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        return {"code": "timeout", "out": str(exc.stdout)[-3000:], "err": str(exc.stderr)[-3000:]}
    return {"code": proc.returncode, "out": proc.stdout[-3000:], "err": proc.stderr[-3000:]}


results = {}
fill()
print('filled', file=sys.stderr, flush=True)
results["sync"] = run("kb", "sync", "house")
results["create"] = run("kb", "create", "other", docs)  # a catalog write on the full disk
results["search"] = run("kb", "search", "house", "Where is the spare key?", "--json")
filler.unlink()
results["doctor"] = run("doctor", "--json")
results["jobs"] = run("jobs", "list", "--json")
results["sync_after"] = run("kb", "sync", "house", "--json")
print(json.dumps(results))
"""


def _can_mount() -> bool:
    """Whether this machine lets us mount a tmpfs in a private mount namespace (root, with the capability)."""
    import tempfile

    if not sys.platform.startswith("linux") or shutil.which("unshare") is None or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        probe = subprocess.run(
            ["unshare", "-m", "mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", folder], capture_output=True
        )
    return probe.returncode == 0


@pytest.mark.skipif(os.geteuid() != 0 or not _can_mount(), reason="needs root for a private tmpfs (CI runs as root)")
@pytest.mark.chaos
@pytest.mark.timeout(900)
def test_a_disk_that_fills_during_a_sync_and_a_catalog_write_loses_nothing(tmp_path, home, settings, internlocal_bin):
    from internlocal.bootstrap import bootstrap
    from internlocal.kb import library

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "keys.md").write_text("# Keys\n\nThe spare key is under the blue flowerpot.\n")
    services = bootstrap(settings)
    library.create_kb(settings, services.catalog, "house", [str(docs)])
    library.sync_kb(services.catalog, "house")
    services.close()
    for n in range(40):  # enough new text (about 250 chunks) that its vectors cannot fit in what is left
        (docs / f"shelf{n}.md").write_text(
            "\n\n".join(f"Shelf {n} box {i} holds {i * 7 + n} screws of size M{i % 9 + 2}." for i in range(80))
        )
    proc = subprocess.run(
        ["unshare", "-m", sys.executable, "-c", DRIVER, str(home), str(tmp_path), str(docs), internlocal_bin, "150"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=1))
    # the sync is a job that failed (exit 3), the create a command that could not write (exit 1): each in a sentence
    for step, code in (("sync", 3), ("create", 1)):
        outcome = results[step]
        assert outcome["code"] == code, outcome
        last = outcome["err"].strip().splitlines()[-1]
        assert last.startswith("error: The disk is full (") and "Traceback" not in outcome["err"], outcome
    hits = json.loads(results["search"]["out"])
    assert "flowerpot" in hits[0]["text"]  # what was indexed before is still found
    doctor = json.loads(results["doctor"]["out"])
    assert doctor["catalog"]["integrity"] == "ok" and doctor["catalog"]["indexes"] == {"house": "ok"}
    after = [
        e for e in map(json.loads, filter(None, results["sync_after"]["out"].splitlines())) if e.get("type") == "result"
    ]
    assert results["sync_after"]["code"] == 0 and after[-1]["result"]["files"] == 41  # space freed: it completes


JOBS_DRIVER = r"""
import json, os, re, shutil, subprocess, sys, time
from pathlib import Path

home, scratch, internlocal, spec, model, free_kb = sys.argv[1:7]
shutil.copytree(home, Path(scratch) / "home-copy")
# the GGUF is 100 MB, and a pull starts only with 512 MB more free beside it
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=768m", "tmpfs", home], check=True)
shutil.copytree(Path(scratch) / "home-copy", home, dirs_exist_ok=True)
filler = Path(home) / "filler"
env = dict(os.environ, INTERNLOCAL_HOME=str(home), NO_COLOR="1", COLUMNS="200")


def fill():
    # down to free_kb free, or to nothing if a job writing meanwhile gets there first
    stat = os.statvfs(home)
    left = max(0, stat.f_bavail * stat.f_frsize - int(free_kb) * 1024)
    with filler.open("ab") as fh:
        while left > 0:
            try:
                left -= fh.write(b"\0" * min(left, 1 << 20))
                fh.flush()
            except OSError:  # ENOSPC: full already
                return


def start(*args):
    return subprocess.Popen([internlocal, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc, keep=3000):
    try:
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return {"code": "timeout", "out": out[-keep:], "err": err[-keep:]}
    return {"code": proc.returncode, "out": out[-keep:], "err": err[-keep:]}


def run(*args, keep=3000):
    return finish(start(*args), keep)


def until(predicate, what, proc, timeout=180):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit(f"never saw {what}: {finish(proc)}")
        time.sleep(0.05)


def partial_bytes():
    # blocks written, not the file's length: the downloader sizes the partial file to the whole model first
    partial = Path(home) / "store" / "partial"
    return sum(p.stat().st_blocks * 512 for p in partial.glob("*") if p.is_file() and p.suffix != ".json")


def recorded_bytes():
    # what the download's sidecar says is on disk (saved every second): what a resumed pull keeps
    try:
        return sum(
            sum(part["done"] for part in json.loads(p.read_text())["parts"])
            for p in (Path(home) / "store" / "partial").glob("*.json")
        )
    except (OSError, ValueError, KeyError):
        return 0


def answers_cached():
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{Path(home) / 'catalog.sqlite'}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM eval_cache").fetchone()[0] >= 4
        finally:
            db.close()
    except sqlite3.Error:
        return False


results = {}
# a pull that the disk fills part-way through the file
pull = start("models", "pull", spec, "--name", "pulled", "--parts", "2")
until(lambda: recorded_bytes() > 8 << 20, "the download under way and recorded", pull)
fill()
results["pull"] = finish(pull)
results["partial_kept"] = partial_bytes()
filler.unlink()
results["models"] = run("models", "list", "--json")

# an evaluation that the disk fills between two batches of cached answers
evaluation = start("eval", "run", model, "capitals_en_qa", "--limit", "24")
until(answers_cached, "the first answers cached", evaluation)
fill()
results["eval"] = finish(evaluation)
filler.unlink()

results["doctor"] = run("doctor", "--json")
results["eval_after"] = run("eval", "run", model, "capitals_en_qa", "--limit", "24", "--json")
# what the pull's error said to do
job = re.search(r"jobs resume (\d+)", results["pull"]["err"])
results["pull_after"] = run("jobs", "resume", job.group(1) if job else "0", "--json", keep=10**7)
events = [json.loads(line) for line in results["pull_after"]["out"].splitlines() if line.startswith("{")]
second = next(i for i, e in enumerate(events) if e.get("type") == "status" and e.get("attempt") == 2)
results["resumed_from"] = next((e["done"] for e in events[second:] if e.get("unit") == "bytes"), None)
results["pull_after"]["out"] = results["pull_after"]["out"][-3000:]
results["show"] = run("models", "show", "pulled", "--json")
print(json.dumps(results))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not _can_mount(), reason="needs root for a private tmpfs (CI runs as root)")
@pytest.mark.chaos
@pytest.mark.timeout(900)
def test_a_disk_that_fills_during_a_pull_and_an_evaluation_loses_nothing(
    tmp_path, home, internlocal_bin, gguf_path, monkeypatch
):
    """The pull stops with the sentence and keeps its partial bytes; the evaluation stops with it and keeps the
    answers it had cached; once space is freed, both finish, the pull with the right file and the evaluation
    without asking the model again what it had answered."""
    import re

    from internlocal.hub.files import sha256_file
    from tests.hubserver import HubServer

    server = HubServer(tmp_path / "srv")
    server.add_repo_file("acme/tiny-GGUF", "tiny-q4_1.gguf", gguf_path)
    server.faults["delay_s"] = 0.004  # about 16 MB/s a connection: the disk fills while the file is coming
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    try:
        driver = [sys.executable, "-c", JOBS_DRIVER, str(home), str(tmp_path), internlocal_bin]
        proc = subprocess.run(
            ["unshare", "-m", *driver, "hf:acme/tiny-GGUF:*.gguf", "smollm2-135m-instruct-q4_1", "150"],
            capture_output=True,
            text=True,
            timeout=900,
        )
    finally:
        server.close()
    print(proc.stdout[-6000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(results, indent=1))
    for step in ("pull", "eval"):  # each a job that failed (exit 3), in a sentence
        outcome = results[step]
        assert outcome["code"] == 3, outcome
        last = outcome["err"].strip().splitlines()[-1]
        assert last.startswith("error: The disk is full (") and "Traceback" not in outcome["err"], outcome
    assert results["partial_kept"] > 8 << 20  # what had come is kept for the next try
    assert "pulled" not in {m["name"] for m in json.loads(results["models"]["out"])}  # nothing half-registered
    doctor = json.loads(results["doctor"]["out"])
    assert doctor["catalog"]["integrity"] == "ok"

    assert results["pull_after"]["code"] == 0, results["pull_after"]  # `jobs resume N`, as the error said
    assert results["resumed_from"] >= 8 << 20  # from the bytes kept, not from the start
    assert json.loads(results["show"]["out"])["sha256"] == sha256_file(gguf_path)  # verified as it was pulled
    assert results["eval_after"]["code"] == 0, results["eval_after"]
    # the job's log says how many answers came from the cache: those written before the disk filled
    logged = re.search(r"(\d+)/24 cached", results["eval_after"]["out"])
    assert logged and int(logged.group(1)) >= 4, results["eval_after"]["out"][-2000:]
