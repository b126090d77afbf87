"""NeedleBench, OpenCompass's needle-in-a-haystack test: can a model find facts hidden in long filler text?

A grid of document lengths (in the model's own tokens) × needle depths (percent of the document). Every cell
hides needles in seeded synthetic filler (`needlebench_text.py`: nothing downloaded) at the sentence boundary
nearest the depth, asks the question through the model's chat template, and scores the answer as OpenCompass does:

- single: one needle; 1 when its keyword occurs in the answer (case-sensitive), else 0;
- multi: N needles spread from the depth to the end; the share of their keywords the answer contains;
- reasoning: N kinship needles that chain; 1 when the last ``\\boxed{…}`` of the answer is exactly the eldest
  relative, else 0.

Answers go through the request cache (the key `runner._generate` uses), so a re-run asks nothing twice; token
counts are cached too, so a re-run of answered cells does not even load the model. A run is stored as one
``eval_run`` (task ``needlebench_<kind>_<lang>``, metric ``score``: the mean over the cells) with an ``eval_item``
per cell; ``load_map`` rebuilds the heat map from it.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import io
import json
import random
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from internlocal.catalog.schema import EvalRun
from internlocal.engines.base import Capability, Engine, GenerationParams
from internlocal.errors import NotFound, UserError
from internlocal.evals.needlebench_text import (
    FACTS,
    KINSHIP,
    MULTI_QUESTION,
    NAMES,
    PROMPTS,
    REASONING_QUESTION,
    SEPARATOR,
    filler_sentences,
)
from internlocal.evals.runner import RequestCache, generation_key, token_counts
from internlocal.i18n import _
from internlocal.jobs.context import JobContext

VERSION = "1"
TASK_PREFIX = "needlebench_"
GROUP = "needlebench"
KINDS = ("single", "multi", "reasoning")
LANGS = ("en", "zh")
DEFAULT_LENGTHS = (256, 512, 1024, 2048)  # a grid a CPU runs in minutes; a GPU model gets --lengths
DEFAULT_DEPTHS = (0, 25, 50, 75, 100)
ANSWER_TOKENS = {"single": 64, "multi": 128, "reasoning": 192}  # the reasoning answer explains before its \boxed{}
# what a chat template adds around the user's message (role tags, a default system prompt like SmolLM2's)
TEMPLATE_ALLOWANCE = 64
MIN_LENGTH = 32


# -- settings -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NeedleSettings:
    """What a NeedleBench run asks; ``lengths`` None is the default grid, clipped to the model's context."""

    kind: str = "single"
    lang: str = "en"
    lengths: tuple[int, ...] | None = None
    depths: tuple[int, ...] = DEFAULT_DEPTHS
    needles: int = 3  # multi and reasoning: how many needles (a reasoning chain links needles + 1 people)
    seed: int = 1234
    max_tokens: int | None = None  # the answer's limit; None: the kind's default

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(_("NeedleBench kind {kind!r}: use single, multi or reasoning.").format(kind=self.kind))
        if self.lang not in LANGS:
            raise UserError(_("NeedleBench language {lang!r}: use en or zh.").format(lang=self.lang))
        if self.lengths is not None:
            if not self.lengths or any(n < MIN_LENGTH for n in self.lengths):
                raise UserError(
                    _("NeedleBench lengths are token counts of at least {min}, like 256,512,1024.").format(
                        min=MIN_LENGTH
                    )
                )
            object.__setattr__(self, "lengths", tuple(sorted(set(self.lengths))))
        if not self.depths or any(not 0 <= d <= 100 for d in self.depths):
            raise UserError(_("NeedleBench depths are percentages from 0 to 100, like 0,25,50,75,100."))
        object.__setattr__(self, "depths", tuple(sorted(set(self.depths))))
        most = len(FACTS[self.lang]) if self.kind == "multi" else len(NAMES[self.lang]) - 1
        if self.kind != "single" and not 1 <= self.needles <= most:
            raise UserError(_("NeedleBench {kind} takes 1 to {most} needles.").format(kind=self.kind, most=most))
        if self.max_tokens is not None and self.max_tokens < 1:
            raise UserError(_("The answer's token limit must be at least 1."))

    @property
    def task(self) -> str:
        return f"{TASK_PREFIX}{self.kind}_{self.lang}"

    @property
    def needle_count(self) -> int:
        return 1 if self.kind == "single" else self.needles

    @property
    def answer_tokens(self) -> int:
        return self.max_tokens or ANSWER_TOKENS[self.kind]

    def prompt_hash(self, lengths: Sequence[int]) -> str:
        """Everything that makes scores comparable: runs with the same hash sit side by side on the leaderboard."""
        spec = [VERSION, self.kind, self.lang, list(lengths), list(self.depths), self.needle_count]
        spec += [self.seed, self.answer_tokens]
        return hashlib.sha256(json.dumps(spec).encode()).hexdigest()[:16]


def parse_numbers(text: str | None, option: str) -> tuple[int, ...] | None:
    """ "256,512,1024" → (256, 512, 1024); None or "" → None (the default)."""
    if not text or not text.strip():
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(
            _("{option}: give whole numbers separated by commas, like 256,512,1024.").format(option=option)
        ) from None


# -- needles and scoring --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Puzzle:
    """One cell's needles, the question about them, and what a right answer holds."""

    needles: tuple[str, ...]
    question: str
    keywords: tuple[str, ...]  # retrieval: words the answer must contain; reasoning: the expected name
    expected: str | None = None  # reasoning: the exact \boxed{} answer


def make_puzzle(kind: str, lang: str, needles: int, rng: random.Random) -> Puzzle:
    if kind == "single":
        fact = rng.choice(FACTS[lang])
        return Puzzle((fact.needle,), fact.question, (fact.keyword,))
    if kind == "multi":
        facts = rng.sample(FACTS[lang], needles)
        questions = "\n".join(f"{number}. {f.question}" for number, f in enumerate(facts, 1))
        question = MULTI_QUESTION[lang].format(questions=questions)
        return Puzzle(tuple(f.needle for f in facts), question, tuple(f.keyword for f in facts))
    return _kinship_puzzle(lang, needles, rng)


def _kinship_puzzle(lang: str, needles: int, rng: random.Random) -> Puzzle:
    """names[0] is the eldest: each needle says one person is the next one's parent or grandparent (shuffled)."""
    templates, relations = KINSHIP[lang]
    names = rng.sample(NAMES[lang], needles + 1)
    links = [
        rng.choice(templates).format(elder=names[i], younger=names[i + 1], relation=rng.choice(relations))
        for i in range(needles)
    ]
    rng.shuffle(links)
    question = REASONING_QUESTION[lang].format(last=names[-1])
    return Puzzle(tuple(links), question, (names[0],), names[0])


def keyword_score(answer: str, keyword: str) -> float:
    """Single-needle retrieval: OpenCompass's test, the keyword anywhere in the answer (case-sensitive)."""
    return 1.0 if keyword in answer else 0.0


def keywords_share(answer: str, keywords: Sequence[str]) -> float:
    """Multi-needle retrieval: the share of the needles' keywords the answer contains."""
    return sum(keyword in answer for keyword in keywords) / len(keywords) if keywords else 0.0


def boxed_answer(text: str) -> str | None:
    """The content of the last \\boxed{…} in ``text`` (braces inside it balanced), cleaned as OpenCompass's
    NeedleBench cleans it before the exact match: doubled braces and ``\\text{…}`` unwrapped, quotes and ``~``
    removed, spaces collapsed. None without one."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, at = 0, start + len("\\boxed")
    for end in range(at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        if depth == 0:
            break
    else:
        return None  # never closed
    inner = text[at + 1 : end].strip()
    while inner.startswith("{") and inner.endswith("}"):
        inner = inner[1:-1].strip()
    inner = re.sub(r"\\text\{([^{}]*)\}", r"\1", inner)
    inner = re.sub(r"[\"'“”‘’`~]", "", inner)
    return re.sub(r"\s+", " ", inner).strip()


def boxed_score(answer: str, expected: str) -> float:
    """Multi-needle reasoning: 1 when the last boxed answer, cleaned, is exactly the expected name."""
    return 1.0 if boxed_answer(answer) == expected.strip() else 0.0


def score_answer(kind: str, puzzle: Puzzle, answer: str) -> float:
    if kind == "reasoning":
        assert puzzle.expected is not None
        return boxed_score(answer, puzzle.expected)
    if kind == "multi":
        return keywords_share(answer, puzzle.keywords)
    return keyword_score(answer, puzzle.keywords[0])


# -- haystacks in the engine's tokens -------------------------------------------------------------------------------


class TokenCounter:
    """Token counts in the engine's tokenizer, cached in the request cache (the runner's key), so a re-run whose
    answers are all cached needs no tokenizer and loads no model."""

    def __init__(self, engine: Engine, cache: RequestCache):
        self._engine, self._cache = engine, cache
        self._known: dict[str, int] = {}

    def counts(self, texts: Sequence[str]) -> list[int]:
        missing = [t for t in dict.fromkeys(texts) if t not in self._known]  # remembered here, then the cache
        if missing:
            counted = token_counts(self._engine, self._cache, missing, add_special=False)
            self._known.update(zip(missing, counted, strict=True))
        return [self._known[t] for t in texts]

    def count(self, text: str) -> int:
        return self.counts([text])[0]


class Haystack:
    """The filler of one language and seed: sentences and their token counts, drawn as far as a length needs.

    Every cell of a run cuts its document from the start of the same filler, as OpenCompass cuts its corpus."""

    DRAW = 64

    def __init__(self, lang: str, seed: int, counter: TokenCounter):
        self.separator = SEPARATOR[lang]
        self.sentences: list[str] = []
        self.tokens: list[int] = []  # each sentence's tokens with the separator before it
        self._source: Iterator[str] = filler_sentences(lang, seed)
        self._counter = counter

    def sentences_within(self, budget: int) -> int:
        """How many sentences from the start fit in ``budget`` tokens."""
        while sum(self.tokens) <= budget:
            drawn = [next(self._source) for __ in range(self.DRAW)]
            self.sentences += drawn
            self.tokens += self._counter.counts([self.separator + s for s in drawn])
        return bisect.bisect_right(list(accumulate(self.tokens)), budget)

    def document(self, kept: int, needles: Sequence[str], depths: Sequence[float]) -> tuple[str, list[int]]:
        """The first ``kept`` sentences with each needle at the boundary nearest its depth (percent of the filler's
        tokens), and the filler tokens before each needle."""
        offsets = list(accumulate(self.tokens[:kept], initial=0))  # offsets[j]: tokens before sentence j
        boundaries = [_nearest(offsets, offsets[-1] * depth / 100) for depth in depths]
        pieces: list[str] = []
        for j in range(kept + 1):
            pieces += [needle for needle, at in zip(needles, boundaries, strict=True) if at == j]
            if j < kept:
                pieces.append(self.sentences[j])
        return self.separator.join(pieces), [offsets[at] for at in boundaries]


def _nearest(offsets: list[int], target: float) -> int:
    """The index of the boundary closest to ``target`` tokens (the earlier one on a tie)."""
    right = bisect.bisect_left(offsets, target)
    if right == 0:
        return 0
    if right == len(offsets):
        return len(offsets) - 1
    return right if offsets[right] - target < target - offsets[right - 1] else right - 1


def needle_depths(kind: str, depth: int, needles: int) -> list[float]:
    """The first needle at ``depth``, the others spread evenly between it and the end of the document."""
    if kind == "single":
        return [float(depth)]
    return [depth + number * (100 - depth) / needles for number in range(needles)]


@dataclass
class Cell:
    length: int
    depth: int
    puzzle: Puzzle
    document: str
    document_tokens: int  # what the engine's tokenizer counts in the document (needles included)
    needle_offsets: list[int]  # filler tokens before each needle
    prompt: str  # the user message: instructions, document, question


def build_cell(settings: NeedleSettings, haystack: Haystack, counter: TokenCounter, length: int, depth: int) -> Cell:
    """The document of ``length`` tokens (at most, and short of it by less than a sentence) with its needles."""
    rng = random.Random(f"needlebench-{settings.kind}-{settings.lang}-{settings.seed}-{length}-{depth}")
    puzzle = make_puzzle(settings.kind, settings.lang, settings.needle_count, rng)
    needle_tokens = sum(counter.counts([haystack.separator + n for n in puzzle.needles]))
    if needle_tokens >= length:
        raise UserError(
            _("Length {length} is too short for the needles ({needle_tokens} tokens); choose longer ones.").format(
                length=length, needle_tokens=needle_tokens
            )
        )
    kept = haystack.sentences_within(length - needle_tokens)
    depths = needle_depths(settings.kind, depth, len(puzzle.needles))
    while True:  # separators can merge into tokens differently in the whole text: measure it, drop a sentence if over
        document, offsets = haystack.document(kept, puzzle.needles, depths)
        size = counter.count(document)
        if size <= length or kept == 0:
            break
        kept -= 1
    prompt = PROMPTS[settings.lang].format(document=document, question=puzzle.question)
    return Cell(length, depth, puzzle, document, size, offsets, prompt)


# -- the grid -------------------------------------------------------------------------------------------------------


def _widest_questions(settings: NeedleSettings) -> list[str]:
    """The longest questions a cell can ask (which one a cell gets depends on the seed)."""
    lang = settings.lang
    if settings.kind == "single":
        return [f.question for f in FACTS[lang]]
    if settings.kind == "multi":
        longest = sorted(FACTS[lang], key=lambda f: len(f.question), reverse=True)[: settings.needles]
        return [
            MULTI_QUESTION[lang].format(questions="\n".join(f"{n}. {f.question}" for n, f in enumerate(longest, 1)))
        ]
    return [REASONING_QUESTION[lang].format(last=max(NAMES[lang], key=len))]


def plan_lengths(settings: NeedleSettings, counter: TokenCounter, context_length: int) -> tuple[list[int], str | None]:
    """The lengths to run, and a note on default lengths left out because they pass the context.

    Lengths the user named that do not fit are refused: a clipped grid would answer another question."""
    prompts = [PROMPTS[settings.lang].format(document="", question=q) for q in _widest_questions(settings)]
    needs = max(counter.counts(prompts)) + TEMPLATE_ALLOWANCE + settings.answer_tokens
    room = context_length - needs
    lengths = list(settings.lengths or DEFAULT_LENGTHS)
    too_long = [n for n in lengths if n > room]
    if settings.lengths is not None and too_long:
        raise UserError(
            _(
                "Length {length} does not fit: the context holds {context_length} tokens and the question and "
                "answer need {needs} of them; use lengths up to {room} or raise context_length."
            ).format(length=too_long[0], context_length=context_length, needs=needs, room=max(room, 0))
        )
    kept = [n for n in lengths if n <= room]
    if not kept:
        raise UserError(
            _(
                "A context of {context_length} tokens leaves no room for NeedleBench's shortest length "
                "({shortest}) with the question and answer ({needs} tokens); raise context_length."
            ).format(context_length=context_length, shortest=lengths[0], needs=needs)
        )
    note = None
    if too_long:
        note = (
            f"length {', '.join(map(str, too_long))} left out: the context holds {context_length} tokens, "
            f"{needs} of them for the question and answer"
        )
    return kept, note


@dataclass
class CellResult:
    length: int
    depth: int
    score: float
    keywords: list[str]
    question: str
    needles: list[str]
    answer: str
    document_tokens: int
    needle_offsets: list[int]
    expected: str | None = None

    def scores(self) -> dict[str, Any]:
        """The ``eval_item`` row's scores_json."""
        out = {"length": self.length, "depth": self.depth, "score": self.score, "keywords": self.keywords}
        out |= {"needles": self.needles, "document_tokens": self.document_tokens, "needle_offsets": self.needle_offsets}
        return out | ({"expected": self.expected} if self.expected is not None else {})


@dataclass
class NeedleMap:
    """Scores by (length, depth), and their exports: rows are depths, columns lengths."""

    task: str
    model: str
    lengths: list[int]
    depths: list[int]
    scores: dict[tuple[int, int], float]
    run: int | None = None
    note: str | None = None

    @property
    def mean(self) -> float:
        return sum(self.scores.values()) / len(self.scores) if self.scores else float("nan")

    def score(self, length: int, depth: int) -> float | None:
        return self.scores.get((length, depth))

    def title(self) -> str:
        run = f" · run {self.run}" if self.run is not None else ""
        return f"{self.task} · {self.model}{run} · mean {self.mean:.3f}"

    def to_text(self) -> str:
        width = max(6, *(len(str(n)) + 1 for n in self.lengths))
        lines = [self.title(), "depth \\ tokens".ljust(16) + "".join(str(n).rjust(width) for n in self.lengths)]
        for depth in self.depths:
            cells = "".join(_cell_text(self.score(n, depth)).rjust(width) for n in self.lengths)
            lines.append(f"{depth} %".ljust(16) + cells)
        return "\n".join(lines + ([f"note: {self.note}"] if self.note else []))

    def to_markdown(self) -> str:
        lines = [
            f"**{self.title()}**",
            "",
            "| depth \\ tokens | " + " | ".join(map(str, self.lengths)) + " |",
            "|---|" + "---:|" * len(self.lengths),
        ]
        for depth in self.depths:
            lines.append(f"| {depth} % | " + " | ".join(_cell_text(self.score(n, depth)) for n in self.lengths) + " |")
        return "\n".join(lines) + "\n"

    def to_csv(self) -> str:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["length", "depth", "score"])
        for length in self.lengths:
            for depth in self.depths:
                value = self.score(length, depth)
                writer.writerow([length, depth, "" if value is None else value])
        return out.getvalue()

    def as_dict(self) -> dict[str, Any]:
        cells = [{"length": n, "depth": d, "score": s} for (n, d), s in sorted(self.scores.items())]
        return {"task": self.task, "model": self.model, "run": self.run, "score": self.mean} | {
            "lengths": self.lengths,
            "depths": self.depths,
            "cells": cells,
            "note": self.note,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, ensure_ascii=False)

    def export(self, fmt: str) -> str:
        """The map as ``text``, ``md``, ``csv`` or ``json``."""
        exports = {"text": self.to_text, "md": self.to_markdown, "csv": self.to_csv, "json": self.to_json}
        if fmt not in exports:
            raise UserError(_("--format {fmt!r}: use text, md, csv or json.").format(fmt=fmt))
        return exports[fmt]()


def _cell_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@dataclass
class NeedleOutcome:
    map: NeedleMap
    cells: list[CellResult] = field(default_factory=list)
    requests: int = 0
    cached: int = 0


Progress = Callable[[int, int, str], None]


def run_grid(
    engine: Engine,
    settings: NeedleSettings,
    cache: RequestCache,
    *,
    model_name: str = "",
    progress: Progress = lambda done, total, message: None,
    check_cancelled: Callable[[], None] = lambda: None,
) -> NeedleOutcome:
    """Every cell of the grid asked (or found in the cache) and scored."""
    if Capability.TOKENIZE not in engine.capabilities or not engine.context_length:
        raise UserError(
            _(
                "NeedleBench measures lengths in the model's own tokens, and {model}'s engine "
                "cannot tokenize; run it on a local model."
            ).format(model=model_name or _("this model"))
        )
    counter = TokenCounter(engine, cache)
    lengths, note = plan_lengths(settings, counter, engine.context_length)
    haystack = Haystack(settings.lang, settings.seed, counter)
    # greedy and no repetition stop, as runner._generate asks (answers comparable with its cache)
    params = GenerationParams.greedy(max_tokens=settings.answer_tokens, stop_on_repetition=False)
    # deepest needle first within a length: consecutive prompts then share the filler up to the next needle, and
    # engines that keep their KV cache across requests (llama.cpp) skip that part of the prompt
    grid = [(length, depth) for length in lengths for depth in reversed(settings.depths)]
    outcome = NeedleOutcome(NeedleMap(settings.task, model_name, lengths, list(settings.depths), {}, note=note))
    progress(0, len(grid), "")
    for done, (length, depth) in enumerate(grid, 1):
        check_cancelled()
        cell = build_cell(settings, haystack, counter, length, depth)
        answer, was_cached = _ask(engine, cache, cell.prompt, params)
        outcome.requests += 1
        outcome.cached += was_cached
        result = _result(settings.kind, cell, answer)
        outcome.cells.append(result)
        outcome.map.scores[(length, depth)] = result.score
        progress(done, len(grid), f"{length} tokens, depth {depth} %")
    outcome.cells.sort(key=lambda cell: (cell.length, cell.depth))
    return outcome


def _ask(engine: Engine, cache: RequestCache, prompt: str, params: GenerationParams) -> tuple[str, bool]:
    """The answer to ``prompt`` as a user turn, and whether it came from the cache."""
    key = generation_key(cache, prompt, params, chat=True)
    hit = cache.get([key]).get(key)
    if hit is not None:
        return hit, True
    answer = engine.chat([{"role": "user", "content": prompt}], params).collect().text
    cache.put({key: answer})
    return answer, False


def _result(kind: str, cell: Cell, answer: str) -> CellResult:
    puzzle = cell.puzzle
    return CellResult(
        cell.length,
        cell.depth,
        score_answer(kind, puzzle, answer),
        list(puzzle.keywords),
        puzzle.question,
        list(puzzle.needles),
        answer,
        cell.document_tokens,
        cell.needle_offsets,
        puzzle.expected,
    )


# -- the catalog ----------------------------------------------------------------------------------------------------


def is_needlebench(task: str) -> bool:
    return task.startswith(TASK_PREFIX)


def store_run(
    catalog,
    outcome: NeedleOutcome,
    settings: NeedleSettings,
    row,
    *,
    engine_name: str | None = None,
    template_hash: str | None = None,
    job_id: int | None = None,
) -> EvalRun:
    """One ``eval_run`` (metric ``score``, the mean over the cells) with an ``eval_item`` per cell, and the lineage
    model → run; the document itself is not stored (the seed makes it again)."""
    lengths = outcome.map.lengths
    config: dict[str, Any] = {
        "limit": None,  # the leaderboard's like-for-like key: a grid is never a smoke run of another
        "seed": settings.seed,
        "group": GROUP,
        "kind": settings.kind,
        "lang": settings.lang,
        "lengths": lengths,
        "depths": list(settings.depths),
        "needles": settings.needle_count,
        "max_tokens": settings.answer_tokens,
        "requests": outcome.requests,
        "cached": outcome.cached,
        "note": outcome.map.note,
    }
    from internlocal.evals.job import record_run

    run = record_run(
        catalog,
        row,
        [
            {
                "idx": number,
                "prompt": cell.question,
                "target": ", ".join(cell.keywords),
                "response": cell.answer,
                "scores": cell.scores(),
            }
            for number, cell in enumerate(outcome.cells)
        ],
        engine=engine_name,
        task=settings.task,
        task_version=VERSION,
        prompt_hash=settings.prompt_hash(lengths),
        chat_template_hash=template_hash,
        metrics_json=json.dumps({"score": outcome.map.mean}),
        config_json=json.dumps(config),
        job_id=job_id,
    )
    outcome.map.run = run.id
    return run


def needlebench_runs(catalog, model: str | None = None) -> list[EvalRun]:
    """Stored NeedleBench runs, oldest first."""
    return [run for run in catalog.eval_runs(model=model) if is_needlebench(run.task)]


def load_map(catalog, run_id: int) -> NeedleMap:
    """The heat map of a stored NeedleBench run."""
    run = next((r for r in catalog.eval_runs() if r.id == run_id), None)
    if run is None or not is_needlebench(run.task):
        raise NotFound(
            _(
                "No NeedleBench run {run_id}; `internlocal eval results --task needlebench_single_en` lists them."
            ).format(run_id=run_id)
        )
    config = json.loads(run.config_json or "{}")
    scores = {}
    for item in catalog.eval_items(run_id):
        cell = json.loads(item.scores_json)
        scores[(int(cell["length"]), int(cell["depth"]))] = float(cell["score"])
    lengths = config.get("lengths") or sorted({n for n, __ in scores})
    depths = config.get("depths") or sorted({d for __, d in scores})
    return NeedleMap(run.task, run.model_name, lengths, depths, scores, run=run.id, note=config.get("note"))


# -- the job --------------------------------------------------------------------------------------------------------


def run_needlebench(
    ctx: JobContext,
    model: str,
    kind: str = "single",
    lang: str = "en",
    lengths: list[int] | None = None,
    depths: list[int] | None = None,
    needles: int = 3,
    seed: int = 1234,
    max_tokens: int | None = None,
) -> dict[str, Any]:
    """The job: ``model`` on the NeedleBench grid, stored as one eval run; progress per cell."""
    from internlocal.engines.loader import choose_engine, load_engine
    from internlocal.evals.job import LazyEngine, cache_namespace

    settings = NeedleSettings(
        kind, lang, tuple(lengths) if lengths else None, tuple(depths or DEFAULT_DEPTHS), needles, seed, max_tokens
    )
    row = ctx.catalog.get_model(model)
    engine_name = choose_engine(row, ctx.settings)
    namespace, template_hash = cache_namespace(row, ctx.settings, engine_name)
    cache = RequestCache(ctx.catalog, namespace)
    engine = LazyEngine(lambda: load_engine(row, ctx.settings), cache)

    def progress(done: int, total: int, message: str) -> None:
        ctx.progress(done, total, unit="cells", message=message)

    try:
        outcome = run_grid(
            engine, settings, cache, model_name=row.name, progress=progress, check_cancelled=ctx.check_cancelled
        )
        if outcome.map.note:
            ctx.log(outcome.map.note)
        run = store_run(
            ctx.catalog, outcome, settings, row, engine_name=engine_name, template_hash=template_hash, job_id=ctx.job_id
        )
        ctx.log(
            f"{row.name} · {settings.task}: mean {outcome.map.mean:.3f} ({outcome.cached}/{outcome.requests} cached)"
        )
        if not engine.is_loaded:
            ctx.log(f"{row.name}: every answer came from the cache; the model was not loaded")
        return {"run": run.id} | outcome.map.as_dict()
    finally:
        engine.close()
