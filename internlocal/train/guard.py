"""The forgetting guard: after a finetune, the base and the result measured on general tasks, side by side.

A run that learns the user's facts can lose what the base knew (world capitals, plain English).
The guard evaluates the model the user chats with before (the recipe's base, as it is in the
catalog) and after (the quantized GGUF when the run makes one) on the recipe's guard tasks — by
default built-in tasks the embedded model does well on — through the evaluation job's own code, so
both land on the leaderboard and the base's answers come from the request cache after the first run.
A fall beyond the recipe's thresholds is a warning that names the knobs to turn.
"""

from __future__ import annotations

import math
from typing import Any

from internlocal.i18n import _
from internlocal.jobs.context import JobContext
from internlocal.train.recipe import Recipe

LOWER_IS_BETTER = ("perplexity", "bits_per_byte")


def lower_is_better(metric: str) -> bool:
    return any(word in metric for word in LOWER_IS_BETTER)


def run_guard(ctx: JobContext, recipe: Recipe, result_model: str | None) -> dict[str, Any]:
    """Measure the base and ``result_model`` on the guard's tasks; the comparison, and a warning when the result
    lost more than the recipe allows."""
    guard = recipe.guard
    if not guard.enabled:
        return {"enabled": False, "note": _("the recipe switches the forgetting guard off (guard.enabled: false)")}
    if recipe.method == "pretrain" and recipe.init == "scratch":
        return {"enabled": False, "note": _("a model trained from scratch has no base to compare with")}
    if result_model is None:
        return {"enabled": False, "note": _("the run made no merged model to measure (export.merge: false)")}
    # here, not at the top: the Train screen and the CLI import this module for guard_summary / guard_lines only
    from internlocal.evals.job import evaluate_model
    from internlocal.evals.tasks import get_task

    catalog, settings = ctx.catalog, ctx.settings
    base = catalog.find_model(recipe.model)
    if base is None:
        return {"enabled": False, "note": f"the base {recipe.model} is no longer in the catalog"}
    tasks = [get_task(t, settings.home) for t in guard.tasks]
    ctx.log(f"forgetting guard: {base.name} and {result_model} on {', '.join(t.name for t in tasks)}")
    scores = {}
    for number, row in enumerate((base, catalog.get_model(result_model))):
        scores[row.name] = evaluate_model(
            ctx,
            catalog,
            settings,
            row,
            tasks,
            guard.limit,
            seed=1234,
            done_before=number * len(tasks),
            total=2 * len(tasks),
        )
    checks = []
    for task in tasks:
        before, after = scores[base.name][task.name], scores[result_model][task.name]
        metric = next(k for k in before if k not in ("run", "skipped"))  # the task's primary metric comes first
        b, a = float(before[metric]), float(after[metric])
        if math.isnan(a) or math.isnan(b):  # every item skipped: nothing to compare, which is not "kept"
            checks.append({"task": task.name, "metric": metric, "base": b, "result": a, "change": 0.0, "worse": True})
            continue
        if lower_is_better(metric):
            change = (a - b) / b if b else 0.0
            worse = change > guard.max_perplexity_rise
        else:
            change = a - b
            worse = -change > guard.max_drop
        checks.append({"task": task.name, "metric": metric, "base": b, "result": a, "change": change, "worse": worse})
    result = {
        "enabled": True,
        "base_model": base.name,
        "result_model": result_model,
        "tasks": checks,
        "warning": warning(checks, recipe),
        "knobs": knobs(recipe) if any(c["worse"] for c in checks) else [],
    }
    for line in guard_lines(result):
        ctx.log(line)
    return result


def warning(checks: list[dict[str, Any]], recipe: Recipe) -> str | None:
    """One sentence naming what was lost and the knobs that keep it, or None."""
    lost = [c for c in checks if c["worse"]]
    if not lost:
        return None
    what = "; ".join(f"{c['task']} {c['metric']} {_value(c['base'])} → {_value(c['result'])}" for c in lost)
    g = recipe.guard
    first, *gentler = knobs(recipe)
    if recipe.objective == "orpo":  # no replay (pairs), no reference to stay near: only gentler training
        advice = _("Train more gently ({first} or {second}).").format(first=first, second=gentler[0])
    elif recipe.objective == "dpo":
        advice = _("Train more gently ({first} or {second}) or stay closer to the base ({closer}).").format(
            first=gentler[0], second=gentler[1], closer=first
        )
    else:
        advice = _(
            "Train more gently ({first} or {second}) or mix in general examples the base answered ({replay})."
        ).format(first=gentler[0], second=gentler[1], replay=first)
    return _(
        "The finetune lost general ability: {what} (limits: a fall of {drop} in score, "
        "a rise of {rise} in perplexity). {advice}"
    ).format(what=what, drop=f"{g.max_drop:g}", rise=f"{g.max_perplexity_rise:.0%}", advice=advice)


def knobs(recipe: Recipe) -> list[str]:
    """The overrides to try, most effective first: more replay (SFT; DPO: a higher beta, which keeps the policy
    nearer its reference; replay does not apply to pairs), fewer epochs, a lower learning rate."""
    gentler = [f"epochs={max(1, round(recipe.epochs / 2, 2)):g}", f"lr={recipe.lr / 2:.1e}"]
    if recipe.objective == "dpo":
        return [f"beta={recipe.beta * 2:g}", *gentler]
    if recipe.objective == "orpo":
        return gentler
    # three replay examples per example kept the capitals of a 14-fact run (docs/benchmarks.md); one did not
    ratio = 3 if recipe.replay.ratio == 0 else min(8, round(recipe.replay.ratio * 2, 2))  # 8: the setting's bound
    return [f"replay.ratio={ratio:g}", *gentler]


def guard_lines(guard: dict[str, Any]) -> list[str]:
    """The guard's outcome for people: a heading, one line per task (before → after), the warning."""
    if not guard:
        return []
    if not guard.get("enabled"):
        return [_("forgetting guard: off — {note}").format(note=guard.get("note", ""))]
    lines = [
        _("forgetting guard: {base} (base) → {result}").format(base=guard["base_model"], result=guard["result_model"])
    ]
    for c in guard["tasks"]:
        change = f"{c['change']:+.0%}" if lower_is_better(c["metric"]) else f"{c['change']:+.2f}"
        mark = _("✗ worse") if c["worse"] else _("✓ kept")
        lines.append(f"  {c['task']} {c['metric']}: {_value(c['base'])} → {_value(c['result'])} ({change}) {mark}")
    if guard.get("warning"):
        lines.append(_("warning: {warning}").format(warning=guard["warning"]))
    return lines


def guard_summary(guard: dict[str, Any]) -> tuple[str, str | None]:
    """The guard's outcome in one line (for the Train screen), and its warning in short."""
    if not guard:
        return "", None
    if not guard.get("enabled"):
        return _("forgetting guard off: {note}").format(note=guard.get("note", "")), None
    checks = " · ".join(
        f"{c['task']} {_value(c['base'])} → {_value(c['result'])} {'✗' if c['worse'] else '✓'}" for c in guard["tasks"]
    )
    said = guard.get("warning")
    if said and guard.get("knobs"):  # the whole sentence is in the CLI's output and the run's log
        said = _("lost general ability: try {knobs}").format(knobs=_(" or ").join(guard["knobs"]))
    return _("forgetting guard vs {base}: {checks}").format(base=guard["base_model"], checks=checks), said


def _value(v: float) -> str:
    return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
