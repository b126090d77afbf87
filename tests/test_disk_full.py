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
