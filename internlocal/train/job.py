"""The finetuning job: recipe → base model and dataset ready → training process → merged, exported, registered.

The training itself runs in its own process (``python -m internlocal.train.loop RUN_DIR``, or
``torchrun`` for several GPUs); this job prepares the run, follows ``metrics.jsonl`` into job
progress, turns a cancel into a checkpoint-and-stop, and after a finished run merges the adapter
(checked), converts to GGUF, quantizes and registers every result with its lineage, so the new
model shows up in the Chat model picker. A resumed job continues its run from the newest checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from internlocal.catalog import open_catalog
from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Model, TrainRun
from internlocal.config import Settings, load_settings
from internlocal.errors import NotEnoughMemory, UserError
from internlocal.jobs.context import JobCancelled, JobContext
from internlocal.train.memory import GIB, Estimate, Shape, estimate, fp32_master_weights
from internlocal.train.recipe import Recipe, dataset_file, load_recipe, recipes_dir

STOP_GRACE_S = 120  # how long a cancelled run may take to write its checkpoint


@dataclass
class Plan:
    name: str
    recipe: Recipe
    base: Model | None  # None: not in the catalog yet (pulled when the run starts)
    shape: Shape | None
    estimate: Estimate | None
    available_bytes: int | None
    device: str
    notes: list[str] = field(default_factory=list)
    visible_gpus: int | None = None  # CUDA devices this process sees (None: not measured, or a cpu recipe)

    @property
    def fits(self) -> bool | None:
        if self.estimate is None or self.available_bytes is None:
            return None
        return self.estimate.total <= self.available_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "recipe": self.name,
            "config": self.recipe.model_dump(),
            "base_model": self.base.name if self.base else None,
            "estimate": self.estimate.as_dict() if self.estimate else None,
            "available_bytes": self.available_bytes,
            "device": self.device,
            "fits": self.fits,
            "notes": self.notes,
            "visible_gpus": self.visible_gpus,
        }


def free_memory(device: str) -> tuple[int | None, int | None]:
    """(free RAM or the free memory of the first GPU, how many GPUs are visible: None on the CPU); torch is
    imported only for a GPU recipe."""
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available), None
    from internlocal.doctor import gpus

    found = gpus()
    return (found[0]["free_bytes"] if found else None), len(found)


def dataset_name(spec: str) -> str:
    """The catalog name a recipe's dataset is imported under: an ``hf:``/``modelscope:`` repository's name, else
    the file's stem."""
    if spec.startswith(("hf:", "modelscope:", "ms:")):
        from internlocal.hub.sources import parse_repo_spec

        return parse_repo_spec(spec.split(":", 1)[1])[0].split("/")[1].lower().replace("_", "-")
    return Path(spec).stem.lower().replace("_", "-")


def recipe_dataset(catalog: Catalog, recipe: Recipe):
    """The catalog dataset a chat recipe trains on, once imported (named as is, or under its import name)."""
    if not recipe.dataset:
        return None
    return catalog.find_dataset(recipe.dataset) or catalog.find_dataset(dataset_name(recipe.dataset))


def _shape_of(catalog: Catalog, model: Model | None, recipe: Recipe) -> Shape | None:
    if recipe.shape is not None:
        return Shape(**vars(recipe.shape))  # a copy: the estimate may adjust it
    if recipe.init == "scratch" and recipe.architecture is not None:
        a = recipe.architecture
        vocab = (
            49152
            if model is None
            else (
                Shape.from_hf_config(json.loads((Path(model.path) / "config.json").read_text())).vocab
                if model.format == "hf" and (Path(model.path) / "config.json").exists()
                else (model.metadata_dict.get("vocab_size") or 49152)
            )
        )
        shape = Shape(
            parameters=0,
            hidden=a.hidden,
            layers=a.layers,
            intermediate=a.intermediate,
            heads=a.heads,
            kv_heads=a.kv_heads or a.heads,
            vocab=vocab,
            tied_embeddings=a.tie_embeddings,
        )
        shape.parameters = shape.linear_parameters + shape.embedding_parameters
        return shape
    if model is None:
        return None
    if model.format == "hf":
        config = Path(model.path) / "config.json"
        if config.exists():
            shape = Shape.from_hf_config(json.loads(config.read_text()))
            shape.parameters = model.parameters or shape.parameters
            return shape
    if model.format == "gguf":
        from internlocal.hub.inspect import read_gguf

        info = read_gguf(Path(model.path))
        return Shape.from_gguf(info.metadata, info.parameters)
    return None


def plan_run(
    settings: Settings,
    catalog: Catalog,
    recipe_name: str,
    overrides: dict[str, Any] | None = None,
    *,
    measure_free: bool = True,
) -> Plan:
    name, recipe = load_recipe(recipe_name, overrides)
    base = catalog.find_model(recipe.model)
    shape = _shape_of(catalog, base, recipe)
    device = "cpu" if recipe.hardware == "cpu" else "cuda"
    notes = []
    est = None
    if shape is not None:
        # fp32 on the CPU; on a GPU bf16/fp16 weights, or fp32 master weights under autocast (full, pretraining)
        master = fp32_master_weights(recipe.method, recipe.precision, device == "cuda")
        dtype_bytes = 4 if (device == "cpu" and recipe.precision in ("auto", "fp32")) or master else 2
        activation_bytes = 2 if master else dtype_bytes
        dataset = recipe_dataset(catalog, recipe)
        stats = dataset.stats if dataset is not None else {}
        trained_fraction = stats["tokens_trained"] / stats["tokens_total"] if stats.get("tokens_total") else 1.0
        est = estimate(
            shape,
            method="full" if recipe.method == "pretrain" else recipe.method,
            seq_len=recipe.seq_len,
            micro_batch=recipe.micro_batch,
            gradient_checkpointing=recipe.gradient_checkpointing,
            optimizer=recipe.optimizer,
            dtype_bytes=dtype_bytes,
            lora_r=recipe.lora.r,
            lora_targets=recipe.lora.targets,
            device=device,
            trained_fraction=trained_fraction,
            activation_bytes=activation_bytes,
            shards=recipe.gpus if recipe.distributed == "fsdp" else 1,
        )
    else:
        notes.append(f"{recipe.model} is not in the catalog and the recipe gives no shape: no memory estimate")
    if base is None:
        notes.append(f"{recipe.model} will be pulled first")
    available, visible = free_memory(device) if measure_free else (None, None)
    if device == "cuda" and available is None and measure_free:
        notes.append("no CUDA GPU is visible: this recipe cannot run here")
    elif visible is not None and recipe.gpus > visible:
        notes.append(f"gpus={recipe.gpus} but {visible} CUDA GPU(s) are visible: this recipe cannot run here")
    return Plan(name, recipe, base, shape, est, available, device, notes, visible)


def refuse_if_too_big(plan: Plan) -> None:
    if plan.device == "cuda" and plan.available_bytes is None:
        raise UserError(
            f"Recipe {plan.name} needs a CUDA GPU (hardware: {plan.recipe.hardware}) and none is visible; "
            "pick a cpu recipe."
        )
    if plan.device == "cuda" and plan.visible_gpus is not None and plan.recipe.gpus > plan.visible_gpus:
        raise UserError(
            f"Recipe {plan.name} asks for gpus={plan.recipe.gpus} but only {plan.visible_gpus} CUDA GPU(s) "
            f"are visible; run it with gpus={plan.visible_gpus} (--gpus {plan.visible_gpus})."
        )
    if plan.fits is False:
        assert plan.estimate is not None and plan.available_bytes is not None
        r = plan.recipe
        knobs = []
        if not r.gradient_checkpointing:
            knobs.append("gradient_checkpointing=true")
        if r.micro_batch > 1:
            knobs.append(f"micro_batch={max(1, r.micro_batch // 2)} grad_accum={r.grad_accum * 2}")
        knobs.append(f"seq_len={max(64, r.seq_len // 2)}")
        if r.method != "qlora":
            knobs.append("method=qlora")
        raise NotEnoughMemory(
            f"Recipe {plan.name} needs about {plan.estimate.total / GIB:.2f} GiB but {plan.available_bytes / GIB:.2f} GiB "
            f"is free:\n{plan.estimate.table()}\nTry: {', or '.join(knobs)}."
        )


# -- preparing the inputs ---------------------------------------------------------------------------


def hf_base(ctx: JobContext, catalog: Catalog, model: Model) -> Model:
    """The base as a Hugging Face folder: itself, an earlier conversion, or a new one from the GGUF."""
    if model.format == "hf":
        return model
    if model.format != "gguf":
        raise UserError(f"{model.name} is a {model.format} model; finetuning needs a GGUF or Hugging Face model.")
    for edge in catalog.children(("model", model.id)):  # type: ignore[arg-type]
        if edge.operation == "convert.gguf_to_hf" and edge.child_type == "model":
            child = catalog.find_model(edge.child_id)
            if child is not None and Path(child.path).exists():
                return child
    from internlocal.hub.convert import gguf_to_hf

    ctx.log(f"converting {model.name} to a Hugging Face folder for training (once)")
    small = (model.parameters or 0) < 2_000_000_000
    result = gguf_to_hf(ctx, model.name, dtype="float32" if small else "bfloat16")
    return catalog.get_model(result["model"])


def _dataset(ctx: JobContext, settings: Settings, catalog: Catalog, recipe: Recipe, base_hf: Model):
    found = catalog.find_dataset(recipe.dataset)
    if found is not None:
        return found
    from internlocal.data.library import import_dataset, load_tokenizer

    if recipe.dataset.startswith(("hf:", "modelscope:", "ms:")):  # a dataset repository: download it once
        from internlocal.hub.fetch import fetch_dataset

        name = dataset_name(recipe.dataset)
        existing = catalog.find_dataset(name)
        if existing is not None:
            return existing
        ctx.log(f"downloading {recipe.dataset}")
        file = settings.home / "downloads" / name
        fetch_dataset(settings.store_dir, file, recipe.dataset, check_cancelled=ctx.check_cancelled)
        return import_dataset(
            catalog,
            settings.home,
            file,
            name=name,
            form=recipe.dataset_form,
            validation=recipe.validation,
            seed=recipe.seed,
            tokenizer=load_tokenizer(catalog, base_hf, trust_remote_code=recipe.trust_remote_code),
            tokenizer_name=base_hf.name,
        )
    file = dataset_file(recipe)
    if file is None:
        raise UserError(
            f"The recipe's dataset {recipe.dataset!r} is neither a catalog dataset nor a file; "
            "import one with `internlocal data import FILE --name NAME`."
        )
    from internlocal.hub.files import sha256_file

    name = dataset_name(str(file))
    existing = catalog.find_dataset(name)
    digest = sha256_file(file)
    if existing is not None and existing.sha256 == digest:
        return existing
    if existing is not None:  # the file changed since it was imported: keep both, the runs name which one they used
        name = f"{name}-{digest[:8]}"
        if catalog.find_dataset(name) is not None:
            return catalog.get_dataset(name)
    ctx.log(f"importing {file.name} as dataset {name}")
    return import_dataset(
        catalog,
        settings.home,
        file,
        name=name,
        form=recipe.dataset_form,
        validation=recipe.validation,
        seed=recipe.seed,
        tokenizer=load_tokenizer(catalog, base_hf, trust_remote_code=recipe.trust_remote_code),
        tokenizer_name=base_hf.name,
    )


def corpus_name(source: str, tokenizer_model: str, seq_len: int) -> str:
    stem = (
        Path(source.split(":", 1)[-1].split("@")[0].rstrip("/")).name.lower().replace("_", "-").replace(".", "-")
        or "corpus"
    )
    return f"{stem}-{tokenizer_model.split('-')[0]}-{seq_len}"


def prepare_corpus_dataset(
    ctx: JobContext | None,
    settings: Settings,
    catalog: Catalog,
    source: str,
    tokenizer_model: Model,
    seq_len: int,
    validation: float = 0.05,
    name: str | None = None,
    trust_remote_code: bool = False,
):
    """A corpus prepared into token shards for ``tokenizer_model`` (resumed if a preparation was interrupted),
    recorded in the catalog as a dataset of form ``tokens`` with its statistics."""
    from internlocal.catalog.schema import Dataset
    from internlocal.data.corpus import prepare_corpus
    from internlocal.data.library import dataset_dir, load_tokenizer

    name = name or corpus_name(source, tokenizer_model.name, seq_len)
    found = catalog.find_dataset(name)
    if found is not None:
        return found
    if source.startswith(("hf:", "modelscope:", "ms:")):
        from internlocal.hub.fetch import fetch_dataset

        path = settings.home / "downloads" / name
        if ctx is not None:
            ctx.log(f"downloading {source}")
        fetch_dataset(settings.store_dir, path, source, check_cancelled=ctx.check_cancelled if ctx else None)
    else:
        path = Path(source).expanduser()
        if not path.is_absolute() and not path.exists():
            path = recipes_dir() / path
    out = dataset_dir(settings.home, name)
    tokenizer_dir = out.with_name(out.name + ".tokenizer")
    if not tokenizer_dir.exists():
        load_tokenizer(catalog, tokenizer_model, trust_remote_code=trust_remote_code).save_pretrained(
            str(tokenizer_dir)
        )
    if ctx is not None:
        ctx.log(f"preparing {path} into {seq_len}-token sequences with {tokenizer_model.name}'s tokenizer")
    index = prepare_corpus(
        path,
        tokenizer_dir,
        out,
        seq_len=seq_len,
        validation=validation,
        workers=settings.threads,
        progress=(lambda n, where: ctx.progress(n, None, unit="documents", message=where)) if ctx else None,
        should_stop=(lambda: ctx.cancelled) if ctx else None,
        trust_remote_code=trust_remote_code,
    )
    shutil.rmtree(tokenizer_dir, ignore_errors=True)
    stats = {
        **index.stats,
        "seq_len": seq_len,
        "tokenizer": tokenizer_model.name,
        "tokenizer_fingerprint": index.tokenizer,
        "dtype": index.dtype,
        "source": source,
    }
    return catalog.add_dataset(
        Dataset(
            name=name,
            form="tokens",
            path=str(out),
            source=str(path),
            sha256=None,
            train_rows=stats["train_sequences"],
            validation_rows=stats["validation_sequences"],
            stats_json=json.dumps(stats),
        )
    )


def prepare_corpus_job(
    ctx: JobContext,
    source: str,
    model: str,
    seq_len: int,
    validation: float,
    name: str | None,
    trust_remote_code: bool = False,
) -> dict[str, Any]:
    """``pretrain prepare`` as a job: progress in documents, cancellable, resumable (written shards stay)."""
    settings = load_settings()
    catalog = open_catalog(settings)
    try:
        dataset = prepare_corpus_dataset(
            ctx,
            settings,
            catalog,
            source,
            hf_base(ctx, catalog, catalog.get_model(model)),
            seq_len,
            validation,
            name,
            trust_remote_code,
        )
        return {"dataset": dataset.name, "path": dataset.path, **dataset.stats}
    finally:
        catalog.close()


def _corpus(ctx: JobContext, settings: Settings, catalog: Catalog, recipe: Recipe, base_hf: Model):
    found = catalog.find_dataset(recipe.corpus)  # type: ignore[arg-type]
    if found is not None:
        if found.form != "tokens":
            raise UserError(f"Dataset {found.name} is a {found.form} dataset, not a prepared pretraining corpus.")
        return found
    return prepare_corpus_dataset(
        ctx,
        settings,
        catalog,
        recipe.corpus,
        base_hf,
        recipe.seq_len,  # type: ignore[arg-type]
        validation=recipe.validation if recipe.validation < 1 else 0.05,
        trust_remote_code=recipe.trust_remote_code,
    )


def _run_name(catalog: Catalog, recipe_name: str) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    name = f"{recipe_name}-{stamp}"
    n = 2
    existing = {r.name for r in catalog.list_train_runs()}
    while name in existing:
        name, n = f"{recipe_name}-{stamp}-{n}", n + 1
    return name


# -- the job ----------------------------------------------------------------------------------------


def train(
    ctx: JobContext, recipe: str, overrides: dict[str, Any] | None = None, name: str | None = None
) -> dict[str, Any]:
    settings = load_settings()
    catalog = open_catalog(settings)
    try:
        run_id = ctx.state.get("run_id")
        if run_id is None:
            plan = plan_run(settings, catalog, recipe, overrides)
            r = plan.recipe
            base = plan.base
            if base is None:
                from internlocal.hub.pull import pull_model

                ctx.log(f"pulling {r.model}")
                base = catalog.get_model(pull_model(ctx, r.model)["model"])
                plan = plan_run(settings, catalog, recipe, overrides)
            refuse_if_too_big(plan)
            base_hf = hf_base(ctx, catalog, base)
            dataset = (
                _corpus(ctx, settings, catalog, r, base_hf)
                if r.method == "pretrain"
                else _dataset(ctx, settings, catalog, r, base_hf)
            )
            run_name = name or _run_name(catalog, plan.name)
            run_dir = settings.home / "runs" / run_name
            run_dir.mkdir(parents=True, exist_ok=False)
            config = {
                "recipe": r.model_dump(),
                "recipe_name": plan.name,
                "model_path": str(Path(base_hf.path).resolve()),
                "base_model": base_hf.name,
                "dataset": dataset.name,
                "train_file": str(Path(dataset.path) / "train.jsonl"),
                "validation_file": str(Path(dataset.path) / "validation.jsonl"),
                "corpus_dir": dataset.path if r.method == "pretrain" else None,
                "threads": settings.threads,
                "estimate": plan.estimate.as_dict() if plan.estimate else None,
            }
            (run_dir / "config.json").write_text(json.dumps(config, indent=1))
            run = catalog.add_train_run(
                TrainRun(
                    name=run_name,
                    recipe=plan.name,
                    config_json=json.dumps(config),
                    base_model=base_hf.name,
                    dataset=dataset.name,
                    run_dir=str(run_dir),
                    job_id=ctx.job_id,
                    status="created",
                    estimate_json=json.dumps(config["estimate"] or {}),
                )
            )
            ctx.save_state({"run_id": run.id, "stage": "train"})
            resume = False
        else:
            run = catalog.get_train_run(run_id)
            run_dir = Path(run.run_dir)
            config = run.config
            r = Recipe.model_validate(config["recipe"])
            resume = True
            catalog.update_train_run(run.id, job_id=ctx.job_id)  # type: ignore[arg-type]
        assert run.id is not None
        if ctx.state.get("stage", "train") == "train":
            result = _train_process(ctx, catalog, run, run_dir, r, resume)
            if result["status"] != "finished":
                catalog.update_train_run(run.id, status="stopped", summary_json=json.dumps(result))
                raise JobCancelled()
            ctx.save_state({**ctx.state, "stage": "export", "result": result})
        result = ctx.state["result"]
        outputs = _export(ctx, catalog, run, run_dir, r, config)
        summary = {**result, **outputs, "estimated_peak": (config.get("estimate") or {}).get("total_bytes")}
        catalog.update_train_run(run.id, status="finished", summary_json=json.dumps(summary))
        return {"run": run.name, **summary}
    except UserError as exc:
        run_id = ctx.state.get("run_id")
        if run_id is not None:
            catalog.update_train_run(run_id, status="failed", summary_json=json.dumps({"error": str(exc)}))
        raise
    finally:
        catalog.close()


def loop_command(run_dir: Path, gpus: int, resume: bool, nodes: int = 1, rdzv_endpoint: str | None = None) -> list[str]:
    if nodes > 1:  # every node runs this with the same endpoint; torchrun's c10d rendezvous assigns the ranks
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={nodes}",
            f"--nproc_per_node={gpus}",
            "--rdzv_backend=c10d",
            f"--rdzv_endpoint={rdzv_endpoint}",
            f"--rdzv_id={run_dir.name}",
            "-m",
            "internlocal.train.loop",
            str(run_dir),
        ]
    elif gpus > 1:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={gpus}",
            "-m",
            "internlocal.train.loop",
            str(run_dir),
        ]
    else:
        command = [sys.executable, "-m", "internlocal.train.loop", str(run_dir)]
    return command + (["--resume"] if resume else [])


class MetricsTail:
    """Follows a run's metrics.jsonl: complete lines since the last read. A resumed run rewrites the file
    (steps after its checkpoint are dropped), so a new file means reading again from the start."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.inode: int | None = None
        self.offset = 0

    def read(self) -> tuple[list[dict[str, Any]], bool]:
        """(new events, restarted): ``restarted`` means the file was replaced and the events start over."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return [], False
        restarted = self.inode is not None and (stat.st_ino != self.inode or stat.st_size < self.offset)
        if restarted or self.inode is None:
            self.inode, self.offset = stat.st_ino, 0
        with self.path.open("rb") as fh:
            fh.seek(self.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        events = [json.loads(line) for line in data[:end].decode("utf-8").splitlines() if line.strip()]
        return events, restarted


def _train_process(
    ctx: JobContext, catalog: Catalog, run: TrainRun, run_dir: Path, recipe: Recipe, resume: bool
) -> dict[str, Any]:
    (run_dir / "STOP").unlink(missing_ok=True)
    (run_dir / "result.json").unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1", TOKENIZERS_PARALLELISM="false")
    with (run_dir / "train.log").open("ab") as log:
        proc = subprocess.Popen(
            loop_command(run_dir, recipe.gpus, resume, recipe.nodes, recipe.rdzv_endpoint),
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    (run_dir / "pid").write_text(str(proc.pid))
    catalog.update_train_run(run.id, status="running")  # type: ignore[arg-type]
    tail = MetricsTail(run_dir)
    stop_sent = None
    error = None
    last_event = time.monotonic()
    stalled = False
    while True:
        code = proc.poll()
        events, _ = tail.read()
        if events:
            last_event = time.monotonic()
            if stalled:
                stalled = False
                ctx.log("metrics arrive again")
        elif code is None and not stalled and time.monotonic() - last_event > recipe.watchdog_s:
            stalled = True  # the watchdog: a hung collective or a dead node looks like silence
            ctx.log(
                f"no metrics for {recipe.watchdog_s:.0f} s: the run may be stuck (a hung process or a lost rank); "
                f"`internlocal train stop {run.name}` checkpoints it if it still can",
                level="warning",
            )
            catalog.update_train_run(run.id, summary_json=json.dumps({"stalled_since": time.time()}))  # type: ignore[arg-type]
        for event in events:
            kind = event.get("type")
            if kind == "step":
                ctx.progress(
                    event["step"],
                    event["total_steps"],
                    unit="steps",
                    message=f"loss {event['loss']:.4f} · {event['tokens_per_s']:.0f} tok/s · "
                    f"peak {event['peak_memory'] / GIB:.2f} GiB",
                )
            elif kind == "eval":
                ctx.log(
                    f"step {event['step']}: validation loss {event['val_loss']}"
                    + "".join(f"\n  {s['prompt']} → {s['answer']}" for s in event.get("samples", []))
                )
            elif kind in ("checkpoint", "warning", "resumed", "stopped"):
                ctx.log(
                    f"{kind}: " + ", ".join(f"{k}={v}" for k, v in event.items() if k not in ("type", "t")),
                    level="warning" if kind == "warning" else "info",
                )
            elif kind == "error":
                error = event["message"]
        if code is not None:
            break
        if ctx.cancelled and stop_sent is None:
            (run_dir / "STOP").touch()  # checkpoint and exit at the next step
            stop_sent = time.monotonic()
        if stop_sent is not None and time.monotonic() - stop_sent > STOP_GRACE_S:
            proc.kill()
        time.sleep(0.5)
    result_file = run_dir / "result.json"
    if code == 0 and result_file.exists():
        return json.loads(result_file.read_text())
    if error:
        raise UserError(error)
    raise UserError(describe_failure(run_dir, code, run.name))


_FAILED_RANK = re.compile(r"rank\s*:\s*(\d+)\s*\(local_rank:\s*(\d+)\)\s*exitcode\s*:\s*(-?\d+)", re.S)


def describe_failure(run_dir: Path, code: int | None, run_name: str) -> str:
    """One sentence for a training process that died: which rank (torchrun's root cause), how, and where a
    resume continues; the log's last lines only when nothing better is known."""
    log = (run_dir / "train.log").read_text(errors="replace") if (run_dir / "train.log").exists() else ""
    checkpoints = (
        sorted((run_dir / "checkpoints").glob("step-*[0-9]"), key=lambda p: int(p.name.split("-")[1]))
        if (run_dir / "checkpoints").exists()
        else []
    )
    where = f"resume continues from {checkpoints[-1].name}" if checkpoints else "resume starts it again"
    failed = _FAILED_RANK.search(log.split("Root Cause", 1)[-1])
    if failed:
        rank, _local, exitcode = (int(x) for x in failed.groups())
        how = f"was killed by signal {-exitcode}" if exitcode < 0 else f"exited with code {exitcode}"
        return (
            f"Rank {rank} of the run {how} and torchrun stopped the others ({where}: "
            f"`internlocal train resume {run_name}`)."
        )
    tail = log.strip().splitlines()[-3:]
    return (
        f"The training process ended with code {code} ({where}: `internlocal train resume {run_name}`): "
        + " | ".join(tail)
    )


def _export(
    ctx: JobContext, catalog: Catalog, run: TrainRun, run_dir: Path, recipe: Recipe, config: dict[str, Any]
) -> dict[str, Any]:
    from internlocal.hub.library import add_to_store, register, unique_name
    from internlocal.hub.store import Store

    settings = load_settings()
    store = Store(settings.store_dir)
    base = catalog.get_model(config["base_model"])
    outputs: dict[str, Any] = {}
    merged_name = ctx.state.get("merged")
    if merged_name is None:
        work = store.partial / f"train-{run.id}-merged"
        shutil.rmtree(work, ignore_errors=True)
        if recipe.method in ("full", "pretrain"):
            shutil.copytree(run_dir / "model", work)
            check = None
        elif recipe.export.merge:
            from internlocal.train.export import merge_adapter

            ctx.progress(0, 3, unit="export steps", message="merging the adapter and checking the merge")
            probe = recipe.probe or (recipe.sample_prompts[0] if recipe.sample_prompts else _first_prompt(config))
            check = merge_adapter(
                Path(config["model_path"]),
                run_dir / "adapter",
                work,
                probe,
                trust_remote_code=recipe.trust_remote_code,
                qlora=recipe.method == "qlora",
            )
            ctx.log(
                f"merge check on {probe!r}: base {check.base_answer!r} → merged {check.merged_answer!r} "
                f"(logits within {check.max_logit_diff:.2e} of base + adapter)"
            )
            outputs["merge_check"] = check.as_dict()
        else:
            return {"adapter": str(run_dir / "adapter")}
        operation = {"pretrain": "pretrain.scratch" if recipe.init == "scratch" else "pretrain.continued"}.get(
            recipe.method, "finetune"
        )
        merged_name = unique_name(catalog, run.name)
        files = [(f, f.relative_to(work).as_posix()) for f in sorted(work.rglob("*")) if f.is_file()]
        manifest, path = add_to_store(store, merged_name, f"train:{run.name}", files, move=True)
        shutil.rmtree(work, ignore_errors=True)
        merged = register(
            catalog,
            name=merged_name,
            path=path,
            storage="store",
            source=f"derived:{base.name}",
            sha256=manifest.model_sha256(),
            parent=base,
            operation=operation,
            params={
                "run": run.name,
                "recipe": run.recipe,
                "method": recipe.method,
                "dataset": run.dataset,
                **({"merge_check": check.as_dict()} if check else {}),
            },
            extra={"family": "llama" if recipe.init == "scratch" else base.family},
        )
        dataset = catalog.find_dataset(run.dataset) if run.dataset else None
        if dataset is not None:
            catalog.add_lineage(("dataset", dataset.id), ("model", merged.id), operation, {"run": run.name})  # type: ignore[arg-type]
        catalog.add_lineage(("train_run", run.id), ("model", merged.id), "produced", {})  # type: ignore[arg-type]
        ctx.save_state({**ctx.state, "merged": merged_name})
    outputs["merged_model"] = merged_name
    if recipe.export.gguf:
        from internlocal.hub.convert import hf_to_gguf, quantize_gguf

        gguf = ctx.state.get("gguf")
        if gguf is None:
            gguf = hf_to_gguf(ctx, merged_name, outtype="f16")["model"]
            ctx.save_state({**ctx.state, "gguf": gguf})
        outputs["gguf_model"] = gguf
        if recipe.export.quantize:
            quantized = ctx.state.get("quantized")
            if quantized is None:
                quantized = quantize_gguf(ctx, gguf, recipe.export.quantize)["model"]
                ctx.save_state({**ctx.state, "quantized": quantized})
            outputs["quantized_model"] = quantized
    return outputs


def _first_prompt(config: dict[str, Any]) -> str:
    for file in (config.get("validation_file"), config.get("train_file")):
        if file and Path(file).exists():
            for line in Path(file).read_text(encoding="utf-8").splitlines():
                example = json.loads(line)
                for message in example.get("messages", []):
                    if message["role"] == "user":
                        return message["content"]
    raise UserError("No probe prompt for the merge check: set probe: or sample_prompts: in the recipe.")


# -- controlling a run from outside (CLI, TUI) ------------------------------------------------------


def touch_trigger(run: TrainRun, trigger: str) -> Path:
    """``SAVE_NOW`` or ``STOP`` in the run's folder; the loop acts on it at its next step."""
    if run.status not in ("running", "created"):
        raise UserError(f"Run {run.name} is {run.status}; only a running run can be asked to save or stop.")
    path = Path(run.run_dir) / trigger
    path.touch()
    return path


def resume_run(jobs, catalog: Catalog, run: TrainRun, settle_s: float = 60.0, gpus: int | None = None):
    """Resume ``run``'s job from its newest checkpoint (on ``gpus`` processes when given: pretraining and
    FSDP checkpoints reshard). A run reads ``stopped`` a moment before its job has wound down (the job
    records the run first, then ends), so a resume right after a stop waits for that."""
    if run.job_id is None:
        raise UserError(f"Run {run.name} has no job to resume.")
    if run.status == "finished":
        raise UserError(f"Run {run.name} has finished; nothing to resume.")
    if gpus is not None and gpus != run.config["recipe"]["gpus"]:
        recipe = run.config["recipe"]
        if recipe["method"] != "pretrain" and recipe["distributed"] != "fsdp":
            raise UserError(
                f"Run {run.name}'s checkpoints hold one full copy per run ({recipe['distributed']}); "
                "only pretraining and FSDP runs resume on another number of GPUs."
            )
        if recipe["hardware"] != "cpu":
            _, visible = free_memory("cuda")
            if gpus > (visible or 0):
                raise UserError(f"Run {run.name} cannot resume on {gpus} GPUs: {visible or 0} CUDA GPU(s) are visible.")
        config = {**run.config, "recipe": {**recipe, "gpus": gpus}}
        (Path(run.run_dir) / "config.json").write_text(json.dumps(config, indent=1))
        run = catalog.update_train_run(run.id, config_json=json.dumps(config))  # type: ignore[arg-type]
    deadline = time.monotonic() + settle_s
    while True:
        job = jobs.refresh_one(catalog.get_job(run.job_id))
        if job.status not in ("queued", "running"):
            return jobs.resume(run.job_id)
        if run.status != "stopped" or time.monotonic() > deadline:
            raise UserError(f"Run {run.name} is still running (job {run.job_id}); stop it first.")
        time.sleep(0.1)
