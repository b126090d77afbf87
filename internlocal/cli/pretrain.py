"""``internlocal pretrain``: prepare corpora into token shards, run pretraining recipes (from scratch or continued)."""

from __future__ import annotations

from typing import Annotated

import typer

from internlocal.cli.common import print_json, services
from internlocal.i18n import _

app = typer.Typer(
    help=_("Pretraining: corpora → token shards, models from scratch or continued on your text."), no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help=_("Machine-readable output."))]


@app.command(
    "prepare",
    help=_("Tokenize, de-duplicate and pack a corpus into shards (once; a pretrain recipe can then name it)."),
)
def prepare(
    source: Annotated[
        str, typer.Argument(help=_('Folder of .txt/.md, JSONL with "text", Parquet, or hf:org/name[:glob].'))
    ],
    model: Annotated[
        str, typer.Option("--model", help=_("Catalog model whose tokenizer to use."))
    ] = "smollm2-135m-instruct-q4_1",
    seq_len: Annotated[int, typer.Option("--seq-len", help=_("Tokens per training sequence."))] = 2048,
    validation: Annotated[float, typer.Option("--validation", help=_("Fraction of documents held out."))] = 0.01,
    name: Annotated[str | None, typer.Option("--name", help=_("Dataset name (default: from the source)."))] = None,
    trust_remote_code: Annotated[
        bool, typer.Option("--trust-remote-code", help=_("Run the tokenizer code a model ships (InternLM)."))
    ] = False,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.cli.progress import follow_job
    from internlocal.services.training import prepare_corpus

    svc = services()
    job = prepare_corpus(
        svc, source, model, seq_len, validation=validation, name=name, trust_remote_code=trust_remote_code
    )
    done = follow_job(svc.jobs, job, detach=detach, as_json=as_json)
    if done is not None and not as_json:
        r = done.result
        typer.echo(
            _(
                "{dataset}: {documents:,} documents ({duplicates:,} duplicates removed), {tokens:,} tokens → "
                "{train_sequences:,} training and {validation_sequences:,} validation sequences of {seq_len} ({dtype})"
            ).format_map(r)
        )


@app.command("corpora", help=_("Prepared corpora with their statistics."))
def corpora(as_json: JsonOpt = False) -> None:
    rows = [d for d in services().catalog.list_datasets() if d.form == "tokens"]
    if as_json:
        print_json([{"name": d.name, "path": d.path, **d.stats} for d in rows])
        return
    for d in rows:
        s = d.stats
        typer.echo(
            f"{d.name:32} "
            + _("{documents:>9,} docs {tokens:>13,} tokens  seq {seq_len}  {tokenizer}  from {source}").format(
                documents=s.get("documents", 0),
                tokens=s.get("tokens", 0),
                seq_len=s.get("seq_len"),
                tokenizer=s.get("tokenizer"),
                source=s.get("source"),
            )
        )


@app.command("list", help=_("Pretraining recipes (from scratch and continued) with their memory estimate."))
def list_(as_json: JsonOpt = False) -> None:
    from internlocal.cli.train import print_recipes

    print_recipes(lambda recipe: recipe.method == "pretrain", as_json)


@app.command(
    "run",
    help=_(
        "Pretrain from a recipe (the same job as `train run`): prepare the corpus if needed, train, export, register."
    ),
)
def run(
    recipe: str,
    overrides: Annotated[list[str] | None, typer.Argument(help=_("key=value overrides, e.g. corpus=~/texts"))] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help=_("Print the resolved recipe and memory estimate only."))
    ] = False,
    gpus: Annotated[int | None, typer.Option("--gpus", help=_("Processes per node under torchrun."), min=1)] = None,
    nodes: Annotated[int | None, typer.Option("--nodes", help=_("Machines (each runs this same command)."))] = None,
    rdzv_endpoint: Annotated[
        str | None, typer.Option("--rdzv-endpoint", help=_("host:port of the rendezvous."))
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help=_("Run name (the same on every node)."))] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.cli import train as train_cli
    from internlocal.train.recipe import parse_overrides

    parsed = parse_overrides(overrides or [])
    if nodes is not None:
        parsed["nodes"] = nodes
    if rdzv_endpoint is not None:
        parsed["rdzv_endpoint"] = rdzv_endpoint  # as typed: YAML would read "10:30" as a number
    train_cli.start(recipe, parsed, gpus=gpus, name=name, dry_run=dry_run, detach=detach, as_json=as_json)
