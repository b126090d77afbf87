"""Answers from a knowledge base: numbered passages in the prompt, citations [n] that resolve to file and
span, and a refusal before the model is asked when the best passage is too far from the question
(HuixiangDou's design: a similarity threshold fitted on answerable and unanswerable examples).

The sources listed with an answer are the passages it was given, never parsed out of the model's text;
the text's [n] marks only say which of them it cited.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from internlocal.engines.base import Engine, Generation, GenerationParams, GenerationResult, Message
from internlocal.kb.index import Hit, Index

REFUSAL = "The knowledge base has no answer to this question."
SYSTEM = (
    "You answer questions using only the numbered passages you are given. Cite the passage you used like [1]. "
    "If the passages do not contain the answer, say that the knowledge base does not say."
)
_CITE = re.compile(r"\[(\d{1,2})\]")


def sources_of(hits: Sequence[Hit]) -> list[dict[str, Any]]:
    return [{"n": n, **{k: v for k, v in hit.as_dict().items() if k != "text"}} for n, hit in enumerate(hits, start=1)]


def passages_prompt(question: str, hits: Sequence[Hit]) -> str:
    blocks = []
    for n, hit in enumerate(hits, start=1):
        heading = f" — {hit.heading}" if hit.heading else ""
        blocks.append(f"[{n}] ({hit.citation}{heading})\n{hit.text}")
    return (
        "Passages:\n\n"
        + "\n\n".join(blocks)
        + f"\n\nQuestion: {question}\nAnswer using the passages, citing them like [1]."
    )


def cited(text: str, count: int) -> list[int]:
    """The passage numbers a reply cites, in order, only those that were given."""
    return list(dict.fromkeys(int(n) for n in _CITE.findall(text) if 1 <= int(n) <= count))


def refusal_generation() -> Generation:
    """The refusal as a stream like any reply, so chats and the CLI show and store it the same way."""

    def producer():
        yield REFUSAL
        return GenerationResult(text=REFUSAL, finish_reason="stop")

    return Generation(producer(), threading.Event())


@dataclass
class KbAnswer:
    question: str
    hits: list[Hit]
    evidence: float  # best cosine similarity among the passages
    threshold: float
    generation: Generation
    refused: bool
    text: str = ""
    sources: list[dict[str, Any]] = field(default_factory=list)

    def __iter__(self) -> Iterator[str]:
        pieces = []
        for piece in self.generation:
            pieces.append(piece)
            yield piece
        self.text = "".join(pieces)
        self.mark_cited(self.text)

    def mark_cited(self, text: str) -> None:
        numbers = set(cited(text, len(self.sources)))
        for source in self.sources:
            source["cited"] = source["n"] in numbers

    def collect(self) -> KbAnswer:
        for _ in self:
            pass
        return self

    @property
    def finish_reason(self) -> str:
        result = self.generation.result
        return result.finish_reason if result else "cancelled"

    def record(self) -> dict[str, Any]:
        """What a chat message stores: the passages given (with which were cited), evidence, refusal."""
        return {
            "kb_sources": self.sources,
            "evidence": round(self.evidence, 4),
            "threshold": self.threshold,
            "refused": self.refused,
        }


def retrieve(
    index: Index,
    question: str,
    *,
    k: int = 4,
    threshold: float,
    kinds: list[str] | None = None,
    folder: str | None = None,
    reranker: Any = None,
) -> tuple[list[Hit], float, bool]:
    """(passages, evidence, refuse?)."""
    hits = index.search(question, k=k, kinds=kinds, folder=folder, reranker=reranker)
    evidence = max((h.similarity for h in hits), default=0.0)
    return hits, evidence, evidence < threshold


def answer(
    engine: Engine,
    index: Index,
    question: str,
    *,
    threshold: float,
    k: int = 4,
    history: Sequence[Message] = (),
    params: GenerationParams | None = None,
    system_prompt: str | None = None,
    kinds: list[str] | None = None,
    folder: str | None = None,
    reranker: Any = None,
) -> KbAnswer:
    hits, evidence, refuse = retrieve(
        index, question, k=k, threshold=threshold, kinds=kinds, folder=folder, reranker=reranker
    )
    if refuse:  # too weak to stand behind: the refusal lists no sources and the model is not asked
        return KbAnswer(question, [], evidence, threshold, refusal_generation(), refused=True)
    messages: list[Message] = [
        {"role": "system", "content": system_prompt or SYSTEM},
        *history,
        {"role": "user", "content": passages_prompt(question, hits)},
    ]
    generation = engine.chat(messages, params or GenerationParams.greedy(max_tokens=256))
    return KbAnswer(question, hits, evidence, threshold, generation, refused=False, sources=sources_of(hits))


def fit_threshold(answerable: Sequence[float], unanswerable: Sequence[float]) -> tuple[float, float]:
    """The threshold separating the two groups' evidence best (accuracy of answer/refuse, ties broken
    toward the widest margin), and that accuracy."""
    if not answerable or not unanswerable:
        raise ValueError("fitting a threshold needs answerable and unanswerable examples")
    values = sorted(set(answerable) | set(unanswerable))
    candidates = [values[0] - 1e-6] + [(a + b) / 2 for a, b in pairwise(values)] + [values[-1] + 1e-6]
    total = len(answerable) + len(unanswerable)

    def accuracy(t: float) -> float:
        return (sum(e >= t for e in answerable) + sum(e < t for e in unanswerable)) / total

    def margin(t: float) -> float:
        return min(abs(e - t) for e in [*answerable, *unanswerable])

    best = max(candidates, key=lambda t: (accuracy(t), margin(t)))
    return round(best, 4), accuracy(best)
