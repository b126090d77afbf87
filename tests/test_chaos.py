"""Chaos for every job kind (tests/chaos.py): killed with SIGKILL part-way and resumed, each ends where a run that
was never interrupted ends. Pulls also have a kill test that counts the bytes sent again (test_hub); corpus
preparation and training have their own kill tests with finer checks (test_pretrain, test_train);
docs/reliability.md lists them all."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from internlocal.bootstrap import bootstrap
from internlocal.config import Settings
from internlocal.hub.files import sha256_path
from tests.chaos import CHAOS_KILL_POINTS, KILL_POINTS, JobKind, attempt_started_at, done_so_far, run_through_kills
from tests.conftest import use_copy_of
from tests.hubserver import HubServer

EMBEDDED_CHAT = "smollm2-135m-instruct-q4_1"
HUB_REPO = "acme/tiny-GGUF"


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


def _store_files(services) -> list[str]:
    """Every file in the model store but lock files: blobs by content hash, manifests by model name; nothing left
    in ``partial``."""
    store = services.settings.store_dir
    return sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file() and p.suffix != ".lock")


def _model_state(services, name: str) -> dict:
    """A derived model as the catalog and the disk hold it."""
    model = services.catalog.get_model(name)
    parents = sorted(
        (e.operation, e.parent_type, e.parent_id, e.params_json) for e in services.catalog.parents(("model", model.id))
    )
    return {
        "row": (model.name, model.format, model.quantization, model.sha256, model.size_bytes),
        "content": sha256_path(Path(model.path)),
        "parents": parents,
        "models": sorted(m.name for m in services.catalog.list_models()),
        "store": _store_files(services),
    }


def _start_pull(services, label):
    from internlocal.services.models import start_pull

    return start_pull(services, f"hf:{HUB_REPO}:*.gguf", name="pulled", parts=2)


def _start_convert(services, label):
    from internlocal.services.models import start_convert

    return start_convert(services, EMBEDDED_CHAT, "hf", name="converted")


def _start_quantize(services, label):
    from internlocal.services.models import start_quantize

    return start_quantize(services, EMBEDDED_CHAT, "Q8_0", name="quantized")


def _start_prepare(services, label):
    """A 30,000-document corpus for the Hugging Face copy of the embedded model (registered by the test)."""
    from internlocal.services.training import prepare_corpus

    source = services.settings.home.parent.parent / "corpus.jsonl"  # one file for both runs: its path is recorded
    if not source.exists():
        source.write_text(
            "".join(
                json.dumps({"text": f"Line {i}: the heron waits by the marsh in spring, {i * 7}."}) + "\n"
                for i in range(30000)
            )
        )
    return prepare_corpus(services, str(source), "smol-hf", 32, validation=0.02, name="herons")


def _start_training(services, label):
    """The tiny from-scratch recipe for twelve steps, a checkpoint every two (nothing exported)."""
    from internlocal.services.training import start_training

    overrides = {
        "model": "smol-hf",
        "max_steps": 12,
        "eval_every": 0,
        "save_every": 2,
        "sample_prompts": [],
        "export": {"merge": False, "gguf": False, "quantize": None},
    }
    return start_training(services, "smollm2-tiny_pretrain_cpu", overrides, name="tiny")


def _training_state(services, job, label):
    run = services.catalog.get_train_run("tiny")
    events = [json.loads(line) for line in (Path(run.run_dir) / "metrics.jsonl").read_text().splitlines()]
    losses = {e["step"]: e["loss"] for e in events if e["type"] == "step"}  # a step done again replaces its loss
    return {"status": run.status, "losses": [losses[step] for step in sorted(losses)], "steps": sorted(losses)}


def _same_curve(got, expected) -> bool:
    """The same steps and status, each step's loss within 1e-4 (a resumed run restores weights, optimizer, RNG and
    data order from its checkpoint)."""
    return (got["status"], got["steps"]) == (expected["status"], expected["steps"]) and got["losses"] == pytest.approx(
        expected["losses"], rel=1e-4, abs=1e-5
    )


def _documents_read(count: int):
    def reached(services, job, attempt) -> bool:
        return done_so_far(services, job, attempt) >= count

    reached.__doc__ = f"{count} documents read"
    return reached


def _prepare_state(services, job, label):
    dataset = services.catalog.find_dataset("herons")
    folder = Path(dataset.path)
    shards = {p.relative_to(folder).as_posix(): sha256_path(p) for p in sorted(folder.rglob("*")) if p.is_file()}
    row = (dataset.name, dataset.form, dataset.train_rows, dataset.validation_rows, dataset.stats)
    return {"row": row, "files": shards}


def _writing_the_quantized_file(services, job, attempt) -> bool:
    """while llama.cpp writes the quantized file"""  # (the kill point's name in a failure message)
    started = attempt_started_at(services, job, attempt)
    work = services.settings.store_dir / "partial" / f"quantize-{job.id}.gguf"
    try:
        stat = work.stat()
    except FileNotFoundError:
        return False
    # this attempt's file (a killed attempt leaves its own behind), some megabytes in
    return started is not None and stat.st_mtime >= started and stat.st_size > 4 << 20


KINDS = {
    "kb.sync": JobKind("kb.sync", "the same chunk ids, file rows and counts in the index", _start_sync, _sync_state),
    "evaluate": JobKind("evaluate", "the same scores and the same answer for every item", _start_eval, _eval_state),
    "models.pull": JobKind(
        "models.pull",
        "the same catalog row, file hash and store files (blobs, manifest; nothing left partial)",
        _start_pull,
        lambda services, job, label: _model_state(services, "pulled"),
    ),
    # gguf→hf reports three steps: kill while it saves the safetensors, then while it moves them into the store
    "models.convert": JobKind(
        "models.convert",
        "the same catalog row, lineage, content hash and store files",
        _start_convert,
        lambda services, job, label: _model_state(services, "converted"),
        chaos_points=(0.3, 0.6),
    ),
    "pretrain.prepare": JobKind(
        "pretrain.prepare",
        "the same dataset row and every file of the prepared corpus byte for byte (token shards, index)",
        _start_prepare,
        _prepare_state,
        # a streamed corpus has no total to take fractions of: 15, 50 and 85 % of its 30,000 documents
        chaos_points=(_documents_read(4500), _documents_read(15000), _documents_read(25500)),
    ),
    "train.run": JobKind(
        "train.run",
        "the same steps and status, every step's loss within 1e-4 of the uninterrupted run's",
        _start_training,
        _training_state,
        same=_same_curve,
    ),
    # one step with no progress inside it: killed as soon as the first attempt starts, then while llama.cpp writes
    "models.quantize": JobKind(
        "models.quantize",
        "the same catalog row, lineage, content hash and store files",
        _start_quantize,
        lambda services, job, label: _model_state(services, "quantized"),
        chaos_points=(0.0, _writing_the_quantized_file),
    ),
}


def _services(tmp_path, template_home, monkeypatch, name):
    home = use_copy_of(template_home, tmp_path / name, monkeypatch)
    _documents(home.parent / "docs")
    services = bootstrap(Settings(home=home, context_length=2048))
    if os.environ.get("INTERNLOCAL_TEST_HF_MODEL"):  # corpus preparation and training take a Hugging Face folder
        from internlocal.hub.library import import_model
        from internlocal.hub.store import Store

        import_model(
            services.catalog,
            Store(services.settings.store_dir),
            Path(os.environ["INTERNLOCAL_TEST_HF_MODEL"]),
            name="smol-hf",
        )
    return services


@pytest.fixture
def hub(tmp_path, monkeypatch, gguf_path):
    """The Hub look-alike serving the embedded GGUF slowly enough (about 16 MB/s a connection) to be killed
    mid-file."""
    server = HubServer(tmp_path / "srv")
    server.add_repo_file(HUB_REPO, "tiny-q4_1.gguf", gguf_path)
    server.faults["delay_s"] = 0.004
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    yield server
    server.close()


def _compare(kind_name, points, tmp_path, template_home, monkeypatch):
    kind = KINDS[kind_name]
    points = (kind.chaos_points or points) if points == CHAOS_KILL_POINTS else points
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
    assert (kind.same or (lambda a, b: a == b))(got, expected), json.dumps([got, expected], default=str)[:2000]


@pytest.mark.parametrize("kind_name", ["evaluate"])  # the cheapest kind keeps the harness in `make test` (chaos: all)
def test_a_job_killed_part_way_and_resumed_ends_as_an_uninterrupted_one(
    kind_name, tmp_path, template_home, monkeypatch
):
    _compare(kind_name, KILL_POINTS, tmp_path, template_home, monkeypatch)


@pytest.mark.chaos
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kind_name", sorted(KINDS))
def test_a_job_killed_again_and_again_ends_as_an_uninterrupted_one(
    kind_name, tmp_path, template_home, monkeypatch, request
):
    if kind_name == "models.pull":
        request.getfixturevalue("hub")
    if kind_name in ("pretrain.prepare", "train.run"):
        monkeypatch.setenv("INTERNLOCAL_TEST_HF_MODEL", str(request.getfixturevalue("hf_model_dir")))
    _compare(kind_name, CHAOS_KILL_POINTS, tmp_path, template_home, monkeypatch)
