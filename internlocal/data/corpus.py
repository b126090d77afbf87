"""Pretraining corpora: raw documents → token shards, once, before training.

Documents come from a folder of text/Markdown files, JSONL (a ``text`` field), Parquet (a ``text``
column) or a plain text file (blank-line separated documents are one document per file here: a
file is a document). They are de-duplicated exactly (sha256 of the text), tokenized in parallel
worker processes with the target model's tokenizer, joined with EOS and cut into fixed-length
sequences stored in memory-mapped ``uint16`` shards (``uint32`` when the vocabulary needs it).

A document goes to the validation split by its hash (stable across runs). Shards are written to a
temporary name, fsynced and renamed, and ``state.json`` after each shard records where the next one
starts, so a killed preparation resumes where it was and never uses a half-written shard.
``index.json`` appears last: a corpus without it is unfinished.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.jobs.processes import die_with_parent

TEXT_SUFFIXES = {".txt", ".md", ".markdown", ".rst", ".text"}
DOCS_PER_TASK = 64  # documents per worker task: big enough to amortise the pickling, small enough to stream
SEQUENCES_PER_SHARD = 1024  # also bounds the cut-but-unwritten sequences kept in state.json


def documents(source: Path) -> Iterator[tuple[str, str]]:
    """(where, text) for each document of a folder, JSONL, Parquet or text file."""
    source = Path(source)
    if source.is_dir():
        files = sorted(
            p for p in source.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES | {".jsonl", ".parquet"}
        )
        if not files:
            raise UserError(_("{source} holds no .txt, .md, .jsonl or .parquet files.").format(source=source))
        for file in files:
            yield from documents(file)
        return
    if not source.is_file():
        raise UserError(_("{source} does not exist.").format(source=source))
    suffix = source.suffix.lower()
    if suffix in (".jsonl", ".parquet"):
        from internlocal.data.formats import read_rows

        for where, row in read_rows(source):
            text = row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str):
                raise UserError(
                    _('{source}, {where}: a pretraining row needs a "text" string.').format(source=source, where=where)
                )
            if text.strip():
                yield f"{source.name} {where}", text
        return
    data = source.read_bytes()
    if b"\x00" in data[:8192]:
        raise UserError(_("{source} is a binary file, not text.").format(source=source))
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(_("{source} is not UTF-8 text.").format(source=source)) from None
    if text.strip():
        yield source.name, text


def tokenizer_fingerprint(tokenizer) -> str:
    """Same fingerprint ⇔ same token ids for the same text (vocabulary and special tokens)."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items()), ensure_ascii=False)
    return hashlib.sha256(f"{vocab}\0{tokenizer.eos_token_id}".encode()).hexdigest()[:16]


_worker_tokenizer = None


def _init_worker(parent: int, tokenizer_dir: str, trust_remote_code: bool) -> None:
    global _worker_tokenizer
    die_with_parent(parent)  # a SIGKILLed parent runs no cleanup: its pool would wait on a dead queue
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from internlocal.data.tokenizer import hf_tokenizer

    _worker_tokenizer = hf_tokenizer(tokenizer_dir, trust_remote_code=trust_remote_code)


def _tokenize(texts: list[str]) -> list[list[int]]:
    assert _worker_tokenizer is not None
    return _worker_tokenizer(texts, add_special_tokens=False)["input_ids"]


@dataclass
class CorpusIndex:
    path: Path
    seq_len: int
    dtype: str
    eos_id: int
    vocab_size: int
    tokenizer: str  # fingerprint
    train: list[dict[str, Any]]  # shards: file, sequences
    validation: list[dict[str, Any]]
    stats: dict[str, Any]

    @classmethod
    def load(cls, path: Path) -> CorpusIndex:
        index = Path(path) / "index.json"
        if not index.exists():
            raise UserError(
                _("{path} is not a prepared corpus (no index.json: its preparation did not finish).").format(path=path)
            )
        data = json.loads(index.read_text())
        return cls(
            Path(path),
            data["seq_len"],
            data["dtype"],
            data["eos_id"],
            data["vocab_size"],
            data["tokenizer"],
            data["train"],
            data["validation"],
            data["stats"],
        )

    def sequences(self, split: str = "train"):
        """A memory-mapped (N, seq_len) array per shard; indexing reads only what is used."""
        import numpy as np

        shards = self.train if split == "train" else self.validation
        return [
            np.memmap(self.path / s["file"], dtype=self.dtype, mode="r", shape=(s["sequences"], self.seq_len))
            for s in shards
        ]


def prepare_corpus(
    source: Path,
    tokenizer_dir: Path,
    out: Path,
    *,
    seq_len: int,
    validation: float = 0.05,
    workers: int | None = None,
    progress: Callable[[int, str], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    trust_remote_code: bool = False,
) -> CorpusIndex:
    """Prepare ``source`` into ``out`` (resuming a preparation that was interrupted)."""
    import numpy as np

    from internlocal.data.tokenizer import hf_tokenizer

    if seq_len < 8:
        raise UserError(_("seq_len must be at least 8 tokens."))
    if not 0 <= validation < 0.5:
        raise UserError(_("The validation fraction must be between 0 and 0.5."))
    out = Path(out)
    if (out / "index.json").exists():
        return CorpusIndex.load(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = hf_tokenizer(tokenizer_dir, trust_remote_code=trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise UserError(_("The tokenizer has no end-of-sequence token to separate documents."))
    vocab_size = len(tokenizer)
    dtype = "uint16" if vocab_size <= 65536 else "uint32"
    fingerprint = tokenizer_fingerprint(tokenizer)
    state_path = out / "state.json"
    state: dict[str, Any] = json.loads(state_path.read_text()) if state_path.exists() else {}
    if state and (state.get("tokenizer") != fingerprint or state.get("seq_len") != seq_len):
        raise UserError(
            _(
                "{out} holds an unfinished preparation with another tokenizer or seq_len; remove the "
                "folder or prepare into another one."
            ).format(out=out)
        )
    splits = state.get("splits") or {
        "train": {"shards": [], "carry": [], "buffer": []},
        "validation": {"shards": [], "carry": [], "buffer": []},
    }
    # what the state counts was fully written; documents after `docs_done` are read again
    docs_done = state.get("docs_done", 0)
    seen: set[str] = set(state.get("seen", []))
    stats = state.get("stats") or {"documents": 0, "duplicates": 0, "empty": 0, "tokens": 0, "validation_documents": 0}

    def save_state(done: int) -> None:
        tmp = state_path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "tokenizer": fingerprint,
                    "seq_len": seq_len,
                    "docs_done": done,
                    "splits": splits,
                    "seen": sorted(seen),
                    "stats": stats,
                }
            )
        )
        os.replace(tmp, state_path)

    def write_shard(split: str, rows: list[list[int]]) -> None:
        part = splits[split]
        name = f"{split}-{len(part['shards']):05d}.bin"
        array = np.asarray(rows, dtype=dtype)
        tmp = out / (name + ".tmp")
        with tmp.open("wb") as fh:
            fh.write(array.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out / name)
        part["shards"].append({"file": name, "sequences": len(rows)})

    pending: dict[str, list[list[int]]] = {"train": [], "validation": []}

    def add_tokens(split: str, ids: list[int]) -> None:
        part = splits[split]
        carry = part["carry"] + ids + [tokenizer.eos_token_id]
        start = 0
        while len(carry) - start >= seq_len:
            pending[split].append(carry[start : start + seq_len])
            start += seq_len
        part["carry"] = carry[start:]

    def flush(done: int, final: bool = False) -> None:
        for split in ("train", "validation"):
            rows = pending[split]
            while len(rows) >= SEQUENCES_PER_SHARD or (final and rows):
                write_shard(split, rows[:SEQUENCES_PER_SHARD])
                rows = rows[SEQUENCES_PER_SHARD:]
            pending[split] = rows
            splits[split]["buffer"] = rows  # sequences cut but not in a shard yet
        save_state(done)

    for split in ("train", "validation"):
        pending[split] = splits[split].get("buffer", [])
    batch: list[tuple[str, str]] = []
    position = 0
    workers = workers or max(1, min(8, (os.cpu_count() or 2)))
    tokenizer_copy = out / "tokenizer"
    if not tokenizer_copy.exists():
        tokenizer.save_pretrained(str(tokenizer_copy))  # the workers load it; training checks against it

    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(os.getpid(), str(tokenizer_copy), trust_remote_code)
    ) as pool:

        def run(batch: list[tuple[str, str]], upto: int) -> None:
            texts = [t for __, t in batch]
            chunks = [texts[i : i + DOCS_PER_TASK] for i in range(0, len(texts), DOCS_PER_TASK)]
            for where_text, ids in zip(
                batch, [ids for part in pool.map(_tokenize, chunks) for ids in part], strict=True
            ):
                digest = hashlib.sha256(where_text[1].encode("utf-8")).hexdigest()
                split = "validation" if validation and int(digest[:8], 16) / 0xFFFFFFFF < validation else "train"
                if split == "validation":
                    stats["validation_documents"] += 1
                stats["documents"] += 1
                stats["tokens"] += len(ids) + 1
                add_tokens(split, ids)
            flush(upto)

        for where, text in documents(source):
            position += 1
            if position <= docs_done:
                continue
            if should_stop is not None and should_stop():
                raise InterruptedError("preparation stopped")
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            if digest in seen:
                stats["duplicates"] += 1
                continue
            seen.add(digest)
            batch.append((where, text))
            if len(batch) >= DOCS_PER_TASK * workers * 4:
                run(batch, position)
                batch = []
                if progress is not None:
                    progress(position, where)
        if batch:
            run(batch, position)
        elif position == docs_done:
            save_state(position)
    if position == 0 or stats["documents"] == 0:
        raise UserError(_("{source} has no text to train on.").format(source=source))
    flush(position, final=True)
    train_sequences = sum(s["sequences"] for s in splits["train"]["shards"])
    if train_sequences == 0:
        raise UserError(
            _(
                "{source} holds {tokens} tokens, fewer than one sequence of {seq_len}; add text or lower seq_len."
            ).format(source=source, tokens=stats["tokens"], seq_len=seq_len)
        )
    stats.update(
        train_sequences=train_sequences,
        validation_sequences=sum(s["sequences"] for s in splits["validation"]["shards"]),
        dropped_tail_tokens=len(splits["train"]["carry"]) + len(splits["validation"]["carry"]),
    )
    index = {
        "seq_len": seq_len,
        "dtype": dtype,
        "eos_id": tokenizer.eos_token_id,
        "vocab_size": vocab_size,
        "tokenizer": fingerprint,
        "train": splits["train"]["shards"],
        "validation": splits["validation"]["shards"],
        "stats": stats,
    }
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / "index.json")
    state_path.unlink(missing_ok=True)
    return CorpusIndex.load(out)
