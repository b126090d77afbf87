"""Retrieval quality of a knowledge base from labelled questions: recall@k, MRR and nDCG@10 over files,
and how well the refusal threshold separates answerable from unanswerable questions.

The questions file is JSONL: ``{"question": "...", "sources": ["devices/router.txt", ...]}`` with
sources relative to a knowledge-base folder; ``"sources": []`` marks a question the documents do not
answer (it should be refused).

Users' verdicts in chats come in as rows with ``"expect"``: an answer marked bad should have been refused
(``"refuse"``), a refusal marked bad should have been answered (``"answer"``). They count only where the
threshold is concerned (refusal scores and the fit), not in recall, MRR or nDCG, having no labelled files.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.kb.answer import fit_threshold
from internlocal.kb.index import Index


def load_questions(path: Path) -> list[dict[str, Any]]:
    from internlocal.data.formats import read_rows

    rows = []
    for where, row in read_rows(Path(path)):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
            raise UserError(_('{path}, {where}: needs a non-empty "question".').format(path=path, where=where))
        sources = row.get("sources", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise UserError(
                _('{path}, {where}: "sources" must be a list of file paths.').format(path=path, where=where)
            )
        rows.append({"question": row["question"], "sources": [s.strip("/") for s in sources]})
    if not rows:
        raise UserError(_("{path} has no questions.").format(path=path))
    return rows


def evaluate(
    index: Index,
    questions: list[dict[str, Any]],
    *,
    threshold: float,
    k: int = 5,
    mode: Literal["hybrid", "dense", "bm25"] = "hybrid",
) -> dict[str, Any]:
    depth = max(k, 10)
    recall, reciprocal, ndcg = [], [], []
    answerable_evidence: list[float] = []
    unanswerable_evidence: list[float] = []
    per_question = []
    for item in questions:
        hits = index.search(item["question"], k=depth, mode=mode)
        dense = hits if mode != "bm25" else index.search(item["question"], k=depth, mode="dense")
        evidence = max((h.similarity for h in dense), default=0.0)
        files = list(dict.fromkeys(h.relpath for h in hits))  # ranked files, each at its best chunk's rank
        relevant = set(item["sources"])
        row = {
            "question": item["question"],
            "sources": item["sources"],
            "retrieved": files[:k],
            "evidence": round(evidence, 4),
        }
        if "expect" in item:  # a user's verdict: evidence for the threshold only
            row["expect"] = item["expect"]
            (answerable_evidence if item["expect"] == "answer" else unanswerable_evidence).append(evidence)
        elif relevant:
            answerable_evidence.append(evidence)
            found = relevant & set(files[:k])
            recall.append(len(found) / len(relevant))
            rank = next((n for n, f in enumerate(files, start=1) if f in relevant), None)
            reciprocal.append(1.0 / rank if rank else 0.0)
            gains = sum(1.0 / math.log2(n + 1) for n, f in enumerate(files[:10], start=1) if f in relevant)
            ideal = sum(1.0 / math.log2(n + 1) for n in range(1, min(len(relevant), 10) + 1))
            ndcg.append(gains / ideal)
            row.update(recall=recall[-1], rank=rank)
        else:
            unanswerable_evidence.append(evidence)
        row["refused"] = evidence < threshold
        per_question.append(row)
    refused_right = sum(1 for r in per_question if r["refused"] and _should_refuse(r))
    refused_all = sum(1 for r in per_question if r["refused"])
    result: dict[str, Any] = {
        "mode": mode,
        "k": k,
        "questions": len(questions),
        "answerable": len(answerable_evidence),
        "unanswerable": len(unanswerable_evidence),
        f"recall@{k}": _mean(recall),
        "mrr": _mean(reciprocal),
        "ndcg@10": _mean(ndcg),
        "threshold": threshold,
        "refusal_precision": refused_right / refused_all if refused_all else None,
        "refusal_recall": refused_right / len(unanswerable_evidence) if unanswerable_evidence else None,
        "per_question": per_question,
    }
    if answerable_evidence and unanswerable_evidence:
        best, accuracy = fit_threshold(answerable_evidence, unanswerable_evidence)
        result["fitted_threshold"], result["fitted_accuracy"] = best, accuracy
    return result


def _should_refuse(row: dict[str, Any]) -> bool:
    return row["expect"] == "refuse" if "expect" in row else not row["sources"]


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None
