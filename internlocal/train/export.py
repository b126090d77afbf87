"""After a run: its model into the catalog — merged and checked (``merge.py``) or copied, stored, registered
with lineage (base model, dataset and run → model), converted to GGUF and quantized — so it shows up in
the Chat model picker.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from internlocal.catalog.schema import TrainRun
from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.jobs.context import JobContext
from internlocal.train.run_config import RunConfig


def export_run(ctx: JobContext, run: TrainRun, config: RunConfig) -> dict[str, Any]:
    """The finished run's model in the catalog: merged (adapters) or copied (full, pretraining) into the store and
    registered with its lineage, then GGUF and the recipe's quantization. Each stage is recorded in the job's
    state, so a resumed job does not redo it."""
    from internlocal.hub.library import add_to_store, register, unique_name
    from internlocal.hub.store import Store

    catalog, recipe, run_dir = ctx.catalog, config.recipe, Path(run.run_dir)
    assert run.id is not None and config.base_model is not None
    store = Store(ctx.settings.store_dir)
    base = catalog.get_model(config.base_model)
    outputs: dict[str, Any] = {}
    merged_name = ctx.state.get("merged")
    if merged_name is None:
        work = store.partial / f"train-{run.id}-merged"
        shutil.rmtree(work, ignore_errors=True)
        if recipe.method in ("full", "pretrain"):
            shutil.copytree(run_dir / "model", work)
            check = None
        elif recipe.export.merge:
            from internlocal.train.merge import merge_adapter

            ctx.progress(0, 3, unit="export steps", message="merging the adapter and checking the merge")
            probe = recipe.probe or (recipe.sample_prompts[0] if recipe.sample_prompts else first_user_prompt(config))
            check = merge_adapter(
                Path(config.model_path),
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
        assert merged.id is not None
        if dataset is not None and dataset.id is not None:
            catalog.add_lineage(("dataset", dataset.id), ("model", merged.id), operation, {"run": run.name})
        catalog.add_lineage(("train_run", run.id), ("model", merged.id), "produced", {})
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


def first_user_prompt(config: RunConfig) -> str:
    """The merge check's probe when the recipe names none: the first user message of the run's data."""
    for file in (config.validation_file, config.train_file):
        if file and Path(file).exists():
            for line in Path(file).read_text(encoding="utf-8").splitlines():
                example = json.loads(line)
                for message in example.get("messages", []):
                    if message["role"] == "user":
                        return message["content"]
    raise UserError(_("No probe prompt for the merge check: set probe: or sample_prompts: in the recipe."))
