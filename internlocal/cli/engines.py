"""``internlocal engines …``: which runtimes are usable here, and installing the tools that live apart
(LMDeploy, llama.cpp's HF→GGUF converter)."""

from __future__ import annotations

import subprocess
from typing import Annotated

import typer

from internlocal.cli.common import pad, print_json
from internlocal.i18n import N_, _

app = typer.Typer(help=_("Model runtimes: llama.cpp, transformers, LMDeploy, remote endpoints."), no_args_is_help=True)


@app.command("list", help=_("The runtimes and whether each can run here."))
def list_engines(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    import importlib.util

    from internlocal.config import load_settings
    from internlocal.envs import converter_dir, lmdeploy_executable

    settings = load_settings()
    lmdeploy = lmdeploy_executable(settings.home)
    rows = [
        {"engine": "llama.cpp", "formats": "gguf", "available": importlib.util.find_spec("llama_cpp") is not None},
        {
            "engine": "transformers",
            "formats": N_("hf (+ peft adapters, bitsandbytes 4/8-bit)"),  # English in --json, translated when shown
            "available": importlib.util.find_spec("transformers") is not None,
        },
        {
            "engine": "lmdeploy",
            "formats": N_("hf, awq (NVIDIA GPUs)"),
            "available": lmdeploy is not None,
            "path": str(lmdeploy) if lmdeploy else None,
        },
        {
            "engine": "remote",
            "formats": N_("any OpenAI-compatible endpoint (models add-remote)"),
            "available": True,
        },
        {
            "engine": "converter",
            "formats": N_("hf → gguf (llama.cpp's converter: engines install converter)"),
            "available": (converter_dir(settings.home) / "convert_hf_to_gguf.py").exists(),
            "path": str(converter_dir(settings.home)),
        },
    ]
    if as_json:
        print_json({"selected": settings.engine, "engines": rows})
        return
    for row in rows:
        available = pad(_("yes") if row["available"] else _("no"), 4)
        formats = _(str(row["formats"]))
        typer.echo(f"{row['engine']:13} {available} {formats}")
    typer.echo(_("choice: {engine} (INTERNLOCAL_ENGINE)").format(engine=settings.engine))


@app.command(
    "install",
    help=_(
        "Install a tool apart from internlocal's packages: LMDeploy into its own virtual environment (its pins\n"
        "conflict with ours), or the HF→GGUF converter into its own folder (it bundles a newer gguf)."
    ),
)
def install(
    name: Annotated[str, typer.Argument(help=_("lmdeploy (NVIDIA GPUs) or converter (llama.cpp's HF→GGUF converter)"))],
    dry_run: Annotated[bool, typer.Option("--dry-run", help=_("Print the commands instead of running them."))] = False,
) -> None:
    from internlocal.config import load_settings
    from internlocal.envs import converter_install_commands, lmdeploy_install_commands
    from internlocal.errors import UserError

    home = load_settings().home
    if name == "lmdeploy":
        commands, failed = (
            lmdeploy_install_commands(home),
            _("Installing LMDeploy failed (it needs Linux x86-64 with CUDA)"),
        )
    elif name == "converter":
        commands, failed = converter_install_commands(home), _("Installing the HF→GGUF converter failed")
    else:
        raise UserError(_("{name!r} is not installed this way; name lmdeploy or converter.").format(name=name))
    for command in commands:
        typer.echo(" ".join(command))
        if not dry_run and subprocess.run(command).returncode != 0:
            raise UserError(_("{failed}; see the output above.").format(failed=failed))
