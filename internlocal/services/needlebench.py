"""NeedleBench actions: start a run of a model on the needle-in-a-haystack grid; read a stored run's heat map."""

from __future__ import annotations

from typing import TYPE_CHECKING

from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.services import Services

if TYPE_CHECKING:
    from internlocal.catalog.schema import Job
    from internlocal.evals.needlebench import NeedleMap


def start_needlebench(
    svc: Services,
    model: str,
    *,
    kind: str = "single",
    lang: str = "en",
    lengths: tuple[int, ...] | None = None,
    depths: tuple[int, ...] | None = None,
    needles: int = 3,
    seed: int = 1234,
) -> Job:
    """Check the settings, the model and whether the named lengths can fit its context now (a typo or a grid too
    long fails here, not in the job), then run the grid as a job (answers are cached)."""
    from internlocal.evals.needlebench import DEFAULT_DEPTHS, TEMPLATE_ALLOWANCE, NeedleSettings, run_needlebench

    settings = NeedleSettings(kind, lang, lengths, depths or DEFAULT_DEPTHS, needles, seed)
    row = svc.catalog.get_model(model)
    if row.kind != "chat":
        raise UserError(
            _("{name} is an {kind} model; NeedleBench asks a chat model.").format(name=row.name, kind=row.kind)
        )
    if row.format == "remote":  # lengths are cut in the model's own tokens, which an endpoint does not count here
        raise UserError(
            _("{name} is a remote model; NeedleBench measures documents in a local model's tokens.").format(
                name=row.name
            )
        )
    context = _context_length(svc, row)
    # the tokenizer's exact count waits for the job; a length past the context alone is refused at once
    too_long = [n for n in settings.lengths or () if n + TEMPLATE_ALLOWANCE + settings.answer_tokens > context]
    if too_long:
        raise UserError(
            _(
                "Length {length} does not fit {name}'s context of {context} tokens with the question and "
                "answer; use shorter lengths or raise context_length."
            ).format(length=too_long[0], name=row.name, context=context)
        )
    params = {
        "model": row.name,
        "kind": settings.kind,
        "lang": settings.lang,
        "lengths": list(settings.lengths) if settings.lengths else None,
        "depths": list(settings.depths),
        "needles": settings.needles,
        "seed": settings.seed,
    }
    return svc.jobs.submit(
        run_needlebench,
        params,
        kind="eval.needlebench",
        title=_("NeedleBench {task} on {name}").format(task=settings.task, name=row.name),
    )


def _context_length(svc: Services, row) -> int:
    """The context the model will be loaded with: the setting, capped by the model's own (remote: its own)."""
    if row.format == "remote":
        return row.context_length or svc.settings.context_length
    return min(svc.settings.context_length, row.context_length or svc.settings.context_length)


def needlebench_map(svc: Services, run_id: int | None = None, model: str | None = None) -> NeedleMap:
    """The heat map of run ``run_id``, or of the newest NeedleBench run (of ``model``, when given)."""
    from internlocal.evals.needlebench import load_map, needlebench_runs

    if run_id is None:
        runs = needlebench_runs(svc.catalog, model)
        if not runs:
            raise UserError(_("No NeedleBench run yet; `internlocal eval needle MODEL` makes one."))
        run_id = runs[-1].id
    return load_map(svc.catalog, run_id)
