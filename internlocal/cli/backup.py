"""``internlocal backup PATH`` and ``internlocal restore PATH``: the catalog and the knowledge-base indexes."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from internlocal.cli.common import print_json
from internlocal.i18n import _

JsonOpt = Annotated[bool, typer.Option("--json", help=_("Machine-readable output."))]


def backup(
    path: Annotated[Path, typer.Argument(help=_("A new (or empty) folder for the backup."))],
    as_json: JsonOpt = False,
) -> None:
    # its --help is where main.py registers it
    from internlocal.config import load_settings
    from internlocal.services.backup import backup as make_backup

    result = make_backup(load_settings(), path)
    if as_json:
        print_json(result)
        return
    typer.echo(
        _(
            "backed up {chats} chats, {models} model records, {knowledge_bases} knowledge bases and {train_runs} "
            "training runs to {backup}"
        ).format_map(result)
    )


def restore(
    path: Annotated[Path, typer.Argument(help=_("A folder `internlocal backup` made."))],
    force: Annotated[
        bool, typer.Option("--force", help=_("Move the data directory's own catalog aside first (it is kept)."))
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    # its --help is where main.py registers it
    from internlocal.config import load_settings
    from internlocal.services.backup import restore as do_restore

    result = do_restore(load_settings(), path, force=force)
    if as_json:
        print_json(result)
        return
    typer.echo(
        _("restored {chats} chats, {models} model records and {knowledge_bases} knowledge bases into {into}").format(
            chats=result["chats"],
            models=result["models"],
            knowledge_bases=result["knowledge_bases"],
            into=result["into"],
        )
    )
    for aside in result["moved_aside"]:
        typer.echo(_("kept what was there as {path}").format(path=aside))
    if result["models_without_files"]:
        typer.echo(
            _(
                "{count} model records have no files on this machine ({names}); pull or convert them again to use them"
            ).format(count=len(result["models_without_files"]), names=", ".join(result["models_without_files"][:5]))
        )
