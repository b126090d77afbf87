"""Query text → full-text queries, and ranked lists → one ranking: pure functions, no index needed.

A question becomes up to three SQLite FTS5 queries: its words without the stop words (BM25 over
``unicode61`` tokens), its Chinese/Japanese/Korean runs as overlapping character bigrams (Lucene's CJK
approach: ``unicode61`` sees an unspaced CJK sentence as one token, and FTS5's ``trigram`` tokenizer
cannot match the two-character words most Chinese words are), and its code-like tokens as exact phrases.
The ranked lists they and the vectors return are fused by reciprocal rank (Cormack et al.; GPT4All's
LocalDocs design).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

RRF_K = 60  # the constant of Cormack et al.; ranks below ~60 contribute little

# question words and glue: they match nearly every chunk, cost BM25 a scan of every posting and add nothing
_STOP_WORDS = """
    a an and are as at be been but by can could did do does doing for from had has have how i if in into is it
    its me my of on or our should so than that the their them then there these they this to was we were what
    when where which who whom why will with would you your about after again all also am any because before
    between both each few further here just more most no nor not now off once only other over own same some
    such too under until up very while
"""
STOP_WORDS = frozenset(_STOP_WORDS.split())

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]+")
# codes and numbers: "E-4127", "KX-55-0192", "192.168.50.1", "v2.5", "x1234"
_IDENTIFIER = re.compile(r"\b(?=[\w.\-/]*\d)[A-Za-z0-9]+(?:[.\-/_][A-Za-z0-9]+)+\b|\b[A-Za-z]*\d{3,}[A-Za-z]*\b")


def word_query(query: str) -> str:
    """An FTS5 query matching chunks with any of the query's words (stop words dropped unless that leaves none)."""
    tokens = [t for t in re.findall(r"\w+", query.lower()) if len(t) > 1 or t.isdigit()]
    kept = [t for t in tokens if t not in STOP_WORDS] or tokens
    return " OR ".join(f'"{t}"' for t in dict.fromkeys(kept))


def cjk_bigrams(text: str) -> str:
    """The CJK runs of ``text`` as space-separated overlapping bigrams (a lone character as itself)."""
    grams = []
    for run in _CJK.findall(text):
        grams.extend([run] if len(run) == 1 else [run[i : i + 2] for i in range(len(run) - 1)])
    return " ".join(grams)


def bigram_query(query: str) -> str:
    """An FTS5 query over the bigram table matching any of the query's CJK bigrams; "" when it has no CJK text."""
    return " OR ".join(f'"{g}"' for g in dict.fromkeys(cjk_bigrams(query).split()))


def identifier_query(query: str) -> str:
    """An FTS5 query matching chunks that contain every code-like token of the query as a phrase."""
    phrases = []
    for token in dict.fromkeys(_IDENTIFIER.findall(query)):
        words = re.findall(r"\w+", token.lower())
        if words:
            phrases.append('"' + " ".join(words) + '"')
    return " AND ".join(phrases)


def fuse(rankings: Iterable[list[str]], k: int = RRF_K) -> dict[str, float]:
    """Reciprocal-rank fusion: each id scores the sum of 1 / (k + rank) over the lists that hold it. The ids
    come best first; ties keep the order in which the lists first named them."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, cid in enumerate(ranking, start=1):
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
    return dict(sorted(scores.items(), key=lambda item: -item[1]))
