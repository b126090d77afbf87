"""Replay against forgetting: general examples the base model itself answered, mixed into the training data.

Self-distillation: the prompts come from a bundled general prompt set (``recipes/data/general_prompts.jsonl``,
none of them in the guard's tasks), the answers from the base the user chats with, greedy, once —
they are kept in the catalog's request cache under the base's sha256, so later runs reuse them.
Training on them pulls the finetuned model back towards what the base said on everything but the
user's data. Answers cut off by ``max_tokens`` are left out (they would teach stopping mid-sentence).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from internlocal.catalog.schema import Model
from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.jobs.context import JobContext
from internlocal.train.recipe import Recipe, recipes_dir


def replay_prompts(recipe: Recipe) -> tuple[Path, list[str]]:
    """The replay prompt file (relative to the recipes folder, or a path) and its prompts."""
    path = Path(recipe.replay.prompts).expanduser()
    if not path.is_absolute():
        path = recipes_dir() / path
    if not path.is_file():
        raise UserError(
            _("Replay prompts {prompts!r} not found (looked for {path}).").format(
                prompts=recipe.replay.prompts, path=path
            )
        )
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            prompt = json.loads(line)["prompt"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(
                _('{path} line {number}: expected {{"prompt": "…"}}.').format(path=path, number=number)
            ) from None
        if not isinstance(prompt, str) or not prompt.strip():
            raise UserError(_("{path} line {number}: the prompt is empty.").format(path=path, number=number))
        prompts.append(prompt)
    if not prompts:
        raise UserError(_("{path} holds no prompts.").format(path=path))
    return path, prompts


def base_answers(ctx: JobContext, base: Model, prompts: list[str], max_tokens: int) -> dict[str, str | None]:
    """prompt → the base's greedy answer (None when it ran into ``max_tokens``), generated once per base."""
    from internlocal.engines.base import GenerationParams
    from internlocal.engines.loader import choose_engine, load_engine
    from internlocal.evals.runner import RequestCache

    # what changes an answer: the weights, the engine, the chat template, the context
    identity = ["replay", base.sha256 or base.path, choose_engine(base, ctx.settings), base.chat_template]
    cache = RequestCache(ctx.catalog, json.dumps([*identity, ctx.settings.context_length]))
    keys = {p: cache.key([p, max_tokens]) for p in prompts}
    known = cache.get(list(keys.values()))
    missing = [p for p in prompts if keys[p] not in known]
    if missing:
        ctx.log(f"replay: {base.name} answers {len(missing)} general prompts (once; kept for later runs)")
        engine = load_engine(base, ctx.settings)
        try:
            for number, prompt in enumerate(missing):
                ctx.check_cancelled()
                ctx.progress(number, len(missing), unit="prompts", message=f"replay: {base.name} answering")
                messages = [{"role": "user", "content": prompt}]
                # the base model's answers as they are (one that runs to max_tokens is dropped below)
                params = GenerationParams.greedy(max_tokens=max_tokens, stop_on_repetition=False)
                result = engine.chat(messages, params).collect()
                answer = result.text.strip() if result.finish_reason != "length" and result.text.strip() else None
                known[keys[prompt]] = answer
                cache.put({keys[prompt]: answer})
        finally:
            engine.close()
    return {p: known[keys[p]] for p in prompts}


def mix_replay(
    ctx: JobContext, recipe: Recipe, base: Model, train_file: Path, run_dir: Path
) -> tuple[Path, dict[str, Any]]:
    """``run_dir/train_with_replay.jsonl``: the dataset's training rows plus ``replay.ratio`` times as many replay
    examples (prompts reused in a seeded order when the set is smaller), shuffled; and what was mixed in."""
    rows = [line for line in train_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    path, prompts = replay_prompts(recipe)
    answers = base_answers(ctx, base, prompts, recipe.replay.max_tokens)
    usable = [(p, a) for p, a in answers.items() if a]
    if not usable:
        raise UserError(
            _("{base} answered none of the replay prompts in {path} within replay.max_tokens.").format(
                base=base.name, path=path
            )
        )
    wanted = round(len(rows) * recipe.replay.ratio)
    rng = random.Random(recipe.seed)
    order: list[tuple[str, str]] = []
    while len(order) < wanted:
        batch = list(usable)
        rng.shuffle(batch)
        order += batch[: wanted - len(order)]
    replay = [
        json.dumps(
            {"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}]}, ensure_ascii=False
        )
        for p, a in order
    ]
    mixed = rows + replay
    rng.shuffle(mixed)
    out = run_dir / "train_with_replay.jsonl"
    out.write_text("".join(line + "\n" for line in mixed), encoding="utf-8")
    info = {
        "examples": len(replay),
        "distinct_prompts": len({p for p, __ in order}),
        "ratio": recipe.replay.ratio,
        "prompts": str(path),
        "answered_by": base.name,
        "left_out": len(answers) - len(usable),
    }
    ctx.log(f"replay: {len(replay)} general examples answered by {base.name} mixed into {len(rows)} training examples")
    return out, info
