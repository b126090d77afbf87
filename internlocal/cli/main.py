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
from internlocal.i18n import _

app = typer.Typer(
    name="internlocal",
    help=_("The InternLM full chain, local-first. Run without a command to open the terminal UI."),
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    add_completion=True,  # --install-completion / --show-completion; completion requests never open the TUI
)


def _version(value: bool) -> None:
    if value:
        from internlocal import __version__

        typer.echo(f"internlocal {__version__}")
        raise typer.Exit()


@app.callback(help=_("The InternLM full chain, local-first. Run without a command to open the terminal UI."))
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help=_("Print the version and exit."))
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help=_("Show the libraries' warnings, progress bars and logs (or INTERNLOCAL_LOG=debug)."),
        ),
    ] = False,
) -> None:
    from internlocal.logs import configure

    configure(verbose)


# each command's --help is here, not in its docstring (the help is translated)
app.command("chat", help=_("Answer one question on stdout, streamed as it is generated."))(chat.chat)
app.command(
    "agent",
    help=_("Answer a question with tools (calculator, date and time, and those you allow), showing each step."),
)(agent.agent)
app.command(
    "doctor",
    help=_("Where settings, data and the Hugging Face cache live, what is installed, and what hardware is here."),
)(doctor.doctor)
app.command(
    "serve",
    help=_("Serve models over the OpenAI API (chat, completions, embeddings, tools, JSON output) and Ollama's API."),
)(serve.serve)
app.command(
    "backup",
    help=_(
        "Copy the catalog (chats, model records, runs, knowledge bases) and the knowledge-base indexes into PATH.\n"
        "Safe while the app runs; model files are not copied (the backup lists them)."
    ),
)(backup.backup)
app.command(
    "restore",
    help=_("Fill the data directory from a backup; a backup from an older version is upgraded on the way."),
)(backup.restore)
app.command(
    "web",
    help=_("Serve the terminal UI to web browsers: each browser tab gets its own app on the same data directory."),
)(web.web)
app.add_typer(models.app, name="models")
app.add_typer(jobs.app, name="jobs")
app.add_typer(engines.app, name="engines")
app.add_typer(evaluate.app, name="eval")
app.add_typer(data.app, name="data")
app.add_typer(train.app, name="train")
app.add_typer(pretrain.app, name="pretrain")
app.add_typer(kb.app, name="kb")
app.add_typer(config.app, name="config")


@app.command("tui", help=_("Open the terminal UI (same as running with no command)."))
def tui() -> None:
    from internlocal.tui.app import run

    raise typer.Exit(run())


def run() -> None:
    """The CLI, with typer's own words (usage, --help, completion) in the interface's language."""
    from internlocal.cli.typer_words import translate

    command = typer.main.get_command(app)
    translate(command)
    command(prog_name="internlocal")
