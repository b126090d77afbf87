"""What a run trains on, made ready: the base as a Hugging Face folder, the recipe's dataset or corpus imported.

The dataset library (``data/library.py``) does the importing; this module only says where a
recipe's inputs come from (a catalog name, a file relative to the recipes folder, a repository).
"""

from __future__ import annotations

from pathlib import Path

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Dataset, Model
from internlocal.data.library import REPO_PREFIXES, find_imported, import_corpus, import_once, load_tokenizer
from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.jobs.context import JobContext
from internlocal.train.recipe import Recipe, dataset_file, recipes_dir


def recipe_dataset(catalog: Catalog, recipe: Recipe) -> Dataset | None:
    """The catalog dataset a chat recipe trains on, once imported (named as is, or under its import name)."""
    return find_imported(catalog, recipe.dataset) if recipe.dataset else None


def hf_base(ctx: JobContext, model: Model) -> Model:
    """The base as a Hugging Face folder: itself, an earlier conversion, or a new one from the GGUF."""
    catalog = ctx.catalog
    if model.format == "hf":
        return model
    if model.format != "gguf":
        raise UserError(
            _("{name} is a {format} model; finetuning needs a GGUF or Hugging Face model.").format(
                name=model.name, format=model.format
            )
        )
    assert model.id is not None
    for edge in catalog.children(("model", model.id)):
        if edge.operation == "convert.gguf_to_hf" and edge.child_type == "model":
            child = catalog.find_model(edge.child_id)
            if child is not None and Path(child.path).exists():
                return child
    from internlocal.hub.convert import gguf_to_hf

    ctx.log(f"converting {model.name} to a Hugging Face folder for training (once)")
    small = (model.parameters or 0) < 2_000_000_000
    result = gguf_to_hf(ctx, model.name, dtype="float32" if small else "bfloat16")
    return catalog.get_model(result["model"])


def training_data(ctx: JobContext, recipe: Recipe, base_hf: Model) -> Dataset:
    """The dataset (chat recipes) or prepared corpus (pretraining) the run trains on, imported on first use."""
    if recipe.method == "pretrain":
        return corpus(ctx, recipe, base_hf)
    assert recipe.dataset is not None  # the recipe's validator requires one
    return import_once(
        ctx,
        recipe.dataset,
        dataset_file(recipe),
        lambda: load_tokenizer(ctx.catalog, base_hf, trust_remote_code=recipe.trust_remote_code),
        base_hf.name,
        form=recipe.dataset_form,
        validation=recipe.validation,
        seed=recipe.seed,
    )


def corpus(ctx: JobContext, recipe: Recipe, base_hf: Model) -> Dataset:
    assert recipe.corpus is not None  # the recipe's validator requires one
    found = ctx.catalog.find_dataset(recipe.corpus)
    if found is not None:
        if found.form != "tokens":
            raise UserError(
                _("Dataset {name} is a {form} dataset, not a prepared pretraining corpus.").format(
                    name=found.name, form=found.form
                )
            )
        return found
    return import_corpus(
        ctx,
        corpus_source(recipe.corpus),
        base_hf,
        recipe.seq_len,
        validation=recipe.validation if recipe.validation < 1 else 0.05,
        trust_remote_code=recipe.trust_remote_code,
    )


def corpus_source(source: str) -> str:
    """A recipe's corpus as given, or relative to the recipes folder when that is where it is."""
    if source.startswith(REPO_PREFIXES):
        return source
    path = Path(source).expanduser()
    return str(path if path.is_absolute() or path.exists() else recipes_dir() / path)
