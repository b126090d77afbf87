"""``internlocal config``: the settings file — where it is, what is in effect and from where, changing a value."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from internlocal.cli.common import print_json
from internlocal.i18n import N_, _

app = typer.Typer(help=_("Settings: show them, change them, find the file."), no_args_is_help=True)

# where a value comes from, as --json prints it → as a person reads it
SOURCE_LABELS = {"environment": N_("environment"), "file": N_("file"), "default": N_("default")}


def _sources(file: dict[str, Any]) -> dict[str, str]:
    """Where each setting's value comes from: the environment, the file, or the default."""
    import os

    from internlocal.config import Settings

    return {
        name: "environment" if f"INTERNLOCAL_{name.upper()}" in os.environ else "file" if name in file else "default"
        for name in Settings.model_fields
    }


@app.command("path", help=_("The settings file (it may not exist yet: `config set` creates it)."))
def path() -> None:
    from internlocal.config import config_path

    typer.echo(str(config_path()))


@app.command("show", help=_("Every setting in effect, with where its value comes from (environment, file, default)."))
def show(as_json: Annotated[bool, typer.Option("--json", help=_("Machine-readable output."))] = False) -> None:
    from internlocal.config import config_path, load_settings, read_settings_document

    file = config_path()
    settings = load_settings()
    sources = _sources(dict(read_settings_document(file)))
    values = settings.model_dump(mode="json")
    if as_json:
        print_json({"file": str(file), "settings": {k: {"value": v, "from": sources[k]} for k, v in values.items()}})
        return
    typer.echo(f"# {file}" if file.exists() else _("# {file} (not created yet)").format(file=file))
    for name, value in values.items():
        source = _(SOURCE_LABELS.get(sources[name], sources[name]))
        typer.echo(f"{name:16} {value!s:40} ({source})")


@app.command("set", help=_("Change a setting in the settings file; it is checked before anything is written."))
def set_(
    key: Annotated[str, typer.Argument(help=_("A setting (`internlocal config show` lists them)."))],
    value: Annotated[str, typer.Argument(help=_('Its new value (read as TOML when it parses: 8192, true, "text").'))],
) -> None:
    _write(key, value)


@app.command("unset", help=_("Take a setting out of the settings file."))
def unset(
    key: Annotated[str, typer.Argument(help=_("A setting to take out of the file (back to its default)."))],
) -> None:
    _write(key, None)


def _write(key: str, raw: str | None) -> None:
    import os

    from internlocal.config import write_setting

    written = write_setting(key, raw)
    typer.echo(f"{key} = {written!s}" if raw is not None else _("{key} unset").format(key=key), err=False)
    if f"INTERNLOCAL_{key.upper()}" in os.environ:
        typer.echo(
            _("note: {variable} is set and takes precedence over the file.").format(
                variable=f"INTERNLOCAL_{key.upper()}"
            )
        )
