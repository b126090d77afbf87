"""Extractive answers: the sentences of the retrieved passages that best match the question, quoted with their
citations, for when the model's own answer cites nothing (or the user asks for quotes).

A sentence's score is its cosine similarity to the question (the knowledge base's embedding model, one batch
for all candidate sentences) plus a bonus for the question's exact terms it contains (error codes, product
names, numbers: what embeddings blur). Sentences are cut from the passages' text, so each quote is the
document's own words, and each carries the passage number [n] and its own file:line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from internlocal.kb.index import Hit

TERM_WEIGHT = 0.5  # exact-term overlap (0–1) next to the cosine similarity (about 0.1–0.8 for MiniLM)
MAX_QUOTES = 2
KEEP_RATIO = 0.85  # a further quote must score at least this share of the best one
MAX_SENTENCE_CHARS = 400

# English function words: a question's "what/does/the" would match every sentence
_FUNCTION_WORDS = (
    "a an and are as at be by can could did do does for from had has have how i if in into is it its me "
    "my of on or our should so than that the their them then there these they this to was we were what "
    "when where which who whom whose why will with would you your much many long often"
)
_STOPWORDS = frozenset(_FUNCTION_WORDS.split())
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])|(?<=[。！？；])")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d+[.)])\s+")
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-_.]*[A-Za-z0-9]|[A-Za-z0-9]|[\u4e00-\u9fff]+")


@dataclass
class Quote:
    n: int  # the passage's number, as cited [n]
    text: str
    citation: str  # file:line of the sentence itself
    score: float
    overlap: float = 0.0  # share of the question's terms the sentence contains

    def as_dict(self) -> dict[str, Any]:
        return {"n": self.n, "text": self.text, "citation": self.citation, "score": round(self.score, 4)}


def sentences(hit: Hit) -> list[tuple[str, int | None]]:
    """(sentence, the line of the file it starts on) for the passage's prose. Lines of one paragraph are joined
    first (documentation wraps sentences across lines); a list item starts a paragraph of its own; headings and
    code fences are not answers."""
    paragraphs: list[list[tuple[str, int]]] = []  # each: (line text, offset in the passage)
    current: list[tuple[str, int]] = []
    in_fence = False
    for offset, raw in enumerate(hit.text.splitlines()):
        line = raw.strip()
        if line.startswith("```"):
            in_fence = not in_fence
            continue
        heading = line.startswith("#") or (bool(line) and set(line) <= set("-=|: "))
        if not line or in_fence or heading or _BULLET.match(line):
            if current:
                paragraphs.append(current)
            current = []
            if line and not in_fence and not heading:
                current = [(_BULLET.sub("", line), offset)]
            continue
        current.append((line, offset))
    if current:
        paragraphs.append(current)
    out: list[tuple[str, int | None]] = []
    for paragraph in paragraphs:
        text, starts = "", []  # starts: (character index in text, line offset)
        for line, offset in paragraph:
            starts.append((len(text), offset))
            text += line + " "
        position = 0
        for piece in _SENTENCE_END.split(text):
            begin = text.index(piece, position) if piece else position
            position = begin + len(piece)
            piece = " ".join(piece.split())
            if len(piece) < 8 or len(_WORD.findall(piece)) < 2:
                continue
            offset = max(o for index, o in starts if index <= begin)
            line_number = hit.start_line + offset if hit.start_line is not None else None
            out.append((piece[:MAX_SENTENCE_CHARS], line_number))
    return out


def terms(text: str) -> set[str]:
    """Content words, lower-cased; Chinese runs as character bigrams (no spaces to split on)."""
    found: set[str] = set()
    for word in _WORD.findall(text.lower()):
        if "\u4e00" <= word[0] <= "\u9fff":
            found.update(word[i : i + 2] for i in range(max(1, len(word) - 1)))
        elif word not in _STOPWORDS and (len(word) > 2 or any(c.isdigit() for c in word)):
            found.add(_stem(word.rstrip(".")))
    return found


def _stem(word: str) -> str:
    """mounted/mounting/mounts → mount: enough for a question's verb to meet the document's."""
    if len(word) > 4 and not any(c.isdigit() for c in word):
        for suffix in ("ing", "ed", "s"):
            if word.endswith(suffix) and len(word) - len(suffix) >= 3:
                return word[: -len(suffix)]
    return word


def quotes(
    question: str,
    hits: Sequence[Hit],
    embed: Callable[[list[str]], list[list[float]]],
    *,
    max_quotes: int = MAX_QUOTES,
) -> list[Quote]:
    """The best sentences of ``hits`` for ``question``, best first (one embedding batch for all of them)."""
    candidates: list[tuple[int, str, str]] = []
    for n, hit in enumerate(hits, start=1):
        for sentence, line in sentences(hit):
            citation = f"{hit.relpath}:{line}" if line is not None else hit.citation
            candidates.append((n, sentence, citation))
    if not candidates:
        return []
    vectors = embed([question] + [c[1] for c in candidates])
    wanted = terms(question)
    scored = []
    for (n, sentence, citation), vector in zip(candidates, vectors[1:], strict=True):
        overlap = len(wanted & terms(sentence)) / len(wanted) if wanted else 0.0
        scored.append(Quote(n, sentence, citation, _cosine(vectors[0], vector) + TERM_WEIGHT * overlap, overlap))
    scored.sort(key=lambda q: q.score, reverse=True)
    best = scored[0]
    chosen: list[Quote] = [best]
    for quote in scored[1:]:
        if len(chosen) == max_quotes or quote.score < best.score * KEEP_RATIO:
            break
        # a further quote must match the question's exact terms as well as the best one does: otherwise it is
        # a near neighbour (fault E-281 beside the E-120 asked about) and would mislead
        if quote.overlap >= best.overlap and all(quote.text != q.text for q in chosen):
            chosen.append(quote)
    return chosen


def extractive_text(chosen: Sequence[Quote], lead: str = "From your documents:") -> str:
    """The quotes as Markdown: each the document's own words, with its passage number and line."""
    lines = [lead, ""] if lead else []
    for quote in chosen:
        lines.append(f"> {quote.text} [{quote.n}] ({quote.citation})")
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
