"""Planning a run before anything loads: the recipe resolved, its base and shape, the memory estimate against
what is free here, and the refusal (with the knobs to turn) when it cannot run.

Used by ``train list/show``, ``--dry-run``, the Train screen's fit column and, before a job is
submitted, by ``services.training``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Model
from internlocal.errors import NotEnoughMemory, UserError
from internlocal.i18n import _
from internlocal.train.adapt import Adaptation, adapt_recipe
from internlocal.train.inputs import recipe_dataset
from internlocal.train.memory import GIB, Estimate, Shape, estimate, fp32_master_weights
from internlocal.train.recipe import Recipe, load_recipe, recipe_file_value


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
    adaptation: Adaptation | None = None  # epochs and lr derived from the user's dataset (the recipe's adapt:)

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
            "adaptation": self.adaptation.as_dict() if self.adaptation else None,
        }


def free_memory(device: str) -> tuple[int | None, int | None]:
    """(free RAM or the free memory of the first GPU, how many GPUs are visible: None on the CPU); GPUs are asked
    of nvidia-smi (no CUDA context in this process)."""
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available), None
    from internlocal.doctor import gpus

    found = gpus()
    return (found[0]["free_bytes"] if found else None), len(found)


def shape_of(model: Model | None, recipe: Recipe) -> Shape | None:
    if recipe.shape is not None:
        return recipe.shape.model_copy()  # a copy: the estimate may adjust it
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
    catalog: Catalog,
    recipe_name: str,
    overrides: dict[str, Any] | None = None,
    *,
    gpus: int | None = None,
    measure_free: bool = True,
) -> Plan:
    """The recipe with ``overrides`` (and ``gpus`` processes when given) planned against this machine."""
    name, recipe = load_recipe(recipe_name, overrides, gpus=gpus)
    recipe, adaptation = adapt_recipe(catalog, recipe, recipe_file_value(recipe_name, "dataset"), overrides or {})
    base = catalog.find_model(recipe.model)
    shape = shape_of(base, recipe)
    device = recipe.device
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
            # a preference micro-batch holds each pair's two answers: twice the sequences
            micro_batch=recipe.micro_batch * (2 if recipe.objective != "sft" else 1),
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
    if recipe.objective == "dpo":
        notes.append(
            "DPO: the reference log-probabilities are computed once before the first step (one forward pass over "
            "the pairs); no reference copy of the model is kept in memory"
        )
    if base is None:
        notes.append(f"{recipe.model} will be pulled first")
    available, visible = free_memory(device) if measure_free else (None, None)
    if device == "cuda" and available is None and measure_free:
        notes.append("no CUDA GPU is visible: this recipe cannot run here")
    elif visible is not None and recipe.gpus > visible:
        notes.append(f"gpus={recipe.gpus} but {visible} CUDA GPU(s) are visible: this recipe cannot run here")
    return Plan(name, recipe, base, shape, est, available, device, notes, visible, adaptation)


def refuse_if_too_big(plan: Plan) -> None:
    if plan.device == "cuda" and plan.available_bytes is None:
        raise UserError(
            _("Recipe {name} needs a CUDA GPU (hardware: {hardware}) and none is visible; pick a cpu recipe.").format(
                name=plan.name, hardware=plan.recipe.hardware
            )
        )
    if plan.device == "cuda" and plan.visible_gpus is not None and plan.recipe.gpus > plan.visible_gpus:
        raise UserError(
            _(
                "Recipe {name} asks for gpus={gpus} but only {visible} CUDA GPU(s) "
                "are visible; run it with gpus={visible} (--gpus {visible})."
            ).format(name=plan.name, gpus=plan.recipe.gpus, visible=plan.visible_gpus)
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
            _("Recipe {name} needs about {need:.2f} GiB but {free:.2f} GiB is free:\n{table}\nTry: {knobs}.").format(
                name=plan.name,
                need=plan.estimate.total / GIB,
                free=plan.available_bytes / GIB,
                table=plan.estimate.table(),
                knobs=_(", or ").join(knobs),
            )
        )
