"""Running a task against an engine: requests, the request cache, metrics, bootstrap standard errors.

- multiple_choice: log P(delimiter + choice | few-shot + prompt) per choice, from the engine's
  logits; ``acc`` (argmax) and ``acc_norm`` (argmax of log-likelihood per character of the choice).
- generate_until: greedy generation to the stop strings, optional regex extraction, ``exact_match``.
- perplexity: rolling log-likelihood of each text; token, word and byte perplexity, bits per byte.

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
from internlocal.evals.tasks import Task

BATCH = 32


@dataclass
class Outcome:
    metrics: dict[str, float]
    stderr: dict[str, float]
    items: list[dict[str, Any]] = field(default_factory=list)
    skipped: int = 0
    requests: int = 0
    cached: int = 0


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


def evaluate(engine: Engine, task: Task, cache: RequestCache, *, limit: int | None = None,
             progress: Callable[[int, int], None] = lambda done, total: None,
             check_cancelled: Callable[[], None] = lambda: None, seed: int = 1234) -> Outcome:
    docs = task.docs[:limit] if limit else task.docs
    if task.output_type == "multiple_choice":
        return _multiple_choice(engine, task, docs, cache, progress, check_cancelled, seed)
    if task.output_type == "generate_until":
        return _generate(engine, task, docs, cache, progress, check_cancelled, seed)
    return _perplexity(engine, task, docs, cache, progress, check_cancelled)


def _token_counts(engine: Engine, cache: RequestCache, texts: list[str], add_special: bool) -> list[int]:
    """Token counts, cached like answers: a re-run whose answers are all cached needs no tokenizer either."""
    keys = [cache.key(["tokens", t, add_special]) for t in texts]
    known = cache.get(list(dict.fromkeys(keys)))
    fresh = {}
    for key, text in zip(keys, texts):
        if key not in known and key not in fresh:
            fresh[key] = len(engine.tokenize(text, add_special=add_special))
    cache.put(fresh)
    known.update(fresh)
    return [known[k] for k in keys]


def _fitting(engine: Engine, cache: RequestCache, texts: list[str]) -> list[bool]:
    """Which prompts fit the context (an over-long one is skipped and counted, not truncated)."""
    if Capability.TOKENIZE not in engine.capabilities or not engine.context_length:
        return [True] * len(texts)  # a remote endpoint: it reports an over-long prompt itself
    return [n < engine.context_length for n in _token_counts(engine, cache, texts, add_special=True)]


def _multiple_choice(engine, task, docs, cache, progress, check_cancelled, seed) -> Outcome:
    candidates = []  # (doc index, gold, choices, [(context, continuation)])
    for i, doc in enumerate(docs):
        context = task.fewshot_prefix(i) + task.text(doc)
        choices = task.choices(doc)
        requests = [(context, task.target_delimiter + c) for c in choices]
        candidates.append((i, task.gold_index(doc, i), choices, requests))
    longest = [p[3][0][0] + max(p[3], key=lambda r: len(r[1]))[1] for p in candidates]
    fits = _fitting(engine, cache, longest)
    plans = [p for p, ok in zip(candidates, fits) if ok]
    skipped = [p[0] for p, ok in zip(candidates, fits) if not ok]
    answers = _loglikelihoods(engine, [r for p in plans for r in p[3]], cache, progress, check_cancelled)
    items, correct, correct_norm = [], [], []
    at = 0
    for i, gold, choices, requests in plans:
        lls = [answers[at + k][0] for k in range(len(requests))]
        at += len(requests)
        pred = max(range(len(lls)), key=lambda k: lls[k])
        norm = [ll / max(1, len(c)) for ll, c in zip(lls, choices)]
        pred_norm = max(range(len(norm)), key=lambda k: norm[k])
        correct.append(pred == gold)
        correct_norm.append(pred_norm == gold)
        items.append({"idx": i, "prompt": requests[0][0], "target": choices[gold], "response": choices[pred],
                      "scores": {"loglikelihoods": lls, "acc": float(pred == gold), "acc_norm": float(pred_norm == gold)}})
    metrics = {"acc": _mean(correct), "acc_norm": _mean(correct_norm)}
    stderr = {"acc": _bootstrap(correct, seed), "acc_norm": _bootstrap(correct_norm, seed)}
    return Outcome(metrics, stderr, items, len(skipped), *answers.stats)


class _Answers(list):
    stats: tuple[int, int] = (0, 0)


def _loglikelihoods(engine, requests, cache: RequestCache, progress, check_cancelled) -> _Answers:
    keys = [cache.key(["ll", c, x]) for c, x in requests]
    known = cache.get(keys)
    todo = [i for i, k in enumerate(keys) if k not in known]
    total, done = len(requests), len(requests) - len(todo)
    progress(done, total)
    for start in range(0, len(todo), BATCH):
        check_cancelled()
        chunk = todo[start:start + BATCH]
        results = engine.loglikelihood([requests[i] for i in chunk])
        fresh = {keys[i]: [r.logprob, r.is_greedy] for i, r in zip(chunk, results)}
        cache.put(fresh)  # saved per batch: a crash loses at most one batch
        known.update(fresh)
        done += len(chunk)
        progress(done, total)
    out = _Answers(known[k] for k in keys)
    out.stats = (total, total - len(todo))
    return out


def _generate(engine, task, docs, cache, progress, check_cancelled, seed) -> Outcome:
    import re

    params = GenerationParams.greedy(max_tokens=task.max_tokens, stop=task.until)
    items, scores, skipped, cached = [], [], 0, 0
    progress(0, len(docs))
    prompts = [task.fewshot_prefix(i) + task.text(doc) for i, doc in enumerate(docs)]
    fits = _fitting(engine, cache, prompts)
    for i, doc in enumerate(docs):
        check_cancelled()
        prompt = prompts[i]
        target = task.target(doc)
        if not fits[i]:
            skipped += 1
            continue
        key = cache.key(["gen", prompt, params.model_dump(), task.apply_chat_template])
        hit = cache.get([key]).get(key)
        if hit is None:
            generation = (engine.chat([{"role": "user", "content": prompt}], params) if task.apply_chat_template
                          else engine.complete(prompt, params))
            hit = generation.collect().text
            cache.put({key: hit})
        else:
            cached += 1
        answer = hit
        if task.filter is not None:
            match = re.search(task.filter.regex, answer)
            answer = match.group(task.filter.group) if match else ""
        ok = answer.strip() == target.strip()
        scores.append(ok)
        items.append({"idx": i, "prompt": prompt, "target": target, "response": hit,
                      "scores": {"exact_match": float(ok), "extracted": answer.strip()}})
        progress(i + 1, len(docs))
    return Outcome({"exact_match": _mean(scores)}, {"exact_match": _bootstrap(scores, seed)}, items, skipped,
                   len(docs) - skipped, cached)


def _perplexity(engine, task, docs, cache, progress, check_cancelled) -> Outcome:
    texts = [task.text(doc) for doc in docs]
    keys = [cache.key(["rolling", t]) for t in texts]
    known = cache.get(keys)
    items = []
    total_ll = total_tokens = total_words = total_bytes = 0.0
    cached = sum(1 for k in keys if k in known)
    can_tokenize = Capability.TOKENIZE in engine.capabilities  # a remote endpoint cannot: no token perplexity
    counts = _token_counts(engine, cache, texts, add_special=False) if can_tokenize else [0] * len(texts)
    for i, (text, key) in enumerate(zip(texts, keys)):
        check_cancelled()
        if key not in known:
            known[key] = engine.loglikelihood_rolling([text])[0]
            cache.put({key: known[key]})
        ll = known[key]
        tokens = counts[i]
        words, nbytes = len(text.split()), len(text.encode("utf-8"))
        total_ll += ll
        total_tokens += tokens
        total_words += words
        total_bytes += nbytes
        items.append({"idx": i, "prompt": text[:200], "target": None, "response": None,
                      "scores": {"loglikelihood": ll, "tokens": tokens, "words": words, "bytes": nbytes}})
        progress(i + 1, len(texts))
    metrics = {
        **({"token_perplexity": math.exp(-total_ll / max(1, total_tokens))} if can_tokenize else {}),
        "word_perplexity": math.exp(-total_ll / max(1, total_words)),
        "byte_perplexity": math.exp(-total_ll / max(1, total_bytes)),
        "bits_per_byte": -total_ll / max(1, total_bytes) / math.log(2),
    }
    return Outcome(metrics, {}, items, 0, len(texts), cached)


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
