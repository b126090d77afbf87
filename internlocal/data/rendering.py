"""Examples → token ids and labels, through the model's own chat template.

Only assistant turns are trained on by default (labels of every other token are -100): the
template is rendered up to each assistant turn with the generation prompt and up to the end of
that turn, and the characters in between (the answer and its end-of-turn marker) are the trained
span. Token offsets from the tokenizer map spans to tokens, so templates need no special support.
Text examples train every token. A preference pair is rendered twice, prompt + chosen and prompt +
rejected, scoring only the final answer in each (``render_pair``). ``preview`` shows which tokens are
trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from internlocal.errors import UserError
from internlocal.i18n import _

IGNORE = -100


@dataclass
class Rendered:
    input_ids: list[int]
    labels: list[int]
    truncated: bool = False

    @property
    def trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE)


def _template(tokenizer, messages: list[dict[str, str]], *, generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)


def trained_spans(tokenizer, example: dict[str, Any], train_on: str = "assistant") -> tuple[str, list[tuple[int, int]]]:
    """(full text, character spans trained on)."""
    if "text" in example:
        text = example["text"]
        eos = tokenizer.eos_token or ""
        return text + eos, [(0, len(text) + len(eos))]
    messages = example["messages"]
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            _(
                "This model's tokenizer has no chat template, so conversations cannot be rendered; use a "
                "chat model or text data."
            )
        )
    full = _template(tokenizer, messages, generation_prompt=False)
    if train_on == "all":
        return full, [(0, len(full))]
    spans = []
    cursor = 0
    last = max(i for i, m in enumerate(messages) if m["role"] == "assistant") if train_on == "last" else -1
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or i < last:
            continue
        before = _template(tokenizer, messages[:i], generation_prompt=True) if i else ""
        through = _template(tokenizer, messages[: i + 1], generation_prompt=False)
        if full.startswith(through) and through.startswith(before) and len(before) >= cursor:
            start, end = len(before), len(through)
        else:  # a template that renders earlier turns differently later on: find the answer itself
            start = full.find(message["content"], cursor)
            if start < 0:
                raise UserError(
                    _(
                        "The chat template does not reproduce an assistant message verbatim; train on all tokens "
                        "(train_on: all) for this model."
                    )
                )
            end = start + len(message["content"])
            eot = _end_of_turn(tokenizer)
            if eot and full.startswith(eot, end):
                end += len(eot)
        spans.append((start, end))
        cursor = end
    return full, spans


def _end_of_turn(tokenizer) -> str | None:
    for token in ("<|im_end|>", "<|eot_id|>", "<|end|>", tokenizer.eos_token):
        if token and token in (tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}):
            return token
    return None


def _encode(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    offsets = [tuple(o) for o in encoded["offset_mapping"]]
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is not None and getattr(tokenizer, "add_bos_token", False) and (not ids or ids[0] != bos):
        ids, offsets = [bos, *ids], [(0, 0), *offsets]
    return ids, offsets


def render(tokenizer, example: dict[str, Any], max_len: int | None = None, train_on: str = "assistant") -> Rendered:
    text, spans = trained_spans(tokenizer, example, train_on)
    ids, offsets = _encode(tokenizer, text)
    labels = [
        tid if any(s <= start < e for s, e in spans) and end > start else IGNORE
        for tid, (start, end) in zip(ids, offsets, strict=True)
    ]
    truncated = bool(max_len and len(ids) > max_len)
    if truncated:
        ids, labels = ids[:max_len], labels[:max_len]
    return Rendered(ids, labels, truncated)


def is_pair(example: dict[str, Any]) -> bool:
    return "chosen" in example and "rejected" in example


def render_pair(tokenizer, example: dict[str, Any], max_len: int | None = None) -> tuple[Rendered, Rendered]:
    """(prompt + chosen, prompt + rejected), each scoring only its final answer (and end-of-turn marker)."""
    prompt = example["messages"]
    return tuple(  # type: ignore[return-value]
        render(
            tokenizer,
            {"messages": [*prompt, {"role": "assistant", "content": example[side]}]},
            max_len=max_len,
            train_on="last",
        )
        for side in ("chosen", "rejected")
    )


def preview(tokenizer, example: dict[str, Any], train_on: str = "assistant") -> list[tuple[str, bool]]:
    """(token text, trained?) for each token of the rendered example: what the Train screen highlights. A
    preference pair shows both renderings, each under a heading (not a token)."""
    if is_pair(example):
        chosen, rejected = render_pair(tokenizer, example)
        return [
            (_("── chosen ──") + "\n", False),
            *_tokens(tokenizer, chosen),
            ("\n" + _("── rejected ──") + "\n", False),
            *_tokens(tokenizer, rejected),
        ]
    return _tokens(tokenizer, render(tokenizer, example, train_on=train_on))


def _tokens(tokenizer, rendered: Rendered) -> list[tuple[str, bool]]:
    return [
        (tokenizer.decode([tid]), label != IGNORE)
        for tid, label in zip(rendered.input_ids, rendered.labels, strict=True)
    ]
