"""Job: evaluate one catalog model on tasks; results and per-item answers go to the catalog."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from internlocal.catalog import open_catalog
from internlocal.catalog.schema import EvalItem, EvalRun
from internlocal.config import load_settings
from internlocal.engines.loader import choose_engine, load_engine
from internlocal.evals.runner import RequestCache, evaluate
from internlocal.evals.tasks import get_task
from internlocal.jobs.context import JobContext


def run_eval(ctx: JobContext, model: str, tasks: list[str], limit: int | None = None, seed: int = 1234) -> dict[str, Any]:
    settings = load_settings()
    catalog = open_catalog(settings)
    engine = None
    try:
        row = catalog.get_model(model)
        loaded = [get_task(t, settings.home) for t in tasks]  # all task files checked before the model loads
        engine_name = choose_engine(row, settings)
        engine = load_engine(row, settings)
        namespace = json.dumps([row.sha256 or row.path, engine_name, engine.context_length, row.quantization])
        cache = RequestCache(catalog, namespace)
        template_hash = hashlib.sha256((row.chat_template or "").encode()).hexdigest()[:16] if row.chat_template else None
        summary = {}
        for number, task in enumerate(loaded):
            def progress(done: int, total: int, task=task, number=number) -> None:
                ctx.progress(number + (done / total if total else 1), len(loaded), unit="tasks",
                             message=f"{task.name} {done}/{total}")

            outcome = evaluate(engine, task, cache, limit=limit, progress=progress, check_cancelled=ctx.check_cancelled,
                               seed=seed)
            run = catalog.add_eval_run(EvalRun(
                model_name=row.name, model_sha256=row.sha256, quantization=row.quantization, engine=engine_name,
                task=task.name, task_version=task.version, prompt_hash=task.prompt_hash(),
                chat_template_hash=template_hash, n_items=len(outcome.items), n_skipped=outcome.skipped,
                metrics_json=json.dumps(outcome.metrics), stderr_json=json.dumps(outcome.stderr),
                config_json=json.dumps({"limit": limit, "seed": seed, "num_fewshot": task.num_fewshot,
                                        "requests": outcome.requests, "cached": outcome.cached}),
                job_id=ctx.job_id,
            ), [EvalItem(idx=it["idx"], prompt=it["prompt"], target=it["target"], response=it["response"],
                         scores_json=json.dumps(it["scores"], ensure_ascii=False)) for it in outcome.items])
            catalog.add_lineage(("model", row.id), ("eval_run", run.id), "evaluate", {"task": task.name})  # type: ignore[arg-type]
            ctx.log(f"{task.name}: {outcome.metrics} ({outcome.skipped} skipped, {outcome.cached}/{outcome.requests} cached)")
            summary[task.name] = {"run": run.id, **outcome.metrics, "skipped": outcome.skipped}
        ctx.progress(len(loaded), len(loaded), unit="tasks", message="done")
        return {"model": row.name, "tasks": summary}
    finally:
        if engine is not None:
            engine.close()
        catalog.close()
