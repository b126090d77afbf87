"""Running a task against an engine: requests, the request cache, metrics, bootstrap standard errors.

- multiple_choice: log P(delimiter + choice | few-shot + prompt) per choice, from the engine's
  logits; ``acc`` (argmax) and ``acc_norm`` (argmax of log-likelihood per character of the choice).
- generate_until: greedy generation to the stop strings, optional regex extraction, ``exact_match``.
- perplexity: rolling log-likelihood of each text; token, word and byte perplexity, bits per byte.
- loglikelihood: log P(delimiter + target | prompt); ``acc`` (the target is the greedy continuation) and
  ``perplexity`` (exp of the negative mean log-likelihood), as lm-evaluation-harness scores them.

CircularEval (``circular=True``, lettered multiple choice): each question is asked once per rotation of
its options; ``circular_acc`` counts a question only if every rotation is answered right. Rows with a
``subject`` get per-subject (and, for MMLU, C-Eval and CMMLU, per-category) scores in ``breakdown``.

Every request's answer (and every token count) is cached in the catalog under a key made of the
model's sha256, engine, context length and the request itself, so a re-run (or a run resumed after
a crash) asks the model only what it has not answered yet, and totals come out identical; a re-run
that changes only how answers are scored (an extraction regex, a metric) needs no model at all.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from internlocal.engines.base import Capability, Engine, GenerationParams
from internlocal.errors import ContextOverflow, UserError
from internlocal.evals.tasks import Task
from internlocal.i18n import _

BATCH = 32


@dataclass
class Outcome:
    metrics: dict[str, float]
    stderr: dict[str, float]
    items: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    requests: int = 0
    cached: int = 0
    breakdown: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)  # subjects/categories → scores


class RequestCache:
    """Catalog-backed cache of request → answer, namespaced by model identity."""

    def __init__(self, catalog, namespace: str):
        self.catalog, self.namespace = catalog, namespace

    def key(self, request: Any) -> str:
        return hashlib.sha256(json.dumps([self.namespace, request], ensure_ascii=False).encode()).hexdigest()

    def get(self, keys: list[str]) -> dict[str, Any]:
        return self.catalog.cache_get(keys) if self.catalog is not None else {}

    def put(self, values: dict[str, Any]) -> None:
        if self.catalog is not None and values:
            self.catalog.cache_put(values)


def evaluate(
    engine: Engine,
    task: Task,
    cache: RequestCache,
    *,
    limit: int | None = None,
    progress: Callable[[int, int], None] = lambda done, total: None,
    check_cancelled: Callable[[], None] = lambda: None,
    seed: int = 1234,
    circular: bool = False,
) -> Outcome:
    docs = task.docs[:limit] if limit else task.docs
    if circular and task.output_type != "multiple_choice":
        raise UserError(
            _("CircularEval is for lettered multiple choice; task {name} is {output_type}.").format(
                name=task.name, output_type=task.output_type
            )
        )
    if task.output_type == "multiple_choice":
        outcome = _multiple_choice(engine, task, docs, cache, progress, check_cancelled, seed, circular)
    elif task.output_type == "generate_until":
        outcome = _generate(engine, task, docs, cache, progress, check_cancelled, seed)
    elif task.output_type == "loglikelihood":
        outcome = _loglikelihood_task(engine, task, docs, cache, progress, check_cancelled, seed)
    else:
        outcome = _perplexity(engine, task, docs, cache, progress, check_cancelled, seed)
    wanted = task.metric_names
    if (
        wanted is not None
    ):  # the task file's metric_list: only what it asks for (CircularEval's score is asked by the run)
        keep = [k for k in outcome.metrics if k.split(",")[0] in wanted or k == "circular_acc"]
        outcome.metrics = {k: outcome.metrics[k] for k in keep}
        outcome.stderr = {k: outcome.stderr[k] for k in keep if k in outcome.stderr}
    outcome.breakdown = breakdown(task, docs, outcome.items, list(outcome.metrics))
    return outcome


def breakdown(task: Task, docs: list[dict[str, Any]], items: list[dict[str, Any]], metrics: list[str]) -> dict:
    """Scores per subject (rows with a ``subject`` field) and per category of the benchmark's standard map:
    {"subjects": {subject: {metric: mean, "n": items}}, "categories": {…}}; {} for a task without subjects."""
    from internlocal.evals.categories import benchmark_of, categories_of

    if not docs or "subject" not in docs[0]:
        return {}
    benchmark = benchmark_of(task.version, task.name)
    groups: dict[str, dict[str, dict[str, list[float]]]] = {"subjects": {}, "categories": {}}
    per_item = [m for m in metrics if m in ("acc", "acc_norm", "circular_acc") or m.startswith("exact_match")]
    for item in items:
        scores = item["scores"]
        if "skipped" in scores:
            continue
        subject = str(docs[item["idx"]].get("subject", ""))
        for kind, name in [("subjects", subject)] + [("categories", c) for c in categories_of(benchmark, subject)]:
            bucket = groups[kind].setdefault(name, {})
            for metric in per_item:
                if metric in scores:
                    bucket.setdefault(metric, []).append(float(scores[metric]))
    return {
        kind: {
            name: {**{m: sum(v) / len(v) for m, v in values.items()}, "n": max(map(len, values.values()), default=0)}
            for name, values in sorted(named.items())
        }
        for kind, named in groups.items()
        if named
    }


def token_counts(engine: Engine, cache: RequestCache, texts: list[str], add_special: bool) -> list[int]:
    """Token counts, cached like answers: a re-run whose answers are all cached needs no tokenizer either."""
    keys = [cache.key(["tokens", t, add_special]) for t in texts]
    known = cache.get(list(dict.fromkeys(keys)))
    fresh = {}
    for key, text in zip(keys, texts, strict=True):
        if key not in known and key not in fresh:
            fresh[key] = len(engine.tokenize(text, add_special=add_special))
    cache.put(fresh)
    known.update(fresh)
    return [known[k] for k in keys]


def generation_key(cache: RequestCache, prompt: str, params: GenerationParams, chat: bool) -> str:
    """The cache key of a greedy generation: the prompt, every generation setting, and whether it went through the
    chat template (NeedleBench asks through the same key, so its answers are shared with generation tasks)."""
    return cache.key(["gen", prompt, params.model_dump(), chat])


def _overflows(engine: Engine, cache: RequestCache, texts: list[str]) -> list[str | None]:
    """Why each prompt cannot be asked (too long for the context), or None. An over-long prompt is
    skipped and reported with its item, never truncated: a truncated question scores something else."""
    if Capability.TOKENIZE not in engine.capabilities or not engine.context_length:
        return [None] * len(texts)  # a remote endpoint: it reports an over-long prompt itself (ContextOverflow)
    return [
        f"the prompt has {n} tokens; the context holds {engine.context_length}" if n >= engine.context_length else None
        for n in token_counts(engine, cache, texts, add_special=True)
    ]


def _skipped_item(idx: int, prompt: str, target: str | None, reason: str | None) -> dict[str, Any]:
    return {"idx": idx, "prompt": prompt, "target": target, "response": None, "scores": {"skipped": reason}}


def score_choices(loglikelihoods: list[float], choices: list[str], gold: int) -> tuple[int, int, bool, bool]:
    """(prediction, length-normalised prediction, acc, acc_norm): argmax of the log-likelihoods, and of
    the log-likelihoods per character of each choice (lm-evaluation-harness's acc_norm)."""
    pred = max(range(len(loglikelihoods)), key=lambda k: loglikelihoods[k])
    norm = [ll / max(1, len(c)) for ll, c in zip(loglikelihoods, choices, strict=True)]
    pred_norm = max(range(len(norm)), key=lambda k: norm[k])
    return pred, pred_norm, pred == gold, pred_norm == gold


def _multiple_choice(engine, task, docs, cache, progress, check_cancelled, seed, circular=False) -> Outcome:
    candidates = []  # (doc index, [(gold, [(context, continuation)]) per rotation], choices)
    for i, doc in enumerate(docs):
        choices, gold = task.choices(doc), task.gold_index(doc, i)
        variants = []
        for shift in range(len(choices) if circular else 1):
            context = task.context(i, task.rotated(doc, shift) if circular else doc)
            if task.apply_chat_template:  # the question as a user turn; choices scored as the assistant's reply
                context = engine.render_chat([{"role": "user", "content": context}])
            variants.append(((gold - shift) % len(choices), [(context, task.target_delimiter + c) for c in choices]))
        candidates.append((i, variants, choices))
    longest = [v[1][0][0] + max(v[1], key=lambda r: len(r[1]))[1] for __, variants, __ in candidates for v in variants]
    overflow = iter(_overflows(engine, cache, longest))
    reasons = {i: next((r for r in [next(overflow) for __ in variants] if r), None) for i, variants, __ in candidates}
    plans = [p for p in candidates if reasons[p[0]] is None]
    requests = [r for __, variants, __ in plans for __, reqs in variants for r in reqs]
    answers = _loglikelihoods(engine, requests, cache, progress, check_cancelled)
    items, correct, correct_norm, circular_ok = [], [], [], []
    at = 0
    for i, variants, choices in plans:
        got = answers[at : at + sum(len(reqs) for __, reqs in variants)]
        at += len(got)
        if any(isinstance(a, str) for a in got):  # the endpoint refused a request as too long
            reasons[i] = next(a for a in got if isinstance(a, str))
            continue
        rounds = [got[k * len(choices) : (k + 1) * len(choices)] for k in range(len(variants))]
        picks = [
            score_choices([a[0] for a in r], choices, gold) for r, (gold, __) in zip(rounds, variants, strict=True)
        ]
        pred, __, ok, ok_norm = picks[0]
        gold = variants[0][0]
        correct.append(ok)
        correct_norm.append(ok_norm)
        scores: dict[str, Any] = {
            "loglikelihoods": [a[0] for a in rounds[0]],
            "acc": float(ok),
            "acc_norm": float(ok_norm),
        }
        if circular:
            circular_ok.append(all(p[2] for p in picks))
            scores["circular_acc"] = float(circular_ok[-1])
            scores["rotations"] = [choices[p[0]] for p in picks]  # the letter picked in each rotation
        items.append(
            {
                "idx": i,
                "prompt": variants[0][1][0][0],
                "target": choices[gold],
                "response": choices[pred],
                "scores": scores,
            }
        )
    skipped = [
        _skipped_item(i, variants[0][1][0][0], choices[variants[0][0]], reasons[i])
        for i, variants, choices in candidates
        if reasons[i]
    ]
    metrics = {"acc": _mean(correct), "acc_norm": _mean(correct_norm)}
    stderr = {"acc": _bootstrap(correct, seed), "acc_norm": _bootstrap(correct_norm, seed)}
    if circular:
        metrics["circular_acc"], stderr["circular_acc"] = _mean(circular_ok), _bootstrap(circular_ok, seed)
    return Outcome(metrics, stderr, sorted(items + skipped, key=lambda it: it["idx"]), len(skipped), *answers.stats)


def _loglikelihood_task(engine, task, docs, cache, progress, check_cancelled, seed) -> Outcome:
    """One continuation per document (lm-eval's ``loglikelihood``): is it the greedy one, and how likely."""
    requests = [task.loglikelihood_request(i, doc) for i, doc in enumerate(docs)]
    reasons = _overflows(engine, cache, [c + x for c, x in requests])
    todo = [k for k, reason in enumerate(reasons) if reason is None]
    answers = _loglikelihoods(engine, [requests[k] for k in todo], cache, progress, check_cancelled)
    items, greedy, lls = [], [], []
    for k, answer in zip(todo, answers, strict=True):
        if isinstance(answer, str):
            reasons[k] = answer
            continue
        greedy.append(bool(answer[1]))
        lls.append(float(answer[0]))
        items.append(
            {
                "idx": k,
                "prompt": requests[k][0],
                "target": requests[k][1],
                "response": None,
                "scores": {"loglikelihood": answer[0], "acc": float(answer[1])},
            }
        )
    skipped = [_skipped_item(k, requests[k][0], requests[k][1], r) for k, r in enumerate(reasons) if r]
    metrics = {"acc": _mean(greedy), "perplexity": math.exp(-sum(lls) / len(lls)) if lls else float("nan")}
    stderr = {"acc": _bootstrap(greedy, seed)}
    return Outcome(metrics, stderr, sorted(items + skipped, key=lambda it: it["idx"]), len(skipped), *answers.stats)


class _Answers(list):
    stats: tuple[int, int] = (0, 0)


def _loglikelihoods(engine, requests, cache: RequestCache, progress, check_cancelled) -> _Answers:
    """[logprob, is_greedy] per request, or the reason the endpoint refused it (too long; not cached)."""
    keys = [cache.key(["ll", c, x]) for c, x in requests]
    known: dict[str, Any] = cache.get(keys)
    todo = [i for i, k in enumerate(keys) if k not in known]
    total, done = len(requests), len(requests) - len(todo)
    progress(done, total)
    for start in range(0, len(todo), BATCH):
        check_cancelled()
        chunk = todo[start : start + BATCH]
        try:
            results = engine.loglikelihood([requests[i] for i in chunk])
        except ContextOverflow:  # one request of the batch is too long: ask one by one to find which
            results = []
            for i in chunk:
                try:
                    results.extend(engine.loglikelihood([requests[i]]))
                except ContextOverflow as exc:
                    results.append(str(exc))
        fresh = {
            keys[i]: [r.logprob, r.is_greedy] for i, r in zip(chunk, results, strict=True) if not isinstance(r, str)
        }
        cache.put(fresh)  # saved per batch: a crash loses at most one batch
        known.update(fresh)
        known.update({keys[i]: r for i, r in zip(chunk, results, strict=True) if isinstance(r, str)})
        done += len(chunk)
        progress(done, total)
    out = _Answers(known[k] for k in keys)
    out.stats = (total, total - len(todo))
    return out


def _generate(engine, task, docs, cache, progress, check_cancelled, seed) -> Outcome:

    # no repetition stop: scores must agree with lm-eval, which lets every generation run to its limit
    params = GenerationParams.greedy(max_tokens=task.max_tokens, stop=task.until, stop_on_repetition=False)
    items, scores, skipped, cached = [], [], 0, 0
    progress(0, len(docs))
    prompts = [task.context(i, doc) for i, doc in enumerate(docs)]
    reasons = _overflows(engine, cache, prompts)
    for i, doc in enumerate(docs):
        check_cancelled()
        prompt = prompts[i]
        target = task.target(doc)
        key = generation_key(cache, prompt, params, task.apply_chat_template)
        hit = None if reasons[i] else cache.get([key]).get(key)
        if hit is None and not reasons[i]:
            try:
                generation = (
                    engine.chat([{"role": "user", "content": prompt}], params)
                    if task.apply_chat_template
                    else engine.complete(prompt, params)
                )
                hit = generation.collect().text
                cache.put({key: hit})
            except ContextOverflow as exc:
                reasons[i] = str(exc)
        elif hit is not None:
            cached += 1
        if reasons[i]:
            skipped += 1
            items.append(_skipped_item(i, prompt, target, reasons[i]))
            progress(i + 1, len(docs))
            continue
        marks, answer = task.score_generation(hit, doc)
        scores.append(marks)
        items.append(
            {"idx": i, "prompt": prompt, "target": target, "response": hit, "scores": {**marks, "extracted": answer}}
        )
        progress(i + 1, len(docs))
    # the metric names a scored item would have, even when every item was skipped (a row of its own otherwise)
    names = list(scores[0]) if scores else list(task.score_generation("", docs[0])[0]) if docs else ["exact_match"]
    return Outcome(
        {name: _mean([bool(s[name]) for s in scores]) for name in names},
        {name: _bootstrap([bool(s[name]) for s in scores], seed) for name in names},
        items,
        skipped,
        len(docs) - skipped,
        cached,
    )


def _perplexity(engine, task, docs, cache, progress, check_cancelled, seed) -> Outcome:
    texts = [task.rolling_text(doc) for doc in docs]
    keys = [cache.key(["rolling", t]) for t in texts]
    known = cache.get(keys)
    items, per_doc = [], []  # per_doc: (log-likelihood, tokens, words, bytes)
    cached = sum(1 for k in keys if k in known)
    can_tokenize = Capability.TOKENIZE in engine.capabilities  # a remote endpoint cannot: no token perplexity
    counts = token_counts(engine, cache, texts, add_special=False) if can_tokenize else [0] * len(texts)
    for i, (text, key) in enumerate(zip(texts, keys, strict=True)):
        check_cancelled()
        if key not in known:
            try:
                known[key] = engine.loglikelihood_rolling([text])[0]
            except ContextOverflow as exc:  # an endpoint that cannot window a long text itself
                items.append(_skipped_item(i, text[:200], None, str(exc)))
                continue
            cache.put({key: known[key]})
        ll = known[key]
        words, nbytes = task.count_words(text), len(text.encode("utf-8"))
        per_doc.append((ll, counts[i], words, nbytes))
        items.append(
            {
                "idx": i,
                "prompt": text[:200],
                "target": None,
                "response": None,
                "scores": {"loglikelihood": ll, "tokens": counts[i], "words": words, "bytes": nbytes},
            }
        )
        progress(i + 1, len(texts))
    metrics, stderr = _perplexities(per_doc, can_tokenize, seed)
    return Outcome(metrics, stderr, items, len(texts) - len(per_doc), len(texts), cached)


def _perplexities(
    per_doc: list[tuple[float, int, int, int]], can_tokenize: bool, seed: int, rounds: int = 1000
) -> tuple[dict[str, float], dict[str, float]]:
    """Corpus-level perplexities (total log-likelihood over total units) and, by resampling documents
    (seeded), their bootstrap standard errors."""
    import numpy as np

    data = np.asarray(per_doc, dtype=float).reshape(-1, 4)

    def metrics_of(sums) -> dict[str, np.ndarray]:
        ll, tokens, words, nbytes = (sums[..., k] for k in range(4))
        out = {"token_perplexity": np.exp(-ll / np.maximum(1, tokens))} if can_tokenize else {}
        out.update(
            {
                "word_perplexity": np.exp(-ll / np.maximum(1, words)),
                "byte_perplexity": np.exp(-ll / np.maximum(1, nbytes)),
                "bits_per_byte": -ll / np.maximum(1, nbytes) / math.log(2),
            }
        )
        return out

    metrics = {k: float(v) for k, v in metrics_of(data.sum(axis=0)).items()}
    if len(data) < 2:
        return metrics, {k: float("nan") for k in metrics}
    rng = np.random.default_rng(seed)
    resampled = data[rng.integers(0, len(data), size=(rounds, len(data)))].sum(axis=1)
    return metrics, {k: float(v.std(ddof=1)) for k, v in metrics_of(resampled).items()}


def _mean(values: list[bool]) -> float:
    return sum(values) / len(values) if values else float("nan")


def _bootstrap(values: list[bool], seed: int, rounds: int = 1000) -> float:
    """Standard error of the mean by bootstrap resampling (seeded, so results are reproducible)."""
    if len(values) < 2:
        return float("nan")
    import numpy as np

    rng = np.random.default_rng(seed)
    data = np.asarray(values, dtype=float)
    means = data[rng.integers(0, len(data), size=(rounds, len(data)))].mean(axis=1)
    return float(means.std(ddof=1))
