"""``internlocal data``: training datasets — import (validated, split, token statistics), list, show, preview, rm."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from internlocal.cli.common import print_json, services
from internlocal.i18n import _

app = typer.Typer(
    help=_("Training datasets: import, list, show, preview which tokens are trained on."), no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help=_("Machine-readable output."))]
TrustOpt = Annotated[
    bool, typer.Option("--trust-remote-code", help=_("Run the tokenizer code a model ships (InternLM)."))
]


def _tokenizer(model: str | None, trust_remote_code: bool = False):
    from internlocal.data.library import load_tokenizer

    svc = services()
    row = svc.catalog.get_model(model) if model else svc.chats.default_model()  # the embedded model unless set
    return row, load_tokenizer(svc.catalog, row, trust_remote_code=trust_remote_code)


@app.command(
    "import", help=_("Import a dataset: every row checked (file and line of each problem), split, token statistics.")
)
def import_(
    file: Annotated[str, typer.Argument(help=_("JSONL, JSON, CSV or Parquet file, or a folder of them."))],
    name: Annotated[str | None, typer.Option("--name")] = None,
    form: Annotated[str, typer.Option("--format", help=_("auto, messages, sharegpt, alpaca or text."))] = "auto",
    validation: Annotated[float, typer.Option("--validation", help=_("Held-out share (0.05) or count (200)."))] = 0.05,
    model: Annotated[
        str | None, typer.Option("--model", help=_("Tokenizer for the statistics (default model)."))
    ] = None,
    seed: int = 42,
    trust_remote_code: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
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
        _("dataset {name}: {train} train + {validation} validation ({form})").format(
            name=dataset.name, train=dataset.train_rows, validation=dataset.validation_rows, form=dataset.form
        )
    )
    typer.echo(
        _(
            "tokens per example ({model}): mean {mean}, p50 {p50}, p95 {p95}, max {max}; trained {trained} of {total}"
        ).format(
            model=row.name,
            mean=stats["tokens_mean"],
            p50=stats["tokens_p50"],
            p95=stats["tokens_p95"],
            max=stats["tokens_max"],
            trained=stats["tokens_trained"],
            total=stats["tokens_total"],
        )
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
            _("{name:28} {form:9} {train:>7} train {validation:>6} val  {tokens} tok/example  {source}").format(
                name=d.name,
                form=d.form,
                train=d.train_rows,
                validation=d.validation_rows,
                tokens=stats.get("tokens_mean", "?"),
                source=d.source,
            )
        )


@app.command("show")
def show(name: str, as_json: JsonOpt = False) -> None:
    svc = services()
    d = svc.catalog.get_dataset(name)
    print_json(d.model_dump() | {"stats": d.stats}) if as_json else typer.echo(
        "\n".join(f"{k}: {v}" for k, v in (d.model_dump() | {"stats": d.stats}).items() if k != "stats_json")
    )


@app.command(
    "preview",
    help=_(
        "One example through the model's chat template; trained tokens are highlighted (Axolotl's preprocess --debug)."
    ),
)
def preview(
    name: str,
    index: Annotated[int, typer.Option("--index", "-i")] = 0,
    model: Annotated[str | None, typer.Option("--model")] = None,
    train_on: Annotated[str, typer.Option("--train-on", help=_("assistant or all"))] = "assistant",
    trust_remote_code: TrustOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from rich.console import Console
    from rich.text import Text

    from internlocal.data.library import read_split
    from internlocal.data.rendering import preview as render_preview
    from internlocal.errors import UserError

    svc = services()
    d = svc.catalog.get_dataset(name)
    rows = read_split(Path(d.path), "train") + read_split(Path(d.path), "validation")
    if not 0 <= index < len(rows):
        raise UserError(
            _("Dataset {name} has {count} examples; --index must be 0 to {last}.").format(
                name=name, count=len(rows), last=len(rows) - 1
            )
        )
    __, tokenizer = _tokenizer(model, trust_remote_code)
    tokens = render_preview(tokenizer, rows[index], train_on=train_on)
    if as_json:
        print_json([{"token": t, "trained": trained} for t, trained in tokens])
        return
    text = Text()
    for piece, trained in tokens:
        text.append(piece, style="bold black on green" if trained else "dim")
    console = Console()
    console.print(text)
    trained_count = sum(1 for __, t in tokens if t)
    console.print(
        "\n" + _("{trained} of {total} tokens trained (highlighted)").format(trained=trained_count, total=len(tokens))
    )


@app.command("rm")
def rm(name: str) -> None:
    from internlocal.data.library import remove_dataset

    remove_dataset(services().catalog, name)
    typer.echo(_("removed dataset {name}").format(name=name))
