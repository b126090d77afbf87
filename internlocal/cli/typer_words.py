"""typer's own words (usage line, the --help and completion options) in the interface's language.

typer translates its panel titles and error frame through gettext (``library_strings.py`` keeps those msgids in
our catalogs), but the click it vendors writes "Usage:" and the --help option's sentence as plain English, and
its completion options carry plain help strings. They are relabelled here on the command tree before it runs.
Each hook checks that the attribute it uses exists: on a typer that moved them the words stay English rather
than the CLI failing. Parse errors typer's vendored click raises ("No such option") stay English.
"""

from __future__ import annotations

from typing import Any

from internlocal.i18n import N_, _

USAGE = N_("Usage:")
HELP_OPTION = N_("Show this message and exit.")
COMPLETION_OPTIONS = {
    "install_completion": N_("Install completion for the current shell."),
    "show_completion": N_("Show completion for the current shell, to copy it or customize the installation."),
}


def translate(command: Any) -> None:
    """Relabel typer's words on ``command`` (a click command built by ``typer.main.get_command``) and below."""
    from typer._click import core, formatting

    for param in command.params:
        if param.name in COMPLETION_OPTIONS:
            param.help = _(COMPLETION_OPTIONS[param.name])
    if not getattr(formatting.HelpFormatter.write_usage, "_translated", False):
        original_usage = formatting.HelpFormatter.write_usage

        def write_usage(self: Any, prog: str, args: str = "", prefix: str | None = None) -> None:
            original_usage(self, prog, args, _(USAGE) + " " if prefix is None else prefix)

        write_usage._translated = True  # type: ignore[attr-defined]
        formatting.HelpFormatter.write_usage = write_usage  # type: ignore[method-assign]
    if not getattr(core.Command.get_help_option, "_translated", False):
        original_help = core.Command.get_help_option

        def get_help_option(self: Any, ctx: Any) -> Any:
            option = original_help(self, ctx)
            if option is not None:
                option.help = _(HELP_OPTION)
            return option

        get_help_option._translated = True  # type: ignore[attr-defined]
        core.Command.get_help_option = get_help_option  # type: ignore[method-assign]
