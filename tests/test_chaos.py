"""Chaos for every job kind (tests/chaos.py): killed with SIGKILL part-way and resumed, each ends where a run that
was never interrupted ends. Pulls, corpus preparation and training have their own kill tests with finer checks
(test_hub, test_pretrain, test_train); docs/reliability.md lists them all."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from internlocal.bootstrap import bootstrap
from internlocal.config import Settings
from tests.chaos import CHAOS_KILL_POINTS, KILL_POINTS, JobKind, run_through_kills
from tests.conftest import use_copy_of


def _documents(folder: Path) -> Path:
    """Forty notes of twenty paragraphs each: several embedding batches, so a kill lands between two of them."""
    folder.mkdir(parents=True, exist_ok=True)
    for n in range(40):
        paragraphs = [
            f"Note {n}, item {i}: the {['red', 'green', 'blue', 'grey'][i % 4]} box on shelf {n * 20 + i} holds "
            f"{i * 3 + n} screws, {i + 7} washers and a label written in {['May', 'June', 'July'][n % 3]}."
            for i in range(20)
        ]
        (folder / f"note{n:02d}.md").write_text(f"# Shelf notes {n}\n\n" + "\n\n".join(paragraphs) + "\n")
    return folder


def _start_sync(services, label):
    from internlocal.kb.library import create_kb
    from internlocal.services.knowledge import start_sync

    create_kb(services.settings, services.catalog, label, [str(services.settings.home.parent / "docs")])
    return start_sync(services, label)


def _sync_state(services, job, label):
    kb = services.catalog.get_kb(label)
    db = sqlite3.connect(Path(kb.path) / "index.sqlite")
    cids = sorted(r[0] for r in db.execute("SELECT cid FROM chunk"))
    files = sorted(r for r in db.execute("SELECT relpath, status, chunks FROM file"))
    db.close()
    stats = {k: v for k, v in kb.stats.items() if k in ("files", "chunks", "vectors")}
    return {"chunk_ids": cids, "files": files, "counts": stats}


def _start_eval(services, label):
    from internlocal.services.evaluation import start_eval

    return start_eval(services, ["smollm2-135m-instruct-q4_1"], ["capitals_en_qa"], limit=12)


def _eval_state(services, job, label):
    runs = services.catalog.eval_runs(job_id=job.id)
    return [
        (run.task, run.metrics, [(i.idx, i.response, i.scores_json) for i in services.catalog.eval_items(run.id)])
        for run in runs
    ]


KINDS = {
    "kb.sync": JobKind("kb.sync", "the same chunk ids, file rows and counts in the index", _start_sync, _sync_state),
    "evaluate": JobKind("evaluate", "the same scores and the same answer for every item", _start_eval, _eval_state),
}


def _services(tmp_path, template_home, monkeypatch, name):
    home = use_copy_of(template_home, tmp_path / name, monkeypatch)
    _documents(home.parent / "docs")
    return bootstrap(Settings(home=home, context_length=2048))


def _compare(kind_name, points, tmp_path, template_home, monkeypatch):
    kind = KINDS[kind_name]
    reference = _services(tmp_path, template_home, monkeypatch, "reference")
    try:
        expected = run_through_kills(reference, kind, (), "reference")
    finally:
        reference.close()
    killed = _services(tmp_path, template_home, monkeypatch, "killed")
    try:
        got = run_through_kills(killed, kind, points, "reference")
    finally:
        killed.close()
    assert got == expected, json.dumps([got, expected], default=str)[:2000]


@pytest.mark.parametrize("kind_name", ["evaluate"])  # the cheapest kind keeps the harness in `make test` (chaos: all)
def test_a_job_killed_part_way_and_resumed_ends_as_an_uninterrupted_one(
    kind_name, tmp_path, template_home, monkeypatch
):
    _compare(kind_name, KILL_POINTS, tmp_path, template_home, monkeypatch)


@pytest.mark.chaos
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kind_name", sorted(KINDS))
def test_a_job_killed_again_and_again_ends_as_an_uninterrupted_one(kind_name, tmp_path, template_home, monkeypatch):
    _compare(kind_name, CHAOS_KILL_POINTS, tmp_path, template_home, monkeypatch)
