"""A run's ``config.json``: the recipe it trains and the paths the loop reads, typed.

The job writes it once when a run is created and the loop (any number of processes, maybe on
another machine) reads it. The recipe is saved as the recipe file plus the overrides the user gave
(``model_dump(exclude_unset=True)``): nothing in it is rewritten or filled in, so a default that
changes in a later version applies to old runs too. Runs saved before this module existed hold the
whole validated recipe; they load the same way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from internlocal.train.recipe import Recipe


class RunConfig(BaseModel):
    model_config = ConfigDict(extra="ignore")  # keys a later version adds do not break an older loop

    recipe: Recipe
    recipe_name: str | None = None
    model_path: str  # the base as a Hugging Face folder (or the tokenizer's model for init: scratch)
    base_model: str | None = None  # its catalog name
    dataset: str | None = None  # the catalog dataset (or prepared corpus) trained on
    train_file: str | None = None
    validation_file: str | None = None
    corpus_dir: str | None = None  # pretraining: the prepared token shards
    threads: int | None = None  # torch threads per process (None: torch's default)
    estimate: dict[str, Any] | None = None  # the memory estimate the run was admitted with
    adaptation: dict[str, Any] | None = None  # epochs and lr derived from the user's dataset, and the rule
    replay: dict[str, Any] | None = None  # the replay examples mixed in (how many, from which prompts)

    @classmethod
    def load(cls, run_dir: Path) -> RunConfig:
        return cls.model_validate_json((Path(run_dir) / "config.json").read_text(encoding="utf-8"))

    def as_json(self) -> dict[str, Any]:
        return {**self.model_dump(mode="json", exclude={"recipe"}), "recipe": saved_recipe(self.recipe)}

    def save(self, run_dir: Path) -> None:
        (Path(run_dir) / "config.json").write_text(json.dumps(self.as_json(), indent=1), encoding="utf-8")


def saved_recipe(recipe: Recipe) -> dict[str, Any]:
    """The recipe as its file plus overrides: the values that were given, none that were defaulted."""
    return recipe.model_dump(mode="json", exclude_unset=True)
