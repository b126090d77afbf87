"""``internlocal config``: the settings file — where it is, what is in effect and from where, changing a value."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from internlocal.cli.common import print_json

app = typer.Typer(help="Settings: show them, change them, find the file.", no_args_is_help=True)


def _sources(file: dict[str, Any]) -> dict[str, str]:
    """Where each setting's value comes from: the environment, the file, or the default."""
    import os

    from internlocal.config import Settings

    return {
        name: "environment" if f"INTERNLOCAL_{name.upper()}" in os.environ else "file" if name in file else "default"
        for name in Settings.model_fields
    }


def _read(path) -> Any:
    import tomlkit

    from internlocal.errors import UserError

    if not path.exists():
        return tomlkit.document()
    try:
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    except tomlkit.exceptions.ParseError as exc:
        raise UserError(f"{path} is not valid TOML ({exc}); fix or remove it.") from None


@app.command("path")
def path() -> None:
    """The settings file (it may not exist yet: `config set` creates it)."""
    from internlocal.config import config_path

    typer.echo(str(config_path()))


@app.command("show")
def show(as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False) -> None:
    """Every setting in effect, with where its value comes from (environment, file, default)."""
    from internlocal.config import config_path, load_settings

    file = config_path()
    settings = load_settings()
    sources = _sources(dict(_read(file)))
    values = settings.model_dump(mode="json")
    if as_json:
        print_json({"file": str(file), "settings": {k: {"value": v, "from": sources[k]} for k, v in values.items()}})
        return
    typer.echo(f"# {file}{'' if file.exists() else ' (not created yet)'}")
    for name, value in values.items():
        typer.echo(f"{name:16} {value!s:40} ({sources[name]})")


@app.command("set")
def set_(
    key: Annotated[str, typer.Argument(help="A setting (`internlocal config show` lists them).")],
    value: Annotated[str, typer.Argument(help='Its new value (read as TOML when it parses: 8192, true, "text").')],
) -> None:
    """Change a setting in the settings file; it is checked before anything is written."""
    _write(key, value)


@app.command("unset")
def unset(key: Annotated[str, typer.Argument(help="A setting to take out of the file (back to its default).")]) -> None:
    """Take a setting out of the settings file."""
    _write(key, None)


def _write(key: str, raw: str | None) -> None:
    import os
    import tempfile

    import tomlkit
    from pydantic import ValidationError

    from internlocal.config import Settings, config_path
    from internlocal.errors import UserError

    if key not in Settings.model_fields:
        raise UserError(f"There is no setting {key!r}; `internlocal config show` lists them.")
    file = config_path()
    document = _read(file)
    if raw is None:
        document.pop(key, None)
    else:
        try:
            value = tomlkit.parse(f"v = {raw}")["v"]
        except tomlkit.exceptions.ParseError:
            value = raw  # a bare word: a string
        document[key] = value
    try:  # the whole file as it would be, validated (the environment does not hide a bad value here)
        Settings.model_validate({k: v for k, v in document.unwrap().items() if k in Settings.model_fields})
    except ValidationError as exc:
        raise UserError(f"Invalid setting {key}: {exc.errors()[0]['msg'].lower()}; nothing was written.") from None
    file.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".config.", suffix=".toml")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        text = tomlkit.dumps(document)
        fh.write(text if text.endswith("\n") else text + "\n")
    os.replace(tmp, file)  # the old file or the new one, never half of either
    typer.echo(f"{key} = {document[key]!s}" if raw is not None else f"{key} unset", err=False)
    if f"INTERNLOCAL_{key.upper()}" in os.environ:
        typer.echo(f"note: INTERNLOCAL_{key.upper()} is set and takes precedence over the file.")
