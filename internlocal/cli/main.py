"""The typer CLI: ``internlocal COMMAND``. Commands are thin: they call services and print."""

from __future__ import annotations

from typing import Annotated

import typer

from internlocal.cli import (
    agent,
    backup,
    chat,
    config,
    data,
    doctor,
    engines,
    evaluate,
    jobs,
    kb,
    models,
    pretrain,
    serve,
    train,
    web,
)

app = typer.Typer(
    name="internlocal",
    help="The InternLM full chain, local-first. Run without a command to open the terminal UI.",
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion; completion requests never open the TUI
)


def _version(value: bool) -> None:
    if value:
        from internlocal import __version__

        typer.echo(f"internlocal {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="Show the libraries' warnings, progress bars and logs (or INTERNLOCAL_LOG=debug)."
        ),
    ] = False,
) -> None:
    """The InternLM full chain, local-first. Run without a command to open the terminal UI."""
    from internlocal.logs import configure

    configure(verbose)


app.command("chat")(chat.chat)
app.command("agent")(agent.agent)
app.command("doctor")(doctor.doctor)
app.command("serve")(serve.serve)
app.command("backup")(backup.backup)
app.command("restore")(backup.restore)
app.command("web")(web.web)
app.add_typer(models.app, name="models")
app.add_typer(jobs.app, name="jobs")
app.add_typer(engines.app, name="engines")
app.add_typer(evaluate.app, name="eval")
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(pretrain.app, name="pretrain")
app.add_typer(kb.app, name="kb")
app.add_typer(config.app, name="config")


@app.command("tui")
def tui() -> None:
    """Open the terminal UI (same as running with no command)."""
    from internlocal.tui.app import run

    raise typer.Exit(run())
