"""``internlocal data``: training datasets — import (validated, split, token statistics), list, show, preview, rm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from internlocal.cli.common import print_json, services

app = typer.Typer(
    help="Training datasets: import, list, show, preview which tokens are trained on.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TrustOpt = Annotated[bool, typer.Option("--trust-remote-code", help="Run the tokenizer code a model ships (InternLM).")]


def _tokenizer(model: str | None, trust_remote_code: bool = False):
    from internlocal.data.library import load_tokenizer

    svc = services()
    row = svc.catalog.get_model(model) if model else svc.chats.default_model()  # the embedded model unless set
    return row, load_tokenizer(svc.catalog, row, trust_remote_code=trust_remote_code)


@app.command("import")
def import_(
    file: Annotated[str, typer.Argument(help="JSONL, JSON, CSV or Parquet file, or a folder of them.")],
    name: Annotated[str | None, typer.Option("--name")] = None,
    form: Annotated[str, typer.Option("--format", help="auto, messages, sharegpt, alpaca or text.")] = "auto",
    validation: Annotated[float, typer.Option("--validation", help="Held-out share (0.05) or count (200).")] = 0.05,
    model: Annotated[str | None, typer.Option("--model", help="Tokenizer for the statistics (default model).")] = None,
    seed: int = 42,
    trust_remote_code: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Import a dataset: every row checked (file and line of each problem), split, token statistics."""
    from internlocal.data.library import import_dataset

    svc = services()
    row, tokenizer = _tokenizer(model, trust_remote_code)
    dataset = import_dataset(
        svc.catalog,
        svc.settings.home,
        Path(file),
        name=name,
        form=form,
        validation=validation,
        seed=seed,
        tokenizer=tokenizer,
        tokenizer_name=row.name,
    )
    if as_json:
        print_json(dataset.model_dump() | {"stats": dataset.stats})
        return
    stats = dataset.stats
    typer.echo(
        f"dataset {dataset.name}: {dataset.train_rows} train + {dataset.validation_rows} validation ({dataset.form})"
    )
    typer.echo(
        f"tokens per example ({row.name}): mean {stats['tokens_mean']}, p50 {stats['tokens_p50']}, "
        f"p95 {stats['tokens_p95']}, max {stats['tokens_max']}; trained {stats['tokens_trained']} of "
        f"{stats['tokens_total']}"
    )


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    svc = services()
    rows = svc.catalog.list_datasets()
    if as_json:
        print_json([d.model_dump() | {"stats": d.stats} for d in rows])
        return
    for d in rows:
        stats = d.stats
        typer.echo(
            f"{d.name:28} {d.form:9} {d.train_rows:>7} train {d.validation_rows:>6} val  "
            f"{stats.get('tokens_mean', '?')} tok/example  {d.source}"
        )


@app.command("show")
def show(name: str, as_json: JsonOpt = False) -> None:
    svc = services()
    d = svc.catalog.get_dataset(name)
    print_json(d.model_dump() | {"stats": d.stats}) if as_json else typer.echo(
        "\n".join(f"{k}: {v}" for k, v in (d.model_dump() | {"stats": d.stats}).items() if k != "stats_json")
    )


@app.command("preview")
def preview(
    name: str,
    index: Annotated[int, typer.Option("--index", "-i")] = 0,
    model: Annotated[str | None, typer.Option("--model")] = None,
    train_on: Annotated[str, typer.Option("--train-on", help="assistant or all")] = "assistant",
    trust_remote_code: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """One example through the model's chat template; trained tokens are highlighted (Axolotl's preprocess --debug)."""
    from rich.console import Console
    from rich.text import Text

    from internlocal.data.library import read_split
    from internlocal.data.rendering import preview as render_preview
    from internlocal.errors import UserError

    svc = services()
    d = svc.catalog.get_dataset(name)
    rows = read_split(Path(d.path), "train") + read_split(Path(d.path), "validation")
    if not 0 <= index < len(rows):
        raise UserError(f"Dataset {name} has {len(rows)} examples; --index must be 0 to {len(rows) - 1}.")
    _, tokenizer = _tokenizer(model, trust_remote_code)
    tokens = render_preview(tokenizer, rows[index], train_on=train_on)
    if as_json:
        print_json([{"token": t, "trained": trained} for t, trained in tokens])
        return
    text = Text()
    for piece, trained in tokens:
        text.append(piece, style="bold black on green" if trained else "dim")
    console = Console()
    console.print(text)
    console.print(f"\n{sum(1 for _, t in tokens if t)} of {len(tokens)} tokens trained (highlighted)")


@app.command("rm")
def rm(name: str) -> None:
    from internlocal.data.library import remove_dataset

    remove_dataset(services().catalog, name)
    typer.echo(f"removed dataset {name}")
