"""Pretraining on the CPU: corpus preparation into token shards, a tiny model from scratch, kill/resume,
two gloo processes vs one, continued pretraining of the embedded model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from internlocal.data.corpus import CorpusIndex, prepare_corpus
from internlocal.errors import UserError
from internlocal.train.recipe import Recipe, load_recipe, recipes_dir

NOTES = recipes_dir() / "data" / "pretrain_nature_notes.jsonl"


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(run_dir) if e["type"] == "step"}


def val_losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["val_loss"] for e in events(run_dir) if e["type"] == "eval"}


@pytest.fixture(scope="module")
def nature_corpus(tmp_path_factory, hf_model_dir) -> Path:
    out = tmp_path_factory.mktemp("corpus") / "nature"
    prepare_corpus(NOTES, hf_model_dir, out, seq_len=128, validation=0.05, workers=2)
    return out


def make_run(
    tmp_path: Path, model_dir: Path, corpus: Path, name: str, recipe: str = "smollm2-tiny_pretrain_cpu", **overrides
) -> Path:
    _, base = load_recipe(recipe)
    r = Recipe.model_validate({**base.model_dump(), "sample_prompts": [], **overrides})
    run_dir = tmp_path / name
    run_dir.mkdir()
    (run_dir / "config.json").write_text(
        json.dumps({"recipe": r.model_dump(), "model_path": str(model_dir), "corpus_dir": str(corpus), "threads": 2})
    )
    return run_dir


def loop(run_dir: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "internlocal.train.loop", str(run_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_prepared_shards_detokenize_to_the_documents_in_order_with_eos_and_duplicates_removed(tmp_path, hf_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(hf_model_dir)
    source = tmp_path / "texts"
    (source / "sub").mkdir(parents=True)
    docs = [f"Note {i}: the {['fox', 'owl', 'heron'][i % 3]} crossed the river {i} times, 北京 {i}." for i in range(40)]
    for i, text in enumerate(docs[:30]):
        (source / f"{i:02d}.md").write_text(text)
    (source / "sub" / "more.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[30:]))
    (source / "zz-duplicate.txt").write_text(docs[3])  # the same document again: dropped
    index = prepare_corpus(source, hf_model_dir, tmp_path / "out", seq_len=16, validation=0.0, workers=2)
    assert index.dtype == "uint16" and index.vocab_size == 49152  # SmolLM2's vocabulary fits 16 bits
    assert (index.stats["documents"], index.stats["duplicates"]) == (40, 1)
    tokens = [int(t) for shard in index.sequences("train") for row in shard for t in row]
    assert len(tokens) == index.stats["train_sequences"] * 16
    expected = []
    order = [f"{i:02d}.md" for i in range(30)]  # files in path order: 00.md … 29.md, then sub/more.jsonl
    for text in [docs[int(name[:2])] for name in order] + docs[30:]:
        expected += tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert (
        tokens == expected[: len(tokens)] and len(expected) - len(tokens) < 16
    )  # only the last partial sequence is dropped
    assert tokenizer.decode(tokens).startswith(docs[0] + tokenizer.eos_token + docs[1] + tokenizer.eos_token)
    assert not list((tmp_path / "out").glob("*.tmp")) and not (tmp_path / "out" / "state.json").exists()


def test_bad_corpora_are_refused_with_a_clear_message(tmp_path, hf_model_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"holds no \.txt, \.md, \.jsonl or \.parquet files"):
        prepare_corpus(tmp_path / "empty", hf_model_dir, tmp_path / "o1", seq_len=16)
    (tmp_path / "binary.txt").write_bytes(b"\x7fELF\x00\x00\x01binary")
    with pytest.raises(UserError, match="binary file"):
        prepare_corpus(tmp_path / "binary.txt", hf_model_dir, tmp_path / "o2", seq_len=16)
    (tmp_path / "tiny.txt").write_text("Too short.")
    with pytest.raises(UserError, match="fewer than one sequence of 128"):
        prepare_corpus(tmp_path / "tiny.txt", hf_model_dir, tmp_path / "o3", seq_len=128)
    (tmp_path / "rows.jsonl").write_text('{"text": "fine"}\n{"body": "no text field"}\n')
    with pytest.raises(UserError, match='line 2: a pretraining row needs a "text" string'):
        prepare_corpus(tmp_path / "rows.jsonl", hf_model_dir, tmp_path / "o4", seq_len=16)
    with pytest.raises(UserError, match="not a prepared corpus"):
        CorpusIndex.load(tmp_path / "o4")


def test_kill_9_during_preparation_resumes_to_the_same_shards(tmp_path, hf_model_dir):
    source = tmp_path / "big.jsonl"
    source.write_text(
        "".join(
            json.dumps({"text": f"Line {i}: the heron waits by the marsh in spring, {i * 7}."}) + "\n"
            for i in range(30000)
        )
    )
    reference = prepare_corpus(source, hf_model_dir, tmp_path / "reference", seq_len=32, validation=0.02, workers=1)
    code = (
        "import sys; from pathlib import Path; from internlocal.data.corpus import prepare_corpus; "
        f"prepare_corpus(Path({str(source)!r}), Path({str(hf_model_dir)!r}), Path({str(tmp_path / 'killed')!r}), "
        "seq_len=32, validation=0.02, workers=1)"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    state = tmp_path / "killed" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (
        state.exists() and json.loads(state.read_text() or "{}").get("splits", {}).get("train", {}).get("shards")
    ):
        time.sleep(0.01)
    workers = psutil.Process(proc.pid).children(recursive=True)
    assert workers  # the tokenizing pool is running
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # its pool workers go with it (they used to wait on the dead pool's queue for good, orphaned)
    _, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, [p.pid for p in alive]
    assert not (tmp_path / "killed" / "index.json").exists()  # killed part-way, after some shards
    resumed = prepare_corpus(source, hf_model_dir, tmp_path / "killed", seq_len=32, validation=0.02, workers=1)
    assert resumed.stats == reference.stats
    for split in ("train", "validation"):
        ours, theirs = resumed.sequences(split), reference.sequences(split)
        assert [s.tobytes() for s in ours] == [s.tobytes() for s in theirs]


@pytest.mark.slow
def test_tiny_model_from_scratch_learns_the_corpus_and_a_killed_run_continues_its_curve(
    tmp_path, hf_model_dir, nature_corpus
):
    reference = make_run(tmp_path, hf_model_dir, nature_corpus, "reference", max_steps=30, eval_every=10, save_every=0)
    proc = loop(reference)
    assert proc.wait(600) == 0, proc.stdout.read()[-3000:]
    evals = val_losses(reference)
    assert evals[0] > 10 and evals[30] < 0.6 * evals[0]  # ln(49152) ≈ 10.8 at the start
    steps = [e for e in events(reference) if e["type"] == "step"]
    assert all(
        e["tokens_per_s_per_device"] > 0
        and e["tflops_per_device"] > 0
        and e["consumed_tokens"] > 0
        and e["skipped_batches"] == 0
        for e in steps
    )
    assert (
        steps[-1]["consumed_tokens"] == sum(e["tokens"] for e in steps) and steps[-1]["mfu"] is None
    )  # no CPU peak known
    assert next(e for e in events(reference) if e["type"] == "eval" and e["step"] == 30)["val_ppl"] > 1
    assert (reference / "model" / "model.safetensors").exists()

    killed = make_run(tmp_path, hf_model_dir, nature_corpus, "killed", max_steps=30, eval_every=10, save_every=4)
    proc = loop(killed)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and max(losses(killed), default=0) < 6:
        time.sleep(0.05)
    proc.kill()  # kill -9 after step 6: the newest checkpoint is step 4
    proc.wait()
    assert (killed / "checkpoints" / "step-4" / "sharded").is_dir()
    proc = loop(killed, "--resume")
    # the curve is followed well past the resumed checkpoint; the rest of the schedule is the reference's steps again
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and max(losses(killed), default=0) < 12 and proc.poll() is None:
        time.sleep(0.05)
    (killed / "STOP").touch()
    assert proc.wait(600) == 0, proc.stdout.read()[-3000:]
    stopped = next(e["step"] for e in events(killed) if e["type"] == "stopped")
    assert 12 <= stopped < 30
    expected = {step: loss for step, loss in losses(reference).items() if step <= stopped}
    assert losses(killed) == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert sorted(losses(killed)) == list(range(1, stopped + 1))


@pytest.mark.slow
@pytest.mark.distributed
def test_two_gloo_processes_give_the_single_process_curve_and_resume_on_one(tmp_path, hf_model_dir, nature_corpus):
    """FSDP2 over 2 gloo processes (it runs on the CPU), micro-batch halved: the same loss as one process;
    stopped at step 3 with a DCP checkpoint, the run resumes on ONE process and still follows the curve."""
    from internlocal.train.process import loop_command

    common = {"max_steps": 6, "eval_every": 0, "save_every": 0, "lr": 3e-3}
    single = make_run(tmp_path, hf_model_dir, nature_corpus, "single", micro_batch=8, **common)
    proc = loop(single)
    assert proc.wait(600) == 0, proc.stdout.read()[-3000:]
    fsdp = make_run(tmp_path, hf_model_dir, nature_corpus, "fsdp", micro_batch=4, gpus=2, distributed="fsdp", **common)
    config = json.loads((fsdp / "config.json").read_text())
    (fsdp / "config.json").write_text(json.dumps({**config, "threads": 1}))
    stop_after_three = subprocess.Popen(
        loop_command(fsdp, 2, resume=False), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and max(losses(fsdp), default=0) < 2 and stop_after_three.poll() is None:
        time.sleep(0.02)
    (fsdp / "STOP").touch()
    assert stop_after_three.wait(300) == 0, stop_after_three.stdout.read()[-3000:]
    stopped = next(e["step"] for e in events(fsdp) if e["type"] == "stopped")
    assert stopped < 6 and (fsdp / "checkpoints" / f"step-{stopped}" / "sharded").is_dir()
    two = losses(fsdp)
    assert two == pytest.approx({s: v for s, v in losses(single).items() if s <= stopped}, rel=2e-3)

    config = json.loads((fsdp / "config.json").read_text())
    config["recipe"]["micro_batch"] = 8  # one process now takes both halves
    (fsdp / "config.json").write_text(json.dumps(config))
    resumed = subprocess.run(loop_command(fsdp, 1, resume=True), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert losses(fsdp) == pytest.approx(losses(single), rel=2e-3) and sorted(losses(fsdp)) == list(range(1, 7))
    assert any("resumed on 1 processes (checkpoint from 2)" in e.get("message", "") for e in events(fsdp))


@pytest.mark.slow
def test_continued_pretraining_lowers_the_embedded_models_held_out_perplexity(tmp_path, hf_model_dir, nature_corpus):
    run = make_run(
        tmp_path,
        hf_model_dir,
        nature_corpus,
        "cpt",
        recipe="smollm2-135m_cpt_cpu",
        seq_len=128,
        micro_batch=4,
        max_steps=8,
        eval_every=0,
        save_every=0,
        lr=1e-4,
        gradient_checkpointing=False,
    )
    proc = loop(run)
    assert proc.wait(900) == 0, proc.stdout.read()[-3000:]
    ppl = {e["step"]: e["val_ppl"] for e in events(run) if e["type"] == "eval"}
    assert set(ppl) == {0, 8} and ppl[8] < 0.8 * ppl[0], ppl


def test_a_corpus_from_another_tokenizer_is_refused(tmp_path, hf_model_dir, nature_corpus):
    from transformers import AutoTokenizer

    other = tmp_path / "other-tokenizer"
    tokenizer = AutoTokenizer.from_pretrained(hf_model_dir)
    tokenizer.add_tokens(["<domain-term>"])
    tokenizer.save_pretrained(other)
    corpus = tmp_path / "other-corpus"
    prepare_corpus(NOTES, other, corpus, seq_len=128, workers=1)
    run = make_run(tmp_path, hf_model_dir, corpus, "mismatch", max_steps=2)
    proc = loop(run)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 2 and "tokenized with another tokenizer" in out
    assert [e["type"] for e in events(run)] == ["error"]


@pytest.mark.chaos  # fault injection, after `make test` (make test-long): the suite's time budget
@pytest.mark.timeout(900)
def test_a_rank_that_dies_is_reported_in_one_sentence_and_the_last_checkpoint_resumes(
    tmp_path, hf_model_dir, nature_corpus
):
    import psutil

    from internlocal.train.process import describe_failure, loop_command

    run = make_run(
        tmp_path,
        hf_model_dir,
        nature_corpus,
        "ranks",
        max_steps=12,
        eval_every=0,
        save_every=2,
        micro_batch=4,
        gpus=2,
        distributed="ddp",
    )
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "threads": 1}))
    with (run / "train.log").open("wb") as log:
        launcher = subprocess.Popen(loop_command(run, 2, resume=False), stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and max(losses(run), default=0) < 3:
        time.sleep(0.05)
    workers = [
        p
        for p in psutil.Process(launcher.pid).children(recursive=True)
        if "internlocal.train.loop" in " ".join(p.cmdline())
    ]
    rank1 = next(p for p in workers if p.environ().get("RANK") == "1")
    rank1.send_signal(signal.SIGKILL)  # a node or GPU lost mid-run
    code = launcher.wait(300)
    assert code != 0
    sentence = describe_failure(run, code, "ranks")
    assert sentence.startswith("Rank 1 of the run was killed by signal 9 and torchrun stopped the others")
    assert "resume continues from step-" in sentence and sentence.count(".") <= 2
    last = sorted((run / "checkpoints").glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))[-1]
    assert (last / "sharded").is_dir() and (last / "state.json").exists()  # intact: written before the kill
    resumed = subprocess.run(loop_command(run, 1, resume=True), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert max(losses(run)) == 12


@pytest.mark.slow
def test_cli_prepares_a_corpus_pretrains_from_scratch_exports_gguf_and_registers_the_lineage(
    cli_env, internlocal_bin, hf_model_dir
):
    from internlocal.engines.base import GenerationParams
    from internlocal.engines.llamacpp import LlamaCppEngine

    logs: list[str] = []

    def cli(*args: str, timeout: int = 600) -> dict:
        out = subprocess.run(
            [internlocal_bin, *args, "--json"], env=cli_env, capture_output=True, text=True, timeout=timeout
        )
        assert out.returncode == 0, out.stderr[-3000:]
        lines = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
        logs.extend(e["message"] for e in lines if e.get("type") == "log")
        return next((e["result"] for e in reversed(lines) if e.get("type") == "result"), None) or json.loads(out.stdout)

    subprocess.run(
        [internlocal_bin, "models", "import", str(hf_model_dir), "--name", "smol-hf"],
        env=cli_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    prepared = cli("pretrain", "prepare", str(NOTES), "--model", "smol-hf", "--seq-len", "128", "--name", "notes")
    assert (prepared["dataset"], prepared["documents"], prepared["duplicates"]) == ("notes", 400, 0)
    assert prepared["dtype"] == "uint16" and prepared["train_sequences"] > 100
    # watchdog_s=1: loading the model alone is a second without metrics, so the watchdog speaks, then sees them again
    result = cli(
        "pretrain",
        "run",
        "smollm2-tiny_pretrain_cpu",
        "model=smol-hf",
        "corpus=notes",
        "max_steps=20",
        "eval_every=10",
        "save_every=0",
        "watchdog_s=1",
    )
    assert result["status"] == "finished" and result["final_loss"] < 6
    assert (
        any(m.startswith("no metrics for 1 s: the run may be stuck") for m in logs) and "metrics arrive again" in logs
    )
    shown = json.loads(
        subprocess.run(
            [internlocal_bin, "models", "show", result["merged_model"], "--json"],
            env=cli_env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    parents = {(p["operation"], p["from"]) for p in shown["parents"]}
    assert {("pretrain.scratch", "smol-hf"), ("pretrain.scratch", "dataset notes")} <= parents
    models = {
        m["name"]: m
        for m in json.loads(
            subprocess.run(
                [internlocal_bin, "models", "list", "--json"], env=cli_env, capture_output=True, text=True, check=True
            ).stdout
        )
    }
    gguf = models[result["gguf_model"]]
    assert gguf["format"] == "gguf" and gguf["parameters"] < 10_000_000
    with LlamaCppEngine(Path(gguf["path"]), n_ctx=256) as engine:  # the new model runs where every model runs
        text = engine.complete("The fox lives near the", GenerationParams.greedy(max_tokens=8)).collect().text
    assert text.strip()
    listed = json.loads(
        subprocess.run(
            [internlocal_bin, "pretrain", "corpora", "--json"], env=cli_env, capture_output=True, text=True, check=True
        ).stdout
    )
    assert [c["name"] for c in listed] == ["notes"] and listed[0]["tokenizer"] == "smol-hf"


def test_non_finite_losses_skip_their_batches_and_a_run_that_only_diverges_stops_with_a_message(
    tmp_path, hf_model_dir, nature_corpus
):
    """lr=1e308: the first update makes the weights infinite, every later loss is nan; those batches are
    skipped and counted (the weights are not updated from them), and the run gives up with a sentence."""
    run = make_run(
        tmp_path,
        hf_model_dir,
        nature_corpus,
        "diverges",
        max_steps=5,
        lr=1e308,
        warmup_ratio=0.0,
        micro_batch=2,
        eval_every=0,
        save_every=0,
        epochs=100,
    )
    proc = loop(run)
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 2, out[-2000:]
    assert "The loss is not finite for most batches; lower lr or check the data." in out
    warnings = [e["message"] for e in events(run) if e["type"] == "warning"]
    assert len(warnings) == 51 and warnings[0].startswith("non-finite loss at step 2: batch skipped (1 so far)")
    assert [e["step"] for e in events(run) if e["type"] == "step"] == [1]
