"""Job: evaluate catalog models on tasks; results and per-item answers go to the catalog."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from internlocal.catalog.schema import EvalItem, EvalRun
from internlocal.engines.base import Capability, Engine
from internlocal.engines.loader import choose_engine, load_engine
from internlocal.evals.runner import RequestCache, evaluate
from internlocal.evals.tasks import Task, get_tasks
from internlocal.jobs.context import JobContext


def resolve_tasks(
    names: list[str], home, include_paths: list[str] | None = None, trusted: list[str] | None = None
) -> list[Task]:
    """Every task the names stand for (an lm-eval group gives its tasks), each once."""
    from pathlib import Path

    found: dict[str, Task] = {}
    for name in names:
        for task in get_tasks(
            name, home, include_paths=[Path(p) for p in include_paths or []], trusted=[Path(p) for p in trusted or []]
        ):
            found.setdefault(task.name, task)
    return list(found.values())


def run_eval(
    ctx: JobContext,
    model: str | list[str],
    tasks: list[str],
    limit: int | None = None,
    seed: int = 1234,
    circular: bool = False,
    include_paths: list[str] | None = None,
    trusted: list[str] | None = None,
) -> dict[str, Any]:
    """Evaluate one model, or several in turn (one loaded at a time), on the same tasks."""
    models = [model] if isinstance(model, str) else list(model)
    catalog, settings = ctx.catalog, ctx.settings
    rows = [catalog.get_model(m) for m in models]
    loaded = resolve_tasks(tasks, settings.home, include_paths, trusted)  # every name checked before a model loads
    results = {}
    for number, row in enumerate(rows):
        results[row.name] = evaluate_model(
            ctx,
            catalog,
            settings,
            row,
            loaded,
            limit,
            seed,
            done_before=number * len(loaded),
            total=len(rows) * len(loaded),
            circular=circular,
        )
    ctx.progress(len(rows) * len(loaded), len(rows) * len(loaded), unit="tasks", message="done")
    return {"models": results}


def evaluate_model(
    ctx: JobContext,
    catalog,
    settings,
    row,
    loaded: list,
    limit: int | None,
    seed: int,
    done_before: int,
    total: int,
    circular: bool = False,
) -> dict[str, Any]:
    """``row`` on the ``loaded`` tasks: one ``eval_run`` per task (with lineage from the model), answers from the
    request cache where it has them; {task: {run, metrics…, skipped}}. Progress counts tasks of ``total``."""
    engine_name = choose_engine(row, settings)
    namespace, template_hash = cache_namespace(row, settings, engine_name)
    cache = RequestCache(catalog, namespace)
    engine = LazyEngine(lambda: load_engine(row, settings), cache)
    try:
        summary = {}
        # a resumed job keeps the tasks it finished before it stopped (one result row per task and job)
        finished = {r.task: r for r in catalog.eval_runs(model=row.name, job_id=ctx.job_id)} if ctx.job_id else {}
        for number, task in enumerate(loaded):
            if task.name in finished:
                run = finished[task.name]
                summary[task.name] = {"run": run.id, **run.metrics, "skipped": run.n_skipped}
                continue

            def progress(done: int, n: int, task=task, number=number) -> None:
                ctx.progress(
                    done_before + number + (done / n if n else 1),
                    total,
                    unit="tasks",
                    message=f"{row.name}: {task.name} {done}/{n}",
                )

            outcome = evaluate(
                engine,
                task,
                cache,
                limit=limit,
                progress=progress,
                check_cancelled=ctx.check_cancelled,
                seed=seed,
                circular=circular,
            )
            # a limit that covers every item is a full run, comparable with one made without a limit
            effective_limit = limit if limit is not None and limit < len(task.docs) else None
            config = {
                "limit": effective_limit,
                "seed": seed,
                "num_fewshot": task.num_fewshot,
                "group": task.group,
                "requests": outcome.requests,
                "cached": outcome.cached,
                **({"circular": True} if circular else {}),
                **({"breakdown": outcome.breakdown} if outcome.breakdown else {}),
            }
            run = record_run(
                catalog,
                row,
                outcome.items,
                engine=engine_name,
                task=task.name,
                task_version=task.version,
                prompt_hash=task.prompt_hash(),
                chat_template_hash=template_hash,
                n_skipped=outcome.skipped,
                metrics_json=json.dumps(outcome.metrics),
                stderr_json=json.dumps(outcome.stderr),
                config_json=json.dumps(config, ensure_ascii=False),
                job_id=ctx.job_id,
            )
            ctx.log(
                f"{row.name} · {task.name}: {outcome.metrics} ({outcome.skipped} skipped, "
                f"{outcome.cached}/{outcome.requests} cached)"
            )
            summary[task.name] = {"run": run.id, **outcome.metrics, "skipped": outcome.skipped}
        if not engine.is_loaded:
            ctx.log(f"{row.name}: every answer came from the cache; the model was not loaded")
        return summary
    finally:
        engine.close()


def record_run(catalog, row, items: list[dict[str, Any]], **fields: Any) -> EvalRun:
    """An ``eval_run`` of the model ``row`` (``fields``: task, version, hashes, metrics, config …) with its items
    ({idx, prompt, target, response, scores}), and the lineage model → run; every evaluation job stores this way."""
    run = EvalRun(
        model_name=row.name, model_sha256=row.sha256, quantization=row.quantization, n_items=len(items), **fields
    )
    stored = catalog.add_eval_run(
        run,
        [
            EvalItem(
                idx=it["idx"],
                prompt=it["prompt"],
                target=it["target"],
                response=it["response"],
                scores_json=json.dumps(it["scores"], ensure_ascii=False),
            )
            for it in items
        ],
    )
    catalog.add_lineage(("model", row.id), ("eval_run", stored.id), "evaluate", {"task": fields["task"]})
    return stored


def cache_namespace(row, settings, engine_name: str) -> tuple[str, str | None]:
    """The request cache's namespace for a model, and its chat template's hash. Everything that changes an
    answer: the weights (a remote model's name on its server; adapters and load-time quantization), the engine,
    the requested context and the chat template. The requested context (with the model's sha256 it decides the
    engine's actual one) is known before, or without, loading the model."""
    template_hash = hashlib.sha256(row.chat_template.encode()).hexdigest()[:16] if row.chat_template else None
    meta = row.metadata_dict
    identity = [row.sha256 or row.path, meta.get("remote_model"), meta.get("adapter"), meta.get("gguf_lora")]
    identity += [meta.get("load_in"), engine_name, settings.context_length, row.quantization, template_hash]
    return json.dumps(identity), template_hash


class LazyEngine:
    """The engine, loaded on first real use.

    A re-run whose answers are all cached, or one that only scores them differently, never loads
    the model: what the runner asks first (capabilities, context length) was recorded in the
    request cache the first time the model was loaded, and token counts are cached there too.
    """

    def __init__(self, load: Callable[[], Engine], cache: RequestCache):
        self._load, self._cache = load, cache
        self._engine: Engine | None = None
        self._facts_key = cache.key(["engine"])
        facts = cache.get([self._facts_key]).get(self._facts_key)
        if facts is None:
            self.loaded()
        else:
            self.capabilities = frozenset(Capability(c) for c in facts["capabilities"])
            self.context_length = facts["context_length"]

    @property
    def is_loaded(self) -> bool:
        return self._engine is not None

    def loaded(self) -> Engine:
        if self._engine is None:
            self._engine = self._load()
            self.capabilities = self._engine.capabilities
            self.context_length = self._engine.context_length
            self._cache.put(
                {self._facts_key: {"capabilities": sorted(self.capabilities), "context_length": self.context_length}}
            )
        return self._engine

    def __getattr__(self, name: str) -> Any:  # loglikelihood, chat, complete, tokenize, …
        return getattr(self.loaded(), name)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
