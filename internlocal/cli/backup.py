"""``internlocal backup PATH`` and ``internlocal restore PATH``: the catalog and the knowledge-base indexes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from internlocal.cli.common import print_json

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def backup(
    path: Annotated[Path, typer.Argument(help="A new (or empty) folder for the backup.")],
    as_json: JsonOpt = False,
) -> None:
    """Copy the catalog (chats, model records, runs, knowledge bases) and the knowledge-base indexes into PATH.
    Safe while the app runs; model files are not copied (the backup lists them)."""
    from internlocal.config import load_settings
    from internlocal.services.backup import backup as make_backup

    result = make_backup(load_settings(), path)
    if as_json:
        print_json(result)
        return
    typer.echo(
        f"backed up {result['chats']} chats, {result['models']} model records, {result['knowledge_bases']} knowledge "
        f"bases and {result['train_runs']} training runs to {result['backup']}"
    )


def restore(
    path: Annotated[Path, typer.Argument(help="A folder `internlocal backup` made.")],
    force: Annotated[
        bool, typer.Option("--force", help="Move the data directory's own catalog aside first (it is kept).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Fill the data directory from a backup; a backup from an older version is upgraded on the way."""
    from internlocal.config import load_settings
    from internlocal.services.backup import restore as do_restore

    result = do_restore(load_settings(), path, force=force)
    if as_json:
        print_json(result)
        return
    typer.echo(
        f"restored {result['chats']} chats, {result['models']} model records and {result['knowledge_bases']} "
        f"knowledge bases into {result['into']}"
    )
    for aside in result["moved_aside"]:
        typer.echo(f"kept what was there as {aside}")
    if result["models_without_files"]:
        typer.echo(
            f"{len(result['models_without_files'])} model records have no files on this machine "
            f"({', '.join(result['models_without_files'][:5])}); pull or convert them again to use them"
        )
