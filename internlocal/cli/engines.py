"""``internlocal engines …``: which runtimes are usable here, and installing LMDeploy apart."""

from __future__ import annotations

import subprocess
from typing import Annotated

import typer

from internlocal.cli.common import print_json

app = typer.Typer(help="Model runtimes: llama.cpp, transformers, LMDeploy, remote endpoints.", no_args_is_help=True)


@app.command("list")
def list_engines(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The runtimes and whether each can run here."""
    import importlib.util

    from internlocal.config import load_settings
    from internlocal.envs import lmdeploy_executable

    settings = load_settings()
    lmdeploy = lmdeploy_executable(settings.home)
    rows = [
        {"engine": "llama.cpp", "formats": "gguf", "available": importlib.util.find_spec("llama_cpp") is not None},
        {
            "engine": "transformers",
            "formats": "hf (+ peft adapters, bitsandbytes 4/8-bit)",
            "available": importlib.util.find_spec("transformers") is not None,
        },
        {
            "engine": "lmdeploy",
            "formats": "hf, awq (NVIDIA GPUs)",
            "available": lmdeploy is not None,
            "path": str(lmdeploy) if lmdeploy else None,
        },
        {"engine": "remote", "formats": "any OpenAI-compatible endpoint (models add-remote)", "available": True},
    ]
    if as_json:
        print_json({"selected": settings.engine, "engines": rows})
        return
    for row in rows:
        typer.echo(f"{row['engine']:13} {'yes' if row['available'] else 'no ':4} {row['formats']}")
    typer.echo(f"choice: {settings.engine} (INTERNLOCAL_ENGINE)")


@app.command("install")
def install(
    name: Annotated[str, typer.Argument(help="lmdeploy")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the commands instead of running them.")] = False,
) -> None:
    """Install LMDeploy into its own virtual environment (its pins conflict with ours)."""
    from internlocal.config import load_settings
    from internlocal.envs import lmdeploy_install_commands
    from internlocal.errors import UserError

    if name != "lmdeploy":
        raise UserError(f"Only lmdeploy is installed this way; {name!r} is not.")
    commands = lmdeploy_install_commands(load_settings().home)
    for command in commands:
        typer.echo(" ".join(command))
        if not dry_run and subprocess.run(command).returncode != 0:
            raise UserError("Installing LMDeploy failed (it needs Linux x86-64 with CUDA); see the output above.")
