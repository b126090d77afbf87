"""Imported datasets: normalized JSONL split into train/validation under ``<home>/datasets/<name>/``, in the catalog."""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Dataset, Model
from internlocal.data.formats import load_examples
from internlocal.data.rendering import is_pair, render, render_pair
from internlocal.errors import UserError
from internlocal.hub.files import sha256_file
from internlocal.hub.store import check_model_name
from internlocal.i18n import _

if TYPE_CHECKING:
    from internlocal.jobs.context import JobContext

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
    for example in examples:  # a preference pair counts as its two renderings (what a training step reads)
        for rendered in (
            render_pair(tokenizer, example) if is_pair(example) else [render(tokenizer, example, train_on=train_on)]
        ):
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
        raise UserError(
            _("A dataset named {name!r} is already in the catalog; choose another --name or remove it.").format(
                name=name
            )
        )
    files = sorted(f for f in path.rglob("*") if f.suffix.lower() in DATA_SUFFIXES) if path.is_dir() else [path]
    if not files:
        raise UserError(_("{path} holds no .jsonl, .json, .csv or .parquet files.").format(path=path))
    examples, forms = [], set()
    for file in files:
        used, rows = load_examples(file, form)
        forms.add(used)
        examples += rows
    if "preference" in forms and len(forms) > 1:
        raise UserError(
            _("{path} mixes preference pairs with other examples; import them as separate datasets.").format(path=path)
        )
    used = forms.pop() if len(forms) == 1 else "mixed"
    stats: dict[str, Any] = {
        "rows": len(examples),
        "chars_total": sum(len(json.dumps(e, ensure_ascii=False)) for e in examples),
    }
    if tokenizer is not None:
        stats.update(token_stats(tokenizer, examples), tokenizer=tokenizer_name)
        if stats["tokens_trained"] == 0:
            raise UserError(
                _(
                    "{path}: no example has a token to train on (no assistant answers survive the chat template)."
                ).format(path=path)
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
    for edge in catalog.children(("model", model.id)):
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
        _("{name} is a {format} model; datasets are tokenized with a GGUF or Hugging Face model.").format(
            name=model.name, format=model.format
        )
    )


# -- importing once, on first use (a recipe's dataset, a pretraining corpus) -------------------------------------

REPO_PREFIXES = ("hf:", "modelscope:", "ms:")


def dataset_name(spec: str) -> str:
    """The catalog name a dataset is imported under: an ``hf:``/``modelscope:`` repository's name, else the
    file's stem."""
    if spec.startswith(REPO_PREFIXES):
        from internlocal.hub.sources import parse_repo_spec

        return parse_repo_spec(spec.split(":", 1)[1])[0].split("/")[1].lower().replace("_", "-")
    return Path(spec).stem.lower().replace("_", "-")


def find_imported(catalog: Catalog, spec: str) -> Dataset | None:
    """The catalog dataset ``spec`` names, or the one it was imported as."""
    return catalog.find_dataset(spec) or catalog.find_dataset(dataset_name(spec))


def import_once(
    ctx: JobContext,
    spec: str,
    file: Path | None,
    tokenizer: Callable[[], Any],
    tokenizer_name: str,
    *,
    form: str = "auto",
    validation: float = 0.05,
    seed: int = 42,
) -> Dataset:
    """A catalog dataset for ``spec``: the dataset of that name, a repository (``hf:``/``modelscope:``) downloaded
    and imported once, or ``file`` imported once — again under ``<name>-<sha256 prefix>`` when the file changed
    since (runs name the dataset they used). ``tokenizer()`` is called only when something is imported."""
    catalog, settings = ctx.catalog, ctx.settings
    found = catalog.find_dataset(spec)
    if found is not None:
        return found
    if spec.startswith(REPO_PREFIXES):  # a dataset repository: download it once
        from internlocal.hub.fetch import fetch_dataset

        name = dataset_name(spec)
        existing = catalog.find_dataset(name)
        if existing is not None:
            return existing
        ctx.log(f"downloading {spec}")
        file = settings.home / "downloads" / name
        fetch_dataset(settings.store_dir, file, spec, check_cancelled=ctx.check_cancelled)
    else:
        if file is None:
            raise UserError(
                _(
                    "The dataset {spec!r} is neither a catalog dataset nor a file; import one with "
                    "`internlocal data import FILE --name NAME`."
                ).format(spec=spec)
            )
        name = dataset_name(str(file))
        existing = catalog.find_dataset(name)
        digest = sha256_file(file)
        if existing is not None and existing.sha256 == digest:
            return existing
        if existing is not None:  # the file changed since it was imported: keep both
            name = f"{name}-{digest[:8]}"
            if catalog.find_dataset(name) is not None:
                return catalog.get_dataset(name)
        ctx.log(f"importing {file.name} as dataset {name}")
    return import_dataset(
        catalog,
        settings.home,
        file,
        name=name,
        form=form,
        validation=validation,
        seed=seed,
        tokenizer=tokenizer(),
        tokenizer_name=tokenizer_name,
    )


def corpus_name(source: str, tokenizer_model: str, seq_len: int) -> str:
    stem = (
        Path(source.split(":", 1)[-1].split("@")[0].rstrip("/")).name.lower().replace("_", "-").replace(".", "-")
        or "corpus"
    )
    return f"{stem}-{tokenizer_model.split('-')[0]}-{seq_len}"


def import_corpus(
    ctx: JobContext,
    source: str | Path,
    tokenizer_model: Model,
    seq_len: int,
    validation: float = 0.05,
    name: str | None = None,
    trust_remote_code: bool = False,
) -> Dataset:
    """A pretraining corpus (folder, file, or ``hf:``/``modelscope:`` dataset) prepared into token shards for
    ``tokenizer_model`` (resumed if a preparation was interrupted), recorded as a dataset of form ``tokens``
    with its statistics; a corpus already prepared under that name is returned as it is."""
    from internlocal.data.corpus import prepare_corpus

    catalog, settings = ctx.catalog, ctx.settings
    source = str(source)
    name = name or corpus_name(source, tokenizer_model.name, seq_len)
    found = catalog.find_dataset(name)
    if found is not None:
        return found
    if source.startswith(REPO_PREFIXES):
        from internlocal.hub.fetch import fetch_dataset

        path = settings.home / "downloads" / name
        ctx.log(f"downloading {source}")
        fetch_dataset(settings.store_dir, path, source, check_cancelled=ctx.check_cancelled)
    else:
        path = Path(source).expanduser()
    out = dataset_dir(settings.home, name)
    tokenizer_dir = out.with_name(out.name + ".tokenizer")
    if not tokenizer_dir.exists():
        load_tokenizer(catalog, tokenizer_model, trust_remote_code=trust_remote_code).save_pretrained(
            str(tokenizer_dir)
        )
    ctx.log(f"preparing {path} into {seq_len}-token sequences with {tokenizer_model.name}'s tokenizer")
    index = prepare_corpus(
        path,
        tokenizer_dir,
        out,
        seq_len=seq_len,
        validation=validation,
        workers=settings.threads,
        progress=lambda n, where: ctx.progress(n, None, unit="documents", message=where),
        should_stop=lambda: ctx.cancelled,
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
