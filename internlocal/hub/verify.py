"""Job: re-hash catalog models and report any whose files changed or went missing.

The built-in job that proves the runner: byte progress with ETA, cancel, and resume (models
already checked are kept in the job state and not hashed again).
"""

from __future__ import annotations

from pathlib import Path

from internlocal.hub.files import path_size, sha256_path
from internlocal.i18n import _
from internlocal.jobs.context import JobContext


def verify_models(ctx: JobContext, names: list[str] | None = None) -> dict[str, str]:
    """Result: model name → ``ok`` | ``changed`` | ``missing`` | ``unhashed``."""
    catalog = ctx.catalog
    models = [catalog.get_model(n) for n in names] if names else catalog.list_models()
    models = [m for m in models if m.format != "remote"]  # an endpoint has no file to hash
    results: dict[str, str] = ctx.state.setdefault("results", {})
    sizes = {m.name: path_size(Path(m.path)) if Path(m.path).exists() else 0 for m in models}
    total = sum(sizes.values())
    done = sum(sizes[name] for name in results if name in sizes)
    ctx.progress(done, total, unit="bytes", message=_("resuming") if results else "")
    for model in models:
        if model.name in results:
            continue
        ctx.check_cancelled()
        path = Path(model.path)
        if not path.exists():
            results[model.name] = "missing"
        elif not model.sha256:
            results[model.name] = "unhashed"
            done += sizes[model.name]
        else:

            def on_bytes(n: int, name: str = model.name) -> None:
                nonlocal done
                done += n
                ctx.progress(done, total, unit="bytes", message=name)
                ctx.check_cancelled()

            results[model.name] = "ok" if sha256_path(path, on_bytes) == model.sha256 else "changed"
        ctx.log(f"{model.name}: {results[model.name]}")
        ctx.save_state()
    ctx.progress(total, total, unit="bytes", message=_("done"))
    return results
