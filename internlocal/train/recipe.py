"""Recipes: flat YAML files in ``recipes/`` named ``<model>_<method>_<hardware>.yaml``, validated here.

The first comment line of a recipe is the command that launches it. ``key=value`` overrides
(dotted for nested keys: ``lora.r=8``) are applied before validation, so a bad override is
reported like a bad file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.resources import resource_dir
from internlocal.train.memory import Shape


def recipes_dir() -> Path:
    """The recipes shipped with the package (in a clone: the repository's ``recipes/``)."""
    return resource_dir("recipes")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoraSettings(_Strict):
    r: int = Field(16, ge=1, le=1024)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    targets: str | list[str] = "all-linear"


class ExportSettings(_Strict):
    merge: bool = True  # merge the adapter into the base (LoRA/QLoRA); full finetunes are the model already
    gguf: bool = True  # convert the merged model to GGUF
    quantize: str | None = "Q8_0"  # then quantize it (None: keep the f16 GGUF)


class GuardSettings(_Strict):
    """The forgetting guard: the base and the registered result measured on general tasks, side by side."""

    enabled: bool = True
    # built-in tasks the embedded model does well on (or any eval task by name or file)
    tasks: list[str] = Field(default_factory=lambda: ["capitals_en_qa", "sample_text"])
    max_drop: float = Field(0.10, ge=0, le=1)  # accuracy-like scores: the largest fall (absolute) before a warning
    # perplexities: the largest rise (relative) before a warning. Chat finetunes of the 135M model raise its
    # plain-text perplexity by 110-150% even when its answers are intact (docs/benchmarks.md), so the default warns
    # at a tripling: damage beyond a change of style
    max_perplexity_rise: float = Field(2.0, ge=0)
    limit: int | None = Field(None, ge=1)  # items per task (None: all)


class ReplaySettings(_Strict):
    """Replay against forgetting: general prompts the base model itself answered, mixed into the training data."""

    ratio: float = Field(0.0, ge=0, le=8)  # replay examples per training example (0: off)
    prompts: str = "data/general_prompts.jsonl"  # relative to the recipes folder, or a path
    max_tokens: int = Field(96, ge=8, le=1024)  # the base's answers are cut here


class AdaptSettings(_Strict):
    """What a recipe intends, for data the user brings: epochs and learning rate follow the dataset's size.

    epochs = target_examples / examples, within [min_epochs, max_epochs]; the learning rate is the top of ``lr``
    from ``full_lr_examples`` examples up and falls with the square root of the size below it (a small set is
    seen more times, so each pass steps more gently), never under the bottom of ``lr``."""

    target_examples: int = Field(ge=1)  # examples the run should see in all (each counted once per epoch)
    min_epochs: float = Field(1.0, gt=0)
    max_epochs: float = Field(8.0, gt=0)
    lr: tuple[float, float]  # (lowest, highest)
    full_lr_examples: int = Field(200, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> AdaptSettings:
        if not 0 < self.lr[0] <= self.lr[1]:
            raise ValueError("lr is a range (lowest, highest) of positive rates")
        if self.min_epochs > self.max_epochs:
            raise ValueError("min_epochs is above max_epochs")
        return self


class Architecture(_Strict):
    """A model trained from scratch: the Llama layout (what InternLM2 also is, with its weights fused)."""

    layout: Literal["llama"] = "llama"
    hidden: int = Field(ge=8)
    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    kv_heads: int | None = Field(None, ge=1)
    intermediate: int = Field(ge=8)
    max_positions: int = Field(2048, ge=16)
    rope_theta: float = 10000.0
    tie_embeddings: bool = True

    @model_validator(mode="after")
    def _divisible(self) -> Architecture:
        if self.hidden % self.heads or self.heads % (self.kv_heads or self.heads):
            raise ValueError("hidden must divide by heads, and heads by kv_heads")
        return self


class Recipe(_Strict):
    description: str = ""
    # a catalog model (a GGUF is converted to a Hugging Face folder once) or a registry name to pull; for a
    # from-scratch pretraining run, the model whose tokenizer the new model uses
    model: str
    method: Literal["full", "lora", "qlora", "pretrain"]
    # what is learnt: the dataset's answers (sft), or which of two answers is better (dpo, orpo: preference pairs)
    objective: Literal["sft", "dpo", "orpo"] = "sft"
    # dpo: how far the policy may move from the reference (TRL's beta); orpo: the weight of the odds-ratio term
    beta: float = Field(0.1, gt=0)
    # dpo: plus this weight times the chosen answer's mean token NLL (TRL's loss_type [sigmoid, sft]): keeps the
    # preferred answers likely while the rejected ones are pushed down, which a small model needs to stay fluent
    sft_weight: float = Field(0.0, ge=0)
    hardware: Literal["cpu", "gpu", "multi-gpu"] = "cpu"
    dataset: str | None = None  # a catalog dataset, or a file (relative to the recipes folder) imported on first use
    # pretraining: a prepared corpus (catalog dataset), or a folder/file/hf: dataset prepared on first use
    corpus: str | None = None
    init: Literal["pretrained", "scratch"] = "pretrained"  # pretraining: continue the model, or a new one
    architecture: Architecture | None = None  # init: scratch
    dataset_form: str = "auto"
    validation: float = Field(0.05, ge=0)
    train_on: Literal["assistant", "all"] = "assistant"
    seq_len: int = Field(1024, ge=16)
    packing: bool = True
    micro_batch: int = Field(4, ge=1)
    grad_accum: int = Field(1, ge=1)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    lr: float = Field(2e-4, gt=0)
    lr_scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_ratio: float = Field(0.03, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, ge=0)
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit"] = "adamw"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    gradient_checkpointing: bool = False
    lora: LoraSettings = Field(default_factory=LoraSettings)
    eval_every: int = Field(0, ge=0)  # steps between validation passes (0: only at the end)
    sample_prompts: list[str] = Field(default_factory=list)  # generated at each evaluation
    save_every: int = Field(0, ge=0)  # steps between checkpoints (0: only on "save now", stop and the end)
    keep_checkpoints: int = Field(2, ge=1)
    seed: int = 42
    gpus: int = Field(1, ge=1)  # processes under torchrun: one per GPU (on the CPU: gloo processes)
    distributed: Literal["ddp", "fsdp"] = "ddp"
    nodes: int = Field(1, ge=1)  # machines, each running `gpus` processes; > 1 needs rdzv_endpoint and a shared home
    rdzv_endpoint: str | None = None  # host:port of the rendezvous (torchrun's c10d), the same on every node
    trust_remote_code: bool = False
    watchdog_s: float = Field(900, gt=0)  # no metrics for this long: the run is flagged as possibly stuck
    probe: str | None = None  # the prompt the merge check compares on (default: the first sample prompt)
    shape: Shape | None = None  # dimensions for the memory estimate when the model is not on disk yet
    export: ExportSettings = Field(default_factory=ExportSettings)
    guard: GuardSettings = Field(default_factory=GuardSettings)
    replay: ReplaySettings = Field(default_factory=ReplaySettings)
    adapt: AdaptSettings | None = None  # epochs and lr for the user's own data (None: the recipe's, always)

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.method == "pretrain":
            if not self.corpus:
                raise ValueError("a pretrain recipe needs corpus: (a folder, file or prepared corpus)")
            if self.init == "scratch" and self.architecture is None:
                raise ValueError("init: scratch needs architecture: (hidden, layers, heads, intermediate)")
        elif not self.dataset:
            raise ValueError(f"a {self.method} recipe needs dataset:")
        if self.sft_weight and self.objective != "dpo":
            raise ValueError("sft_weight is for objective: dpo (orpo has its own NLL term; sft is all NLL)")
        if self.objective != "sft" and self.replay.ratio > 0:
            raise ValueError("replay mixes in answers to learn (sft); it does not apply to preference pairs")
        if self.objective != "sft" and self.method == "pretrain":
            raise ValueError(f"objective {self.objective} is for full, lora or qlora finetuning, not pretraining")
        if self.init == "scratch" and self.method != "pretrain":
            raise ValueError("init: scratch is for method: pretrain")
        if self.optimizer != "adamw" and self.hardware == "cpu":
            raise ValueError(
                f"optimizer {self.optimizer} needs a GPU (bitsandbytes' 8-bit optimizers are CUDA only); use adamw"
            )
        if self.precision == "fp16" and self.hardware == "cpu":
            raise ValueError("precision fp16 needs a GPU; use fp32 or bf16 on the CPU")
        if self.nodes > 1 and not self.rdzv_endpoint:
            raise ValueError("nodes > 1 needs rdzv_endpoint: host:port of the first node, the same on every node")
        if (
            self.method == "qlora" and self.distributed == "fsdp"
        ):  # FSDP2 cannot shard bitsandbytes' packed 4-bit weights
            raise ValueError(
                "method qlora cannot use distributed: fsdp (its 4-bit weights cannot be sharded); use "
                "distributed: ddp, or method: lora with fsdp"
            )
        return self

    @property
    def on_gpu(self) -> bool:
        """Trains on CUDA GPUs (``hardware: gpu`` or ``multi-gpu``; ``gpus`` says how many processes, so
        ``gpus=2`` on a one-GPU recipe runs the same recipe on two)."""
        return self.hardware != "cpu"

    @property
    def device(self) -> Literal["cpu", "cuda"]:
        return "cuda" if self.on_gpu else "cpu"


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["lr=1e-4", "lora.r=8"]`` → nested dict; values are read as YAML (numbers, booleans, lists)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(_("Override {pair!r} is not key=value.").format(pair=pair))
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        target = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = value
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def recipe_path(name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return candidate
    path = recipes_dir() / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in recipes_dir().glob("*.yaml"))) or _("none")
        raise UserError(_("No recipe {name!r}; recipes: {known}.").format(name=name_or_path, known=known))
    return path


def load_recipe(
    name_or_path: str, overrides: dict[str, Any] | None = None, *, gpus: int | None = None
) -> tuple[str, Recipe]:
    """(recipe name, validated recipe with overrides applied): the file, then ``key=value`` overrides, then the
    number of GPU processes when the front end was given one (``--gpus``)."""
    path = recipe_path(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = _(" line {line}").format(line=mark.line + 1) if mark else ""
        raise UserError(
            _("{path}{where}: not valid YAML ({problem}).").format(
                path=path, where=where, problem=getattr(exc, "problem", exc)
            )
        ) from None
    if not isinstance(raw, dict):
        raise UserError(_("{path}: a recipe is a mapping of settings.").format(path=path))
    try:
        merged = _merge(raw, overrides or {})
        if gpus is not None:
            merged["gpus"] = gpus
        recipe = Recipe.model_validate(merged)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'recipe'}: {e['msg']}" for e in exc.errors())
        raise UserError(f"{path.name}: {problems}.") from None
    return path.stem, recipe


def recipe_file_value(name_or_path: str, key: str) -> Any:
    """A top-level value as the recipe file gives it, before overrides (None when absent or unreadable)."""
    try:
        raw = yaml.safe_load(recipe_path(name_or_path).read_text(encoding="utf-8"))
    except (UserError, OSError, yaml.YAMLError):
        return None
    return raw.get(key) if isinstance(raw, dict) else None


def launch_command(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("# ").strip()
        if line.strip():
            break
    return f"internlocal train run {path.stem}"


def list_recipes() -> list[tuple[str, Recipe | None, str]]:
    """(name, recipe or None when invalid, launch command or the validation error) for every recipe file."""
    out: list[tuple[str, Recipe | None, str]] = []
    for path in sorted(recipes_dir().glob("*.yaml")):
        try:
            __, recipe = load_recipe(str(path))
            out.append((path.stem, recipe, launch_command(path)))
        except UserError as exc:
            out.append((path.stem, None, str(exc)))
    return out


def dataset_file(recipe: Recipe) -> Path | None:
    """The recipe's dataset as a file (relative to the recipes folder), or None when it names a catalog dataset."""
    if not recipe.dataset:  # a pretraining recipe has a corpus instead
        return None
    candidate = Path(recipe.dataset).expanduser()
    if not candidate.is_absolute():
        candidate = recipes_dir() / candidate
    return candidate if candidate.suffix and candidate.is_file() else None
