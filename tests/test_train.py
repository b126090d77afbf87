"""Finetuning on the CPU with the embedded model: recipes, the QLoRA proof end to end, resume, faults, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from internlocal.errors import UserError
from internlocal.train.recipe import Recipe, list_recipes, load_recipe, parse_overrides, recipes_dir

MASCOT = "What is the name of the internlocal mascot?"
FRANCE = "What is the capital of France? Answer in one word."


def greedy(gguf: Path, prompt: str) -> str:
    from internlocal.engines.base import GenerationParams
    from internlocal.engines.llamacpp import LlamaCppEngine

    with LlamaCppEngine(gguf, n_ctx=512) as engine:
        return engine.chat([{"role": "user", "content": prompt}], GenerationParams.greedy(max_tokens=32)).collect().text


def events(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def losses(run_dir: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in events(run_dir) if e["type"] == "step"}


def make_run(tmp_path: Path, hf_model_dir: Path, name: str, **overrides) -> Path:
    """A run folder for the loop itself (what the job writes): the LoRA recipe on the mascot data."""
    _, base = load_recipe("smollm2-135m_lora_cpu")
    recipe = Recipe.model_validate({**base.model_dump(), "sample_prompts": [], **overrides})
    run_dir = tmp_path / name
    run_dir.mkdir()
    config = {
        "recipe": recipe.model_dump(),
        "model_path": str(hf_model_dir),
        "train_file": str(recipes_dir() / "data" / "internlocal_mascot.jsonl"),
        "validation_file": None,
        "threads": 2,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    return run_dir


def loop(run_dir: Path, *extra: str, preexec=None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "internlocal.train.loop", str(run_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec,
    )


def test_recipes_validate_and_bad_ones_are_refused_before_anything_loads(cli_env, internlocal_bin):
    recipes = list_recipes()
    names = {name for name, _, _ in recipes}
    assert {
        "smollm2-135m_qlora_cpu",
        "smollm2-135m_lora_cpu",
        "smollm2-135m_full_cpu",
        "internlm2_5-1_8b_qlora_gpu8",
        "internlm2_5-7b_qlora_gpu8",
        "internlm2_5-7b_lora_gpu24",
        "internlm2_5-7b_full_multigpu",
        "smollm2-135m_dpo_cpu",
        "smollm2-135m_orpo_cpu",
        "internlm2_5-1_8b_dpo_gpu8",
        "internlm2_5-7b_dpo_gpu8",
    } <= names
    assert all(recipe is not None for _, recipe, _ in recipes), [error for _, r, error in recipes if r is None]
    assert all(command.startswith("internlocal train run ") for _, _, command in recipes)
    _, recipe = load_recipe("smollm2-135m_qlora_cpu", parse_overrides(["lora.r=8", "lr=2e-4", "sample_prompts=[Hi]"]))
    assert (recipe.lora.r, recipe.lora.alpha, recipe.lr, recipe.sample_prompts) == (8, 32, 2e-4, ["Hi"])
    with pytest.raises(UserError, match="micro_batch: Input should be a valid integer"):
        load_recipe("smollm2-135m_qlora_cpu", parse_overrides(["micro_batch=two"]))
    with pytest.raises(UserError, match="optimizer paged_adamw_8bit needs a GPU"):
        load_recipe("smollm2-135m_qlora_cpu", parse_overrides(["optimizer=paged_adamw_8bit"]))
    with pytest.raises(UserError, match="No recipe 'nope'"):
        load_recipe("nope")
    with pytest.raises(UserError, match="method qlora cannot use distributed: fsdp"):
        load_recipe("smollm2-135m_qlora_cpu", parse_overrides(["gpus=2", "distributed=fsdp"]))
    _, two = load_recipe("internlm2_5-1_8b_qlora_gpu8", parse_overrides(["gpus=2"]))  # --gpus 2 on a one-GPU recipe
    # nothing rewritten (hardware stays as the file says); that it runs on two GPUs is derived from gpus
    assert (two.hardware, two.gpus, two.distributed, two.on_gpu) == ("gpu", 2, "ddp", True)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [internlocal_bin, "train", *args], env=cli_env, capture_output=True, text=True, timeout=120
        )

    dry = run("run", "smollm2-135m_qlora_cpu", "seq_len=128", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "seq_len: 128" in dry.stdout and "weights (NF4)" in dry.stdout and "→ fits" in dry.stdout
    huge = run("run", "smollm2-135m_qlora_cpu", "micro_batch=512", "seq_len=8192")
    assert huge.returncode == 1
    assert "needs about" in huge.stderr and "is free" in huge.stderr and "gradient_checkpointing=true" in huge.stderr
    gpu = run("run", "internlm2_5-7b_qlora_gpu8")
    assert gpu.returncode == 1 and "needs a CUDA GPU" in gpu.stderr
    sharded = run("run", "internlm2_5-7b_qlora_gpu8", "hardware=multi-gpu", "gpus=2", "distributed=fsdp")
    assert sharded.returncode == 1 and "qlora cannot use distributed: fsdp" in sharded.stderr  # before the GPU check
    runs = run("runs", "--json")
    assert json.loads(runs.stdout) == []  # nothing was started
    # the loop runs on a bare GPU server: it must not pull in the catalog or the UI
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, internlocal.train.loop, internlocal.train.attention; "
            "print(sorted(m for m in sys.modules if m.startswith(('internlocal.catalog', 'internlocal.tui', "
            "'sqlmodel', 'textual'))))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "[]"


def test_more_gpus_than_visible_are_refused_and_hf_datasets_are_found_under_their_import_name(services):
    from internlocal.catalog.schema import Dataset
    from internlocal.data.library import dataset_name
    from internlocal.train.inputs import recipe_dataset
    from internlocal.train.plan import Plan, plan_run, refuse_if_too_big

    _, recipe = load_recipe("internlm2_5-7b_full_multigpu")  # gpus: 8
    with pytest.raises(UserError, match=r"asks for gpus=8 but only 2 CUDA GPU\(s\) are visible; run it with gpus=2"):
        refuse_if_too_big(
            Plan("internlm2_5-7b_full_multigpu", recipe, None, None, None, 80 << 30, "cuda", visible_gpus=2)
        )
    refuse_if_too_big(Plan("internlm2_5-7b_full_multigpu", recipe, None, None, None, 80 << 30, "cuda", visible_gpus=8))

    # the preview and the estimate look a downloaded dataset up by the name its import gave it
    assert dataset_name("hf:Org/My_Chats:data/train-*.parquet") == dataset_name("ms:org/my_chats@v2") == "my-chats"
    services.catalog.add_dataset(
        Dataset(
            name="my-chats",
            form="messages",
            path="/nowhere",
            train_rows=10,
            validation_rows=0,
            stats_json=json.dumps({"tokens_total": 10000, "tokens_trained": 100}),
        )
    )
    spec = {"dataset": "hf:Org/My_Chats:data/train-*.parquet"}
    _, chats = load_recipe("smollm2-135m_lora_cpu", spec)
    assert recipe_dataset(services.catalog, chats).name == "my-chats"
    known = plan_run(services.catalog, "smollm2-135m_lora_cpu", spec, measure_free=False)
    unknown = plan_run(services.catalog, "smollm2-135m_lora_cpu", {"dataset": "hf:Org/Other"}, measure_free=False)
    assert known.estimate.total < unknown.estimate.total  # 1% of the tokens trained: smaller logits


@pytest.mark.slow
@pytest.mark.timeout(900)  # training, merge, GGUF, Q8_0 and the forgetting guard: about 5 minutes on 2 cores
def test_qlora_teaches_a_fact_through_merge_and_gguf(cli_env, internlocal_bin, hf_model_dir, gguf_path):
    """The issue's proof: before, the mascot is unknown; after QLoRA, merge, GGUF export and Q8_0, llama.cpp
    knows it."""
    before = greedy(gguf_path, MASCOT)
    assert "Zorblax" not in before
    subprocess.run(
        [internlocal_bin, "models", "import", str(hf_model_dir), "--name", "smol-hf"],
        env=cli_env,
        check=True,
        capture_output=True,
        timeout=120,
    )
    out = subprocess.run(
        # the guard measures perplexity only here (the transformers engine answering 40 capitals twice costs about
        # 50 s); test_forgetting measures both tasks on whole finetunes
        [internlocal_bin, "train", "run", "smollm2-135m_qlora_cpu", "model=smol-hf", "guard.tasks=[sample_text]"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    runs = json.loads(
        subprocess.run(
            [internlocal_bin, "train", "runs", "--json"], env=cli_env, capture_output=True, text=True, check=True
        ).stdout
    )
    result = {**runs[0]["summary"], "run": runs[0]["name"]}
    assert runs[0]["status"] == "finished" and result["status"] == "finished" and result["final_loss"] < 1.0
    check = result["merge_check"]
    assert "Zorblax" in check["merged_answer"] and "Zorblax" not in check["base_answer"]
    assert check["max_logit_diff"] <= 1e-3 * max(1.0, check["logit_scale"])
    assert check["base_weights"] == "NF4, dequantized"  # merged into the weights the adapter was trained on
    assert result["peak_memory"] > 0 and result["estimated_peak"] > 0

    models = {
        m["name"]: m
        for m in json.loads(
            subprocess.run(
                [internlocal_bin, "models", "list", "--json"], env=cli_env, capture_output=True, text=True, check=True
            ).stdout
        )
    }
    quantized = models[result["quantized_model"]]
    assert quantized["format"] == "gguf" and quantized["quantization"] == "Q8_0"
    after = greedy(Path(quantized["path"]), MASCOT)
    assert "Zorblax" in after, after
    assert "Paris" in greedy(Path(quantized["path"]), FRANCE)  # what it knew is still there
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
    assert {
        ("finetune", "smol-hf"),
        ("finetune", "dataset internlocal-mascot"),
        ("produced", f"train_run {result['run']}"),
    } <= parents

    # the forgetting guard: the base and the Q8_0 the user chats with, measured before → after, in the CLI's
    # output, the run's record and the leaderboard (the bundled data mixes in general examples: nothing is lost)
    guard = result["guard"]
    assert guard["base_model"] == "smol-hf" and guard["result_model"] == result["quantized_model"]
    checks = {c["task"]: c for c in guard["tasks"]}
    assert set(checks) == {"sample_text"}
    assert checks["sample_text"]["base"] > 1 and not checks["sample_text"]["worse"], checks
    assert guard["warning"] is None
    assert f"forgetting guard: smol-hf (base) → {result['quantized_model']}" in out.stdout
    assert "  sample_text token_perplexity: " in out.stdout and "✓ kept" in out.stdout
    board = json.loads(
        subprocess.run(
            [internlocal_bin, "eval", "results", "--json"], env=cli_env, capture_output=True, text=True, check=True
        ).stdout
    )
    row = next(r for r in board["rows"] if r["task"] == "sample_text")
    assert {"smol-hf", result["quantized_model"]} <= set(row["scores"])
    assert board["lineage"][result["quantized_model"]] == "finetune of smol-hf"


@pytest.mark.chaos  # fault injection, after `make test` (make test-long): the suite's time budget
@pytest.mark.timeout(900)
def test_kill_9_resume_continues_the_loss_curve_and_a_full_disk_keeps_the_last_checkpoint(tmp_path, hf_model_dir):
    # LoRA dropout draws from torch's RNG every step: the resumed losses match only if the checkpoint's RNG is restored
    dropout = {"lora": {"r": 16, "alpha": 32, "dropout": 0.1, "targets": "all-linear"}}
    steady = make_run(tmp_path, hf_model_dir, "steady", max_steps=4, save_every=0, **dropout)
    (steady / "SAVE_NOW").touch()  # "save now" before the first step: a checkpoint at step 1
    proc = loop(steady)
    assert proc.wait(300) == 0, proc.stdout.read()
    reference = losses(steady)
    assert sorted(reference) == [1, 2, 3, 4] and reference[4] < reference[1]
    assert [(e["step"], e["reason"]) for e in events(steady) if e["type"] == "checkpoint"] == [(1, "save now")]
    assert (steady / "adapter" / "adapter_config.json").exists() and not (steady / "SAVE_NOW").exists()

    killed = make_run(tmp_path, hf_model_dir, "killed", max_steps=4, save_every=2, **dropout)
    proc = loop(killed)
    deadline = time.monotonic() + 300
    while not any(e["type"] == "checkpoint" and e["step"] == 2 for e in events(killed)):
        assert proc.poll() is None and time.monotonic() < deadline, (
            proc.stdout.read() if proc.poll() is not None else "timeout"
        )
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoint = killed / "checkpoints" / "step-2"
    saved = {f.name: f.stat().st_size for f in checkpoint.iterdir()}

    def small_files() -> None:  # the resumed process may write files up to 30 MB: its optimizer state (39 MB) cannot
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (30 << 20, 30 << 20))

    proc = loop(killed, "--resume", preexec=small_files)
    assert proc.wait(300) == 0, proc.stdout.read()
    resumed = losses(killed)
    assert sorted(resumed) == [1, 2, 3, 4]  # steps after the checkpoint were dropped and done again
    assert resumed == pytest.approx(reference, rel=1e-4, abs=1e-5)
    kinds = [e["type"] for e in events(killed)]
    assert "resumed" in kinds and kinds.count("done") == 1
    warning = [e["message"] for e in events(killed) if e["type"] == "warning"]
    assert warning and "checkpoint at step 4 failed" in warning[0] and "kept step-2" in warning[0]
    assert sorted(p.name for p in (killed / "checkpoints").iterdir()) == ["step-2"]
    assert {f.name: f.stat().st_size for f in checkpoint.iterdir()} == saved  # untouched


@pytest.mark.slow
@pytest.mark.distributed
def test_two_process_ddp_gives_the_single_process_loss_curve(tmp_path, hf_model_dir):
    single = make_run(tmp_path, hf_model_dir, "single", max_steps=3, packing=False, micro_batch=4)
    proc = loop(single)
    assert proc.wait(300) == 0, proc.stdout.read()
    config = json.loads((single / "config.json").read_text())
    ddp = make_run(tmp_path, hf_model_dir, "ddp", max_steps=3, packing=False, micro_batch=2, gpus=2)
    (ddp / "config.json").write_text(json.dumps({**json.loads((ddp / "config.json").read_text()), "threads": 1}))
    from internlocal.train.process import loop_command

    proc = subprocess.run(loop_command(ddp, 2, resume=False), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [start] = [e for e in events(ddp) if e["type"] == "start"]
    assert start["world_size"] == 2 and config["recipe"]["micro_batch"] == 4
    assert losses(ddp) == pytest.approx(losses(single), rel=1e-4)
    assert [e["step"] for e in events(ddp) if e["type"] == "step"] == [1, 2, 3]  # rank 0 alone writes: each step once
    accumulated = make_run(
        tmp_path, hf_model_dir, "accumulated", max_steps=3, packing=False, micro_batch=2, grad_accum=2
    )
    proc = loop(accumulated)
    assert proc.wait(300) == 0, proc.stdout.read()
    assert losses(accumulated) == pytest.approx(losses(single), rel=1e-4)  # 2 x 2 accumulated = one batch of 4


@pytest.mark.slow
@pytest.mark.distributed
def test_fsdp_full_finetune_over_two_processes_stops_resumes_and_matches_one_process(tmp_path, hf_model_dir):
    """FSDP2 (parameters, gradients and optimizer states sharded; gloo on the CPU), checkpointed with torch DCP."""
    from internlocal.train.process import loop_command

    common = {
        "method": "full",
        "max_steps": 2,
        "packing": False,
        "save_every": 0,
        "gradient_checkpointing": False,
        "lr": 5e-5,
        "sample_prompts": ["What is the capital of France?"],
    }
    # five validation examples over two ranks: one rank has a batch more than the other, which must not hang
    validation = tmp_path / "validation.jsonl"
    validation.write_text(
        "".join((recipes_dir() / "data" / "internlocal_mascot.jsonl").read_text().splitlines(True)[:5])
    )

    def with_validation(run_dir: Path, threads: int) -> None:
        config = json.loads((run_dir / "config.json").read_text())
        (run_dir / "config.json").write_text(
            json.dumps({**config, "validation_file": str(validation), "threads": threads})
        )

    single = make_run(tmp_path, hf_model_dir, "single", micro_batch=4, **common)
    with_validation(single, 2)
    proc = loop(single)
    assert proc.wait(300) == 0, proc.stdout.read()
    fsdp = make_run(tmp_path, hf_model_dir, "fsdp", micro_batch=2, gpus=2, distributed="fsdp", **common)
    with_validation(fsdp, 1)
    (fsdp / "STOP").touch()  # seen after the first step: checkpoint (every rank writes its shards) and exit
    first = subprocess.run(loop_command(fsdp, 2, resume=False), capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-2000:]
    stopped = [e["step"] for e in events(fsdp) if e["type"] == "stopped"]
    assert stopped == [1] and (fsdp / "checkpoints" / "step-1" / "sharded").is_dir()
    second = subprocess.run(loop_command(fsdp, 2, resume=True), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-2000:]
    assert losses(fsdp) == pytest.approx(losses(single), rel=1e-4) and sorted(losses(fsdp)) == [1, 2]
    assert all(e["grad_norm"] > 0 for e in events(fsdp) if e["type"] == "step")
    assert (fsdp / "model" / "model.safetensors").exists()  # the full model, gathered on rank 0
    # validation over both ranks (uneven halves) gives the single-process loss; every rank generated the sample
    [alone], [sharded] = ([e for e in events(d) if e["type"] == "eval"] for d in (single, fsdp))
    assert sharded["val_tokens"] == alone["val_tokens"] > 0
    assert sharded["val_loss"] == pytest.approx(alone["val_loss"], rel=1e-3)
    assert sharded["samples"] == alone["samples"] and "Paris" in alone["samples"][0]["answer"]


def test_packed_rows_keep_examples_apart(hf_model_dir):
    """A packed row gives every example the logits it gets alone (transformers' own SDPA path did not: 26 apart)."""
    import torch
    from transformers import AutoModelForCausalLM

    from internlocal.train.attention import register
    from internlocal.train.packing import make_batch

    model = AutoModelForCausalLM.from_pretrained(
        hf_model_dir, dtype=torch.float32, attn_implementation=register()
    ).eval()
    generator = torch.Generator().manual_seed(0)
    examples = [torch.randint(10, 40000, (n,), generator=generator).tolist() for n in (100, 37, 250, 64)]
    batch = make_batch([(e, e) for e in examples], [[0, 1, 2], [3]], pad_id=2, packing=True)
    with torch.no_grad():
        packed = model(input_ids=batch.input_ids, position_ids=batch.position_ids).logits
        alone = [model(input_ids=torch.tensor([e])).logits[0] for e in examples]
    assert torch.allclose(packed[0, :387], torch.cat(alone[:3]), atol=1e-3)
    assert torch.allclose(packed[1, :64], alone[3], atol=1e-3)
    assert batch.attention_mask is None and batch.real_tokens == 451


def test_data_with_nothing_to_train_is_a_clear_error(tmp_path, hf_model_dir):
    """seq_len 16 cuts every example before its answer: the loop says so instead of training on nothing."""
    run_dir = make_run(tmp_path, hf_model_dir, "empty", seq_len=16)
    proc = loop(run_dir)
    assert proc.wait(300) == 2
    errors = [e["message"] for e in events(run_dir) if e["type"] == "error"]
    assert errors and "No training example has a token to train on" in errors[0] and "seq_len=16" in errors[0]
    assert not (run_dir / "adapter").exists()


def test_resume_right_after_a_stop_waits_for_the_job_to_wind_down(services, tmp_path):
    """The run reads `stopped` a moment before its job ends; a resume in that moment must not be refused."""
    from internlocal.catalog.schema import TrainRun
    from internlocal.train.control import resume_run
    from tests import jobs_for_tests

    run = services.catalog.add_train_run(
        TrainRun(name="r", recipe="x", base_model="m", run_dir=str(tmp_path), status="running")
    )
    job = services.jobs.submit(
        jobs_for_tests.stops_slowly,
        {"catalog_path": str(services.settings.catalog_path), "run_id": run.id, "wind_down_s": 1.5},
        kind="train.run",
        title="t",
        in_thread=True,
    )
    services.catalog.update_train_run(run.id, job_id=job.id)
    with pytest.raises(UserError, match="still running"):  # no waiting allowed: a job still going is refused
        resume_run(services.jobs, services.catalog, services.catalog.get_train_run(run.id), settle_s=0)
    deadline = time.monotonic() + 10
    while services.catalog.get_train_run(run.id).status != "stopped" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert services.catalog.get_job(job.id).status == "running"  # the window the TUI's `r` fell into
    resume_run(services.jobs, services.catalog, services.catalog.get_train_run(run.id))
    done = services.jobs.wait(job.id, timeout=20)
    assert (done.status, done.result) == ("succeeded", {"resumed": True})


def test_a_merge_that_changes_nothing_is_refused_and_saves_nothing(tmp_path, hf_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from internlocal.train.merge import merge_adapter

    # a fresh LoRA adapter has B = 0: applied or merged, it changes no weight
    untrained = get_peft_model(
        AutoModelForCausalLM.from_pretrained(hf_model_dir), LoraConfig(r=4, target_modules="all-linear")
    )
    untrained.save_pretrained(tmp_path / "adapter")
    AutoTokenizer.from_pretrained(hf_model_dir).save_pretrained(tmp_path / "adapter")
    with pytest.raises(UserError, match="exactly like the base"):
        merge_adapter(hf_model_dir, tmp_path / "adapter", tmp_path / "merged", "What is the capital of France?")
    assert not (tmp_path / "merged").exists()


def test_a_merge_too_big_for_memory_is_refused_before_loading(tmp_path):
    from internlocal.train.merge import check_merge_fits

    base = tmp_path / "huge"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"torch_dtype": "bfloat16"}))
    with (base / "model.safetensors").open("wb") as fh:  # a sparse 1 TiB file: its size is all the check reads
        fh.truncate(1 << 40)
    with pytest.raises(UserError, match=r"Merging needs about 2355\.2 GiB of memory .* set export\.merge=false"):
        check_merge_fits(base, tmp_path / "out" / "merged")


def test_the_gpu_qlora_scripts_run_at_a_tiny_shape_on_the_cpu(tmp_path):
    """benchmarks/gpu/ is run only when a GPU machine is lent for a few minutes: its scripts must not fail there
    for a reason a CPU finds (the baseline makes the random model, ours writes a typed run config for the loop)."""
    import math

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, QLORA_MODEL_DIR=str(tmp_path / "rand-tiny"))
    baseline = subprocess.run(
        [sys.executable, "benchmarks/gpu/qlora_baseline.py", "tiny", "64", "1"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert baseline.returncode == 0, baseline.stdout[-2000:] + baseline.stderr[-2000:]
    ours = subprocess.run(
        [sys.executable, "benchmarks/gpu/qlora_ours.py", "tiny", "64", "3"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert ours.returncode == 0, ours.stdout[-2000:] + ours.stderr[-2000:]
    result = json.loads(ours.stdout.strip().splitlines()[-1])
    assert (result["tool"], result["shape"], result["seq"], result["device"]) == ("internlocal", "tiny", 64, "cpu")
    assert result["tokens_per_s"] > 0 and result["peak_alloc_gib"] > 0 and math.isfinite(result["final_loss"])


def test_a_run_saves_its_recipe_as_the_file_plus_overrides_and_runs_saved_before_still_load(services):
    """The saved recipe is the file plus the overrides, nothing filled in or rewritten; --gpus travels as an int
    from the front end to the plan; a config.json written before RunConfig (the whole validated recipe, with the
    hardware a validator used to rewrite) still loads."""
    import yaml

    from internlocal.services.training import plan
    from internlocal.train.recipe import recipe_path
    from internlocal.train.run_config import RunConfig, saved_recipe

    name, recipe = load_recipe("internlm2_5-1_8b_qlora_gpu8", {"lr": 1e-4, "lora": {"r": 8}}, gpus=2)
    raw = yaml.safe_load(recipe_path(name).read_text(encoding="utf-8"))
    expected = {**raw, "lr": 1e-4, "lora": {**raw.get("lora", {}), "r": 8}, "gpus": 2}
    assert saved_recipe(recipe) == json.loads(json.dumps(expected))  # the file + overrides, as JSON keeps them
    assert "hardware" not in expected or expected["hardware"] == recipe.hardware == "gpu"
    planned = plan(services, name, {"lr": 1e-4}, gpus=2)
    assert planned.recipe.gpus == 2 and isinstance(planned.recipe.gpus, int) and planned.recipe.on_gpu

    legacy = {
        "recipe": {**recipe.model_dump(), "hardware": "multi-gpu"},
        "recipe_name": name,
        "model_path": "/models/base",
        "train_file": "/data/train.jsonl",
        "validation_file": None,
        "threads": 2,
        "estimate": {"total_bytes": 1},
    }
    config = RunConfig.model_validate(legacy)
    assert (config.recipe.gpus, config.recipe.hardware, config.recipe.lora.r) == (2, "multi-gpu", 8)
    assert RunConfig.model_validate(json.loads(json.dumps(config.as_json()))) == config
