"""Dataset files → normalized examples.

Files: JSONL, JSON (a list of objects), CSV (with a header) and Parquet. Row forms, detected from
the first row's keys unless given:

| form | keys | becomes |
|---|---|---|
| ``messages`` (OpenAI) | ``messages: [{role, content}]`` | the conversation |
| ``sharegpt`` | ``conversations: [{from, value}]`` (+ ``system``) | the conversation |
| ``alpaca`` | ``instruction``, ``input``, ``output`` (+ ``system``, ``history``) | user → assistant |
| ``text`` | ``text`` | raw text (pretraining style: every token trained) |
| ``preference`` | ``chosen``, ``rejected`` (+ a prompt: see ``normalize_pair``) | a prompt and two answers |

A normalized example is ``{"messages": [...]}`` or ``{"text": "..."}``; a preference pair is
``{"messages": [prompt turns], "chosen": "answer", "rejected": "answer"}``. A list held as JSON text (a CSV
cell) is decoded. Every row is checked; errors name the file and the line (or row) and say what is wrong.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from internlocal.errors import UserError
from internlocal.i18n import _

FORMATS = ("messages", "sharegpt", "alpaca", "text", "preference")
ROLES = ("system", "user", "assistant", "tool")
_SHAREGPT_ROLES = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
}
MAX_ERRORS_SHOWN = 5


@dataclass(frozen=True)
class DataLimits:
    """How big a dataset may be: rows, and characters per row (``data_max_*`` settings)."""

    max_rows: int = 5_000_000
    max_row_chars: int = 1_000_000

    @classmethod
    def from_settings(cls) -> DataLimits:
        from internlocal.config import load_settings

        settings = load_settings()
        return cls(settings.data_max_rows, settings.data_max_row_chars)


def read_rows(path: Path, limits: DataLimits | None = None) -> Iterator[tuple[str, Any]]:
    """(where, row) for each row of the file; ``where`` is "line N" or "row N" for messages. A file that is not
    what its name says, or a row or row count over a limit, is refused with a sentence naming the place."""
    path = Path(path)
    if not path.is_file():
        raise UserError(_("{path} does not exist or is not a file.").format(path=path))
    limits = limits or DataLimits.from_settings()
    count = 0
    try:
        for where, row, chars in _rows(path):
            count += 1
            if count > limits.max_rows:
                raise UserError(
                    _(
                        "{path} has more than {max_rows:,} rows (data_max_rows); `internlocal config set "
                        "data_max_rows N` raises the limit."
                    ).format(path=path, max_rows=limits.max_rows)
                )
            if chars > limits.max_row_chars:
                raise UserError(
                    _(
                        "{path} {where} is {chars:,} characters, longer than data_max_row_chars = "
                        "{max_row_chars:,}; `internlocal config set data_max_row_chars {chars}` raises the limit."
                    ).format(path=path, where=where, chars=chars, max_row_chars=limits.max_row_chars)
                )
            yield where, row
    except UnicodeDecodeError as exc:
        raise UserError(
            _("{path} is not UTF-8 text (byte {start}); save it as UTF-8.").format(path=path, start=exc.start)
        ) from None
    except RecursionError:
        raise UserError(_("{path}: nested too deeply to read.").format(path=path)) from None


def _rows(path: Path) -> Iterator[tuple[str, Any, int]]:
    """(where, row, characters) for each row of the file."""
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for n, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    yield _("line {n}").format(n=n), json.loads(line), len(line)
                except json.JSONDecodeError as exc:
                    raise UserError(
                        _("{path} line {n}: not valid JSON ({msg}).").format(path=path, n=n, msg=exc.msg)
                    ) from None
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise UserError(
                _("{path} line {lineno}: not valid JSON ({msg}).").format(path=path, lineno=exc.lineno, msg=exc.msg)
            ) from None
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise UserError(_("{path}: expected a JSON list of examples.").format(path=path))
        for n, row in enumerate(data, start=1):
            yield _("item {n}").format(n=n), row, _chars(row)
    elif suffix == ".csv":
        csv.field_size_limit(2**31 - 1)  # data_max_row_chars is the limit that speaks to the user
        with path.open(encoding="utf-8", newline="") as fh:
            try:
                for n, row in enumerate(csv.DictReader(fh), start=2):
                    yield _("line {n}").format(n=n), row, sum(len(k or "") + _chars(v) for k, v in row.items())
            except csv.Error as exc:
                raise UserError(_("{path}: not readable as CSV ({error}).").format(path=path, error=exc)) from None
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise UserError(_("{path}: not a readable Parquet file ({error}).").format(path=path, error=exc)) from None
        for n, row in enumerate(table.to_pylist(), start=1):
            yield _("row {n}").format(n=n), row, _chars(row)
    else:
        raise UserError(
            _("{path}: unknown file type {suffix}; use .jsonl, .json, .csv or .parquet.").format(
                path=path, suffix=suffix or _("(none)")
            )
        )


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(len(str(k)) + _chars(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_chars(v) for v in value)
    return len(str(value)) if value is not None else 0


def detect_format(row: Any) -> str | None:
    if not isinstance(row, dict):
        return None
    if "chosen" in row and "rejected" in row:  # before the others: a ShareGPT pair has conversations too
        return "preference"
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row and "output" in row:
        return "alpaca"
    if "text" in row:
        return "text"
    return None


def _listed(row: dict[str, Any], key: str) -> Any:
    """``row[key]``, decoded when it is JSON text: a CSV cell can only carry a list of turns as JSON."""
    value = row.get(key)
    if isinstance(value, str) and value.strip():
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(_("'{key}' is text that is not valid JSON ({msg})").format(key=key, msg=exc.msg)) from None
    return value


def normalize(row: Any, form: str) -> dict[str, Any]:
    """One row in ``form`` → a normalized example; ``ValueError`` says what is wrong."""
    if not isinstance(row, dict):
        raise ValueError(_("expected an object, found {type}").format(type=type(row).__name__))
    if form == "preference":
        return normalize_pair(row)
    if form == "text":
        text = row.get("text")
        if not isinstance(text, str) or not text.strip():
            raise ValueError(_("'text' is missing or empty"))
        return {"text": text}
    if form == "alpaca":
        instruction, output = row.get("instruction"), row.get("output")
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(_("'instruction' is missing or empty"))
        if not isinstance(output, str) or not output.strip():
            raise ValueError(_("'output' is missing or empty"))
        messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        for turn in _listed(row, "history") or []:
            if not (isinstance(turn, (list, tuple)) and len(turn) == 2):
                raise ValueError(_("'history' must be a list of [question, answer] pairs"))
            messages += [{"role": "user", "content": str(turn[0])}, {"role": "assistant", "content": str(turn[1])}]
        user = instruction if not row.get("input") else f"{instruction}\n\n{row['input']}"
        return {"messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": output}]}
    if form == "sharegpt":
        turns = _listed(row, "conversations")
        if not isinstance(turns, list) or not turns:
            raise ValueError(_("'conversations' must be a non-empty list"))
        messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        for i, turn in enumerate(turns, start=1):
            if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
                raise ValueError(_("turn {i} needs 'from' and 'value'").format(i=i))
            role = _SHAREGPT_ROLES.get(str(turn["from"]).lower())
            if role is None:
                raise ValueError(
                    _("turn {i} has an unknown speaker {speaker!r} (human, gpt, system, observation)").format(
                        i=i, speaker=turn["from"]
                    )
                )
            messages.append({"role": role, "content": str(turn["value"])})
        return {"messages": _check_messages(messages)}
    if form == "messages":
        messages = _listed(row, "messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(_("'messages' must be a non-empty list"))
        clean = []
        for i, message in enumerate(messages, start=1):
            if not isinstance(message, dict) or message.get("role") not in ROLES:
                raise ValueError(_("message {i} needs a role of {roles}").format(i=i, roles=", ".join(ROLES)))
            content = message.get("content")
            if isinstance(content, list):  # content parts: keep the text ones
                content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            if not isinstance(content, str):
                raise ValueError(_("message {i} has no text content").format(i=i))
            clean.append({"role": message["role"], "content": content})
        return {"messages": _check_messages(clean)}
    raise ValueError(f"unknown form {form!r}")


def normalize_pair(row: dict[str, Any]) -> dict[str, Any]:
    """A preference row → ``{"messages": prompt turns, "chosen": answer, "rejected": answer}``.

    The prompt is ``prompt`` (text or turns), ``conversations`` (ShareGPT, LLaMA-Factory's pairs), ``messages``,
    ``question`` (Orca pairs) or ``instruction`` + ``input`` (Alpaca pairs), with an optional ``system``. Without
    one, it is what ``chosen`` and ``rejected`` share: two conversations ending in different answers
    (UltraFeedback's layout) or two "\n\nHuman: … \n\nAssistant: …" transcripts (Anthropic HH). An answer is
    text, one assistant turn, or turns whose last is the assistant's."""
    chosen, rejected = _maybe_json(row.get("chosen")), _maybe_json(row.get("rejected"))
    prompt = _pair_prompt(row)
    if prompt is None:  # the prompt is implicit: the turns both sides share
        chosen_turns, rejected_turns = _as_turns(chosen, "chosen"), _as_turns(rejected, "rejected")
        if chosen_turns[:-1] != rejected_turns[:-1]:
            raise ValueError(_("no prompt, and 'chosen' and 'rejected' do not share the turns before their answers"))
        prompt = chosen_turns[:-1]
    pair = {"messages": prompt, "chosen": _answer(chosen, "chosen"), "rejected": _answer(rejected, "rejected")}
    if not any(m["role"] == "user" for m in prompt):
        raise ValueError(_("the prompt has no user turn"))
    if pair["chosen"] == pair["rejected"]:
        raise ValueError(_("'chosen' and 'rejected' are the same answer: nothing to prefer"))
    return pair


def _pair_prompt(row: dict[str, Any]) -> list[dict[str, str]] | None:
    """The prompt turns a preference row gives explicitly (None: it gives none)."""
    system = [{"role": "system", "content": str(row["system"])}] if row.get("system") else []
    if row.get("prompt") not in (None, ""):
        prompt = _maybe_json(row["prompt"])
        if isinstance(prompt, str):
            return [*system, {"role": "user", "content": prompt}]
        return [*system, *_turns(prompt, "prompt")]
    for key in ("conversations", "messages"):
        if row.get(key):
            return [*system, *_turns(_listed(row, key), key)]
    if isinstance(row.get("question"), str) and row["question"].strip():
        return [*system, {"role": "user", "content": row["question"]}]
    if isinstance(row.get("instruction"), str) and row["instruction"].strip():
        user = row["instruction"] if not row.get("input") else f"{row['instruction']}\n\n{row['input']}"
        return [*system, {"role": "user", "content": user}]
    return None


def _maybe_json(value: Any) -> Any:
    """Turns held as JSON text (a CSV cell) decoded; any other text (an answer, a prompt) as it is."""
    if isinstance(value, str) and value.lstrip()[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            pass  # text that starts with a bracket
    return value


def _turns(value: Any, key: str) -> list[dict[str, str]]:
    """Turns as OpenAI messages (``role``/``content``) or ShareGPT (``from``/``value``), checked."""
    if not isinstance(value, list) or not value:
        raise ValueError(_("'{key}' must be text or a non-empty list of turns").format(key=key))
    out = []
    for i, turn in enumerate(value, start=1):
        if not isinstance(turn, dict):
            raise ValueError(_("'{key}' turn {i} is not an object").format(key=key, i=i))
        speaker = turn.get("role", turn.get("from"))
        role = _SHAREGPT_ROLES.get(str(speaker).lower()) if speaker is not None else None
        content = turn.get("content", turn.get("value"))
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if role is None or not isinstance(content, str):
            raise ValueError(
                _("'{key}' turn {i} needs a role (or from) and text content (or value)").format(key=key, i=i)
            )
        out.append({"role": role, "content": content})
    return out


_HH_TURN = re.compile(r"\n\n(Human|Assistant): ")


def _as_turns(value: Any, key: str) -> list[dict[str, str]]:
    """An answer given with its conversation: a list of turns, or an Anthropic HH transcript."""
    if isinstance(value, str):
        parts = _HH_TURN.split("\n\n" + value.lstrip("\n")) if value.lstrip("\n").startswith("Human: ") else []
        if len(parts) < 5:  # "", Human, text, Assistant, text
            raise ValueError(
                _("'{key}' is plain text and the row has no prompt (prompt, question or conversations)").format(key=key)
            )
        turns = [
            {"role": "user" if who == "Human" else "assistant", "content": text.strip()}
            for who, text in zip(parts[1::2], parts[2::2], strict=True)
        ]
    else:
        turns = _turns(value, key)
    if turns[-1]["role"] != "assistant":
        raise ValueError(_("'{key}' does not end with an assistant answer").format(key=key))
    return turns


def _answer(value: Any, key: str) -> str:
    """The answer a pair's side holds: text, one assistant turn, or the last of a list of turns."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        turns = _turns(value, key)
        if turns[-1]["role"] != "assistant":
            raise ValueError(_("'{key}' does not end with an assistant answer").format(key=key))
        value = turns[-1]["content"]
    elif isinstance(value, str) and _HH_TURN.search("\n\n" + value.lstrip("\n")) and "Assistant: " in value:
        value = _as_turns(value, key)[-1]["content"]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(_("'{key}' is missing or empty").format(key=key))
    return value


def _check_messages(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    if not any(m["role"] == "assistant" and m["content"].strip() for m in messages):
        raise ValueError(_("no assistant message with text: nothing to train on"))
    return messages


def load_examples(path: Path, form: str = "auto") -> tuple[str, list[dict[str, Any]]]:
    """All rows of a file, normalized; returns (form used, examples). Every bad row is reported."""
    if form not in ("auto", *FORMATS):
        raise UserError(
            _("Dataset form {form!r} is not one of auto, {forms}.").format(form=form, forms=", ".join(FORMATS))
        )
    examples: list[dict[str, Any]] = []
    errors: list[str] = []
    used = None if form == "auto" else form
    for where, row in read_rows(Path(path)):
        if used is None:
            used = detect_format(row)
            if used is None:
                keys = ", ".join(row) if isinstance(row, dict) else type(row).__name__
                raise UserError(
                    _(
                        "{path} {where}: cannot tell the dataset form from its keys ({keys}); expected messages, "
                        "conversations (ShareGPT), instruction/output (Alpaca), text, or chosen/rejected "
                        "(preference pairs), or pass --format."
                    ).format(path=path, where=where, keys=keys)
                )
        try:
            examples.append(normalize(row, used))
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
    if errors:
        shown = "; ".join(errors[:MAX_ERRORS_SHOWN]) + (
            _("; and {count} more").format(count=len(errors) - MAX_ERRORS_SHOWN)
            if len(errors) > MAX_ERRORS_SHOWN
            else ""
        )
        raise UserError(
            _("{path}: {count} bad row(s) as {used}: {shown}.").format(
                path=path, count=len(errors), used=used, shown=shown
            )
        )
    if not examples:
        raise UserError(_("{path} holds no examples.").format(path=path))
    return used or "messages", examples
