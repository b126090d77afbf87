"""Imported datasets: normalized JSONL with a train/validation split under ``<home>/datasets/<name>/``, in the catalog."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Dataset, Model
from internlocal.data.formats import load_examples
from internlocal.data.rendering import render
from internlocal.errors import UserError
from internlocal.hub.files import sha256_file
from internlocal.hub.store import check_model_name

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def dataset_dir(home: Path, name: str) -> Path:
    return Path(home) / "datasets" / name


def split(examples: list[dict[str, Any]], validation: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded shuffle, then the last ``validation`` share (a fraction, or a count when >= 1) held out."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_val = int(validation) if validation >= 1 else round(len(examples) * validation)
    n_val = min(max(n_val, 0), max(len(examples) - 1, 0))
    held = set(order[len(order) - n_val :]) if n_val else set()
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def token_stats(tokenizer, examples: list[dict[str, Any]], train_on: str = "assistant") -> dict[str, Any]:
    lengths, trained = [], []
    for example in examples:
        rendered = render(tokenizer, example, train_on=train_on)
        lengths.append(len(rendered.input_ids))
        trained.append(rendered.trained_tokens)
    ordered = sorted(lengths)

    def pct(q: float) -> int:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0

    return {
        "tokens_total": sum(lengths),
        "tokens_trained": sum(trained),
        "tokens_mean": round(sum(lengths) / max(1, len(lengths)), 1),
        "tokens_p50": pct(0.5),
        "tokens_p95": pct(0.95),
        "tokens_max": ordered[-1] if ordered else 0,
        "no_trainable_tokens": sum(1 for t in trained if t == 0),
    }


def import_dataset(
    catalog: Catalog,
    home: Path,
    path: Path,
    *,
    name: str | None = None,
    form: str = "auto",
    validation: float = 0.05,
    seed: int = 42,
    tokenizer=None,
    tokenizer_name: str | None = None,
) -> Dataset:
    """Read, validate, split and store a dataset file; nothing is written unless every row is good."""
    path = Path(path)
    name = check_model_name(name or path.stem.lower().replace(" ", "-"))
    if catalog.find_dataset(name) is not None:
        raise UserError(f"A dataset named {name!r} is already in the catalog; choose another --name or remove it.")
    files = sorted(f for f in path.rglob("*") if f.suffix.lower() in DATA_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise UserError(f"{path} holds no .jsonl, .json, .csv or .parquet files.")
    examples, forms = [], set()
    for file in files:
        used, rows = load_examples(file, form)
        forms.add(used)
        examples += rows
    used = forms.pop() if len(forms) == 1 else "mixed"
    stats: dict[str, Any] = {
        "rows": len(examples),
        "chars_total": sum(len(json.dumps(e, ensure_ascii=False)) for e in examples),
    }
    if tokenizer is not None:
        stats.update(token_stats(tokenizer, examples), tokenizer=tokenizer_name)
        if stats["tokens_trained"] == 0:
            raise UserError(
                f"{path}: no example has a token to train on (no assistant answers survive the chat template)."
            )
    train, held = split(examples, validation, seed)
    target = dataset_dir(home, name)
    work = target.with_name(f".{name}.importing")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for split_name, rows in (("train", train), ("validation", held)):
        (work / f"{split_name}.jsonl").write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
        )
    shutil.rmtree(target, ignore_errors=True)
    work.rename(target)
    return catalog.add_dataset(
        Dataset(
            name=name,
            form=used,
            path=str(target),
            source=str(path.resolve()),
            sha256=sha256_file(path) if path.is_file() else None,
            train_rows=len(train),
            validation_rows=len(held),
            stats_json=json.dumps(stats),
        )
    )


def read_split(dataset_path: Path, split_name: str) -> list[dict[str, Any]]:
    file = Path(dataset_path) / f"{split_name}.jsonl"
    if not file.exists():
        return []
    return [json.loads(line) for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def remove_dataset(catalog: Catalog, name: str) -> None:
    row = catalog.delete_dataset(name)
    shutil.rmtree(row.path, ignore_errors=True)


def load_tokenizer(catalog: Catalog, model: Model, *, trust_remote_code: bool = False):
    """The Hugging Face tokenizer of a catalog model: its folder, a converted copy of a GGUF, or the GGUF itself
    (``trust_remote_code`` as the recipe says: the training loop loads the same tokenizer the same way)."""
    from internlocal.data.tokenizer import hf_tokenizer

    if model.format == "hf":
        return hf_tokenizer(model.path, trust_remote_code=trust_remote_code)
    for edge in catalog.children(("model", model.id)):  # type: ignore[arg-type]
        if edge.operation == "convert.gguf_to_hf" and edge.child_type == "model":
            child = catalog.find_model(edge.child_id)
            if child is not None and Path(child.path).exists():
                return hf_tokenizer(child.path, trust_remote_code=trust_remote_code)
    if model.format == "gguf":
        gguf = Path(model.path).resolve()
        tokenizer = hf_tokenizer(gguf.parent, trust_remote_code=trust_remote_code, gguf_file=gguf.name)
        if model.chat_template and not tokenizer.chat_template:
            tokenizer.chat_template = model.chat_template
        return tokenizer
    raise UserError(
        f"{model.name} is a {model.format} model; datasets are tokenized with a GGUF or Hugging Face model."
    )
