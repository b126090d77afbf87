"""Recipes that adapt to the user's data: epochs and learning rate derived from the dataset's size.

A recipe's ``epochs`` and ``lr`` were tuned on its bundled data. When the user brings another
dataset (``dataset=…``) and the recipe states its intent (``adapt:``, see ``AdaptSettings``), the
run's epochs and learning rate follow the new dataset's size instead; a value the user set
explicitly (``epochs=``, ``lr=``, ``max_steps=``) always wins. ``--dry-run`` prints the outcome and
the rule (``Adaptation.describe``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from internlocal.catalog.catalog import Catalog
from internlocal.train.recipe import Recipe, dataset_file


@dataclass
class Adaptation:
    examples: int  # training examples (validation split excluded)
    epochs: float
    lr: float
    rule: str
    kept: list[str]  # settings the user gave, left as given

    def describe(self) -> str:
        kept = f"; kept as given: {', '.join(self.kept)}" if self.kept else ""
        return (
            f"adapted to {self.examples} training examples: epochs {self.epochs:g}, lr {self.lr:.2e} "
            f"({self.rule}){kept}"
        )

    def as_dict(self) -> dict[str, Any]:
        return {"examples": self.examples, "epochs": self.epochs, "lr": self.lr, "rule": self.rule, "kept": self.kept}


def resolve(settings_examples: int, recipe: Recipe) -> tuple[float, float, str]:
    """(epochs, lr, the rule in words) for ``settings_examples`` training examples under ``recipe.adapt``."""
    a = recipe.adapt
    assert a is not None
    n = max(1, settings_examples)
    epochs = min(a.max_epochs, max(a.min_epochs, a.target_examples / n))
    epochs = round(epochs, 2)
    low, high = a.lr
    lr = max(low, min(high, high * math.sqrt(n / a.full_lr_examples)))
    rule = (
        f"epochs = {a.target_examples} examples to see / {n}, within [{a.min_epochs:g}, {a.max_epochs:g}]; "
        f"lr = {high:.0e} × √({n}/{a.full_lr_examples}), within [{low:.0e}, {high:.0e}]"
    )
    return epochs, lr, rule


def adapt_recipe(
    catalog: Catalog, recipe: Recipe, file_recipe_dataset: str | None, overrides: dict[str, Any]
) -> tuple[Recipe, Adaptation | None]:
    """The recipe with epochs and lr derived from the user's dataset, when the recipe asks for it (``adapt:``) and
    the dataset is not the recipe's own; else the recipe unchanged and None."""
    if recipe.adapt is None or recipe.method == "pretrain" or not recipe.dataset:
        return recipe, None
    if recipe.dataset == file_recipe_dataset:
        return recipe, None  # the bundled data: the recipe's own tuned numbers
    examples = training_examples(catalog, recipe)
    if examples is None:
        return recipe, None
    epochs, lr, rule = resolve(examples, recipe)
    kept: list[str] = [key for key in ("epochs", "lr", "max_steps") if key in overrides]
    update: dict[str, Any] = {}
    if "epochs" not in overrides and "max_steps" not in overrides:
        update["epochs"] = epochs
    if "lr" not in overrides:
        update["lr"] = lr
    adapted = recipe.model_copy(update=update)
    return adapted, Adaptation(examples, adapted.epochs, adapted.lr, rule, kept)


def training_examples(catalog: Catalog, recipe: Recipe) -> int | None:
    """How many examples the run trains on: a file's rows less the validation share (as the import will split it;
    the file itself, which may have changed since an earlier import), or a catalog dataset's train split; None when
    the data cannot be read yet (a Hub dataset not imported)."""
    from internlocal.data.library import find_imported

    assert recipe.dataset is not None
    path = dataset_file(recipe)
    if path is None:
        found = find_imported(catalog, recipe.dataset)
        return found.train_rows if found is not None else None
    from internlocal.data.formats import load_examples
    from internlocal.data.library import split

    _, rows = load_examples(path, recipe.dataset_form)
    train, _ = split(rows, recipe.validation, recipe.seed)
    return len(train)
