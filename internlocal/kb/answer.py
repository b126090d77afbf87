"""Answers from a knowledge base: numbered passages in the prompt, citations [n] that resolve to file and
span, and a refusal before the model is asked when the best passage is too far from the question
(HuixiangDou's design: a similarity threshold fitted on answerable and unanswerable examples).

The sources listed with an answer are the passages it was given, never parsed out of the model's text;
the text's [n] marks only say which of them it cited.

Around retrieval, HuixiangDou's pipeline, each step switchable per knowledge base (``AnswerPipeline``) and
each decision stored with the answer (``KbAnswer.decisions``):

1. a question filter: greetings and small talk are answered by the model without retrieval;
2. the refusal threshold (always);
3. a relevance gate: the model judges each passage (a yes/no JSON verdict); the irrelevant are dropped, and
   with none left the question is refused;
4. the answer, generated from the passages (or quoted: ``answers="extractive"``);
5. an answer check: a reply that only says it does not know is withheld (the refusal is shown instead);
6. grounding: a generated answer that cites no passage is never shown as if it were grounded: with
   ``answers="auto"`` it is replaced by the passages' best sentences, quoted with their citations
   (``kb/extractive.py``), and the replaced text is kept beside the answer.

Steps 5 and 6 need the whole reply before anything is shown, so with them on an answer arrives at once
rather than streamed; ``answers="generate"`` without the answer check streams as before.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from internlocal.engines.base import CancelAlso, Engine, Generation, GenerationParams, GenerationResult, Message
from internlocal.kb.index import Hit, Index

REFUSAL = "The knowledge base has no answer to this question."
UNGROUNDED_LEAD = "The model's answer cited none of your documents, so here is what they say instead:"
CHIT_CHAT_SYSTEM = "You are a friendly assistant for the user's documents. Reply briefly and kindly."
RELEVANCE_PROMPT = (
    "Question: {question}\n\nPassage:\n{passage}\n\n"
    'Does the passage contain information that answers the question? Reply with JSON: {{"relevant": true}} or '
    '{{"relevant": false}}.'
)
RELEVANCE_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "relevance",
        "schema": {"type": "object", "properties": {"relevant": {"type": "boolean"}}, "required": ["relevant"]},
    },
}


class AnswerPipeline(BaseModel):
    """The switchable steps around retrieval (stored per knowledge base: ``kb pipeline NAME``)."""

    model_config = ConfigDict(extra="forbid")

    chit_chat: bool = True  # answer greetings and small talk without retrieval
    relevance_gate: bool = False  # the model judges each passage (one short request per passage)
    answer_check: bool = True  # withhold a reply that only says it does not know
    answers: Literal["auto", "generate", "extractive"] = "auto"  # auto: quotes replace an uncited answer


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
    return _text_generation(REFUSAL)


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
    # each pipeline step's decision, as stored with the answer and shown under it (step → what it decided)
    decisions: dict[str, Any] = field(default_factory=dict)
    quotes: list[dict[str, Any]] = field(default_factory=list)  # an extractive answer's sentences
    replaced: str | None = None  # a generated answer that was withheld or replaced, kept for the record

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
        """What a chat message stores: the passages given (with which were cited), evidence, refusal, and what
        each pipeline step decided."""
        out: dict[str, Any] = {
            "kb_sources": self.sources,
            "evidence": round(self.evidence, 4),
            "threshold": self.threshold,
            "refused": self.refused,
            "pipeline": self.decisions,
        }
        if self.quotes:
            out["quotes"] = self.quotes
        if self.replaced is not None:
            out["replaced_answer"] = self.replaced
        return out


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
    pipeline: AnswerPipeline | None = None,
) -> KbAnswer:
    pipeline = pipeline or AnswerPipeline()
    params = params or GenerationParams.greedy(max_tokens=256)
    decisions: dict[str, Any] = {}
    if pipeline.chit_chat:
        if is_chit_chat(question):
            decisions["filter"] = "small talk: answered without the documents"
            messages: list[Message] = [
                {"role": "system", "content": CHIT_CHAT_SYSTEM},
                *history,
                {"role": "user", "content": question},
            ]
            generation = engine.chat(messages, params)
            return KbAnswer(question, [], 0.0, threshold, generation, refused=False, decisions=decisions)
        decisions["filter"] = "a question: searched the documents"
    hits, evidence, refuse = retrieve(
        index, question, k=k, threshold=threshold, kinds=kinds, folder=folder, reranker=reranker
    )
    if refuse:  # too weak to stand behind: the refusal lists no sources and the model is not asked
        decisions["threshold"] = f"refused: best similarity {evidence:.3f} < {threshold:.3f}"
        return KbAnswer(question, [], evidence, threshold, refusal_generation(), refused=True, decisions=decisions)
    decisions["threshold"] = f"passed: best similarity {evidence:.3f} ≥ {threshold:.3f}"
    if pipeline.relevance_gate:
        verdicts = judge_relevance(engine, question, hits)
        decisions["relevance"] = [
            {"citation": hit.citation, "relevant": verdict} for hit, verdict in zip(hits, verdicts, strict=True)
        ]
        hits = [hit for hit, verdict in zip(hits, verdicts, strict=True) if verdict]
        if not hits:
            decisions["relevance_gate"] = "refused: the model judged every passage irrelevant"
            return KbAnswer(question, [], evidence, threshold, refusal_generation(), refused=True, decisions=decisions)
    result = KbAnswer(
        question, hits, evidence, threshold, refusal_generation(), refused=False, sources=sources_of(hits),
        decisions=decisions,
    )  # fmt: skip
    if pipeline.answers == "extractive":
        result.generation = _text_generation(_extractive(result, index, lead="From your documents:"))
        decisions["answer"] = "quoted: the passages' best sentences"
        return result
    messages = [
        {"role": "system", "content": system_prompt or SYSTEM},
        *history,
        {"role": "user", "content": passages_prompt(question, hits)},
    ]
    generation = engine.chat(messages, params)
    if pipeline.answers == "generate" and not pipeline.answer_check:
        decisions["answer"] = "generated (streamed, not checked)"
        result.generation = generation
        return result
    result.generation = Generation(_checked(result, generation, index, pipeline), CancelAlso(generation))
    return result


def _checked(result: KbAnswer, generation: Generation, index: Index, pipeline: AnswerPipeline):
    """The generated answer, run to its end, then checked: withheld, replaced by quotes, or shown."""
    reply = generation.collect()
    text = reply.text.strip()
    if reply.finish_reason == "cancelled":
        result.decisions["answer"] = "stopped before it was checked"
        final = text
    elif pipeline.answer_check and says_it_does_not_know(text, len(result.sources)):
        result.decisions["answer_check"] = "withheld: the reply only said it did not know"
        result.replaced, result.refused, final = text, True, REFUSAL
        result.sources = []
    elif pipeline.answers == "auto" and not cited(text, len(result.sources)):
        looped = " (and was stopped for repeating itself)" if reply.finish_reason == "repetition" else ""
        result.decisions["answer"] = f"quoted: the generated answer cited no passage{looped}, so it was replaced"
        result.replaced, final = text, _extractive(result, index, lead=UNGROUNDED_LEAD)
    else:
        numbers = ", ".join(f"[{n}]" for n in cited(text, len(result.sources)))
        result.decisions["answer"] = f"generated, citing {numbers}" if numbers else "generated (cites no passage)"
        final = text
    if final:
        yield final
    reply.text = final
    return reply


def _extractive(result: KbAnswer, index: Index, lead: str) -> str:
    from internlocal.kb.extractive import extractive_text, quotes

    chosen = quotes(result.question, result.hits, index.embed)
    if not chosen:
        return REFUSAL
    result.quotes = [q.as_dict() for q in chosen]
    return extractive_text(chosen, lead)


def _text_generation(text: str) -> Generation:
    def producer():
        yield text
        return GenerationResult(text=text, finish_reason="stop")

    return Generation(producer(), threading.Event())


# -- the pipeline's judgements ----------------------------------------------------------------------

# Whole messages that are greetings, thanks or small talk, in English and Chinese, after lower-casing and
# dropping punctuation; HuixiangDou asks the model, which a 135M model cannot do reliably: a list is exact.
_SMALL_TALK = re.compile(
    r"^(?:(?:hi|hello|hey|hiya|howdy|yo|good (?:morning|afternoon|evening|night)|thanks?|thank you|thanks a lot"
    r"|thank you very much|many thanks|cheers|bye|goodbye|see you|see you later|ok|okay|great|cool|nice|awesome"
    r"|how are you|how are you doing|how is it going|what's up|whats up|nice to meet you|who are you"
    r"|what are you|what can you do|你好|您好|嗨|哈喽|早上好|下午好|晚上好|谢谢|多谢|谢谢你|再见|拜拜|你是谁|好的)"
    r"(?: (?:there|everyone|all|again|so much|bot|assistant|friend))*)+$"
)
_UNKNOWN = re.compile(
    r"\b(?:i (?:do not|don't|dont) know|i'm not sure|i am not sure|(?:i )?(?:cannot|can't|can not|am unable to|"
    r"could not|couldn't) (?:find|answer|tell|determine)|(?:no|not enough) information|"
    r"(?:is|are) not (?:mentioned|stated|given|provided|specified|in the passages)|"
    r"(?:passages?|documents?|knowledge base|context) (?:does not|do not|doesn't|don't) "
    r"(?:say|contain|mention|provide|include|specify))|不知道|无法回答|没有提到|没有相关"
)


def decision_lines(decisions: dict[str, Any]) -> list[str]:
    """The pipeline's decisions as the lines shown under an answer (TUI and `kb ask`)."""
    lines = []
    for step, decision in decisions.items():
        if step == "relevance":
            decision = ", ".join(f"{v['citation']} {'kept' if v['relevant'] else 'dropped'}" for v in decision)
        lines.append(f"{step}: {decision}")
    return lines


def is_chit_chat(question: str) -> bool:
    words = re.sub(r"[^\w\s'\u4e00-\u9fff]+", " ", question.lower())
    words = " ".join(words.split())
    return bool(words) and _SMALL_TALK.match(words) is not None


def says_it_does_not_know(text: str, passages: int) -> bool:
    """A reply that only says it does not know: the phrase, and no citation or barely anything else."""
    if not text:
        return True
    if _UNKNOWN.search(text.lower()) is None:
        return False
    return not cited(text, passages) or len(text.split()) <= 25


def judge_relevance(engine: Engine, question: str, hits: Sequence[Hit]) -> list[bool]:
    """The model's yes/no per passage (JSON constrained by a schema; an unreadable verdict keeps the passage)."""
    verdicts = []
    for hit in hits:
        prompt = RELEVANCE_PROMPT.format(question=question, passage=hit.text[:1500])
        reply = engine.chat(
            [{"role": "user", "content": prompt}],
            GenerationParams.greedy(max_tokens=16),
            response_format=RELEVANCE_FORMAT,
        ).collect()
        try:
            verdict = json.loads(reply.text).get("relevant")
        except (json.JSONDecodeError, AttributeError):
            verdict = None
        if not isinstance(verdict, bool):
            lowered = reply.text.strip().lower()
            verdict = not lowered.startswith(("no", "false", '{"relevant": false'))
        verdicts.append(verdict)
    return verdicts


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
