"""Examples → rows → batches: what the training loop feeds the model.

Examples are token ids with labels (``IGNORE`` where nothing is trained). An epoch is a seeded
shuffle of them, packed greedily into rows of at most ``seq_len`` tokens with positions restarting
per example (``attention.py`` keeps packed examples apart by those positions). Pretraining corpora
are ``Sequences``: fixed-length rows read from memory-mapped shards, every token trained.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from internlocal.errors import TrainingError
from internlocal.i18n import _

IGNORE = -100


class Examples(Protocol):
    """Training examples by index: (token ids, labels). A list of rendered examples, or corpus ``Sequences``."""

    def __len__(self) -> int: ...

    def __getitem__(self, i: int, /) -> tuple[list[int], list[int]]: ...


@dataclass
class Batch:
    input_ids: Any
    labels: Any
    position_ids: Any
    attention_mask: Any | None
    real_tokens: int
    trained_tokens: int
    reference: Any | None = None  # DPO: the reference log-probability of each row (train/preference.py)


def render_examples(
    tokenizer, rows: list[dict[str, Any]], seq_len: int, train_on: str
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Token ids and labels of each example (truncated to seq_len); examples with nothing to train are dropped."""
    from internlocal.data.rendering import Rendered, render

    out, dropped = [], 0
    for row in rows:
        if "chosen" in row and "rejected" in row:
            raise TrainingError(
                _("This dataset holds preference pairs (chosen, rejected); train on them with objective: dpo or orpo.")
            )
        if "input_ids" in row:  # already tokenized (pretraining data, benchmarks): labels default to every token
            ids = list(row["input_ids"])[:seq_len]
            rendered = Rendered(ids, list(row.get("labels") or ids)[:seq_len])
        else:
            rendered = render(tokenizer, row, max_len=seq_len, train_on=train_on)
        # the first token is never predicted: an example needs a trained token after it
        if not any(label != IGNORE for label in rendered.labels[1:]):
            dropped += 1
            continue
        out.append((rendered.input_ids, rendered.labels))
    return out, dropped


def read_jsonl(path: str | None) -> list[dict[str, Any]]:
    if not path or not Path(path).exists():
        return []
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def load_examples(
    tokenizer, train_file: str | None, validation_file: str | None, seq_len: int, train_on: str
) -> tuple[list[tuple[list[int], list[int]]], list[tuple[list[int], list[int]]], int]:
    """(training examples, validation examples, training examples dropped for having nothing to train)."""
    train, dropped = render_examples(tokenizer, read_jsonl(train_file), seq_len, train_on)
    if not train:
        raise TrainingError(
            _(
                "No training example has a token to train on (assistant answers empty or cut off by "
                "seq_len={seq_len}); check the dataset or raise seq_len."
            ).format(seq_len=seq_len)
        )
    validation, __ = render_examples(tokenizer, read_jsonl(validation_file), seq_len, train_on)
    return train, validation, dropped


def load_corpus(
    corpus_dir: Path, tokenizer, model_path: str, seq_len: int, embeddings: int
) -> tuple[Sequences, Sequences, int]:
    """(training sequences, validation sequences, the EOS id that pads) of a prepared corpus, checked against the
    model: the same tokenizer, the recipe's seq_len, a vocabulary the embeddings cover."""
    from internlocal.data.corpus import CorpusIndex, tokenizer_fingerprint

    index = CorpusIndex.load(corpus_dir)  # a missing or damaged corpus is a UserError
    if tokenizer is not None and tokenizer_fingerprint(tokenizer) != index.tokenizer:
        raise TrainingError(
            _(
                "The corpus {path} was tokenized with another tokenizer than {model}'s; "
                "prepare it again for this model."
            ).format(path=index.path, model=model_path)
        )
    if index.seq_len != seq_len:
        raise TrainingError(
            _("The corpus holds sequences of {corpus_len} tokens but the recipe says seq_len={seq_len}.").format(
                corpus_len=index.seq_len, seq_len=seq_len
            )
        )
    if tokenizer is not None and index.vocab_size > embeddings:
        raise TrainingError(
            _("The corpus's tokenizer has {vocab_size} tokens, more than the model's embeddings.").format(
                vocab_size=index.vocab_size
            )
        )
    return Sequences(index.sequences("train")), Sequences(index.sequences("validation")), index.eos_id


def epoch_rows(examples: Examples, seq_len: int, packing: bool, seed: int, epoch: int) -> list[list[int]]:
    """Rows of example indices for one epoch: a seeded shuffle, then packed greedily into seq_len rows."""
    order = list(range(len(examples)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    if not packing:
        return [[i] for i in order]
    rows: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i in order:
        n = len(examples[i][0])
        if current and used + n > seq_len:
            rows.append(current)
            current, used = [], 0
        current.append(i)
        used += n
    if current:
        rows.append(current)
    return rows


def make_batch(examples: Examples, rows: list[list[int]], pad_id: int, packing: bool) -> Batch:
    import torch

    seqs = []
    for row in rows:
        ids: list[int] = []
        targets: list[int] = []
        positions: list[int] = []
        for i in row:
            e_ids, e_labels = examples[i]
            ids += e_ids
            targets += [IGNORE, *e_labels[1:]]  # an example's first token is not predicted from the one before
            positions += range(len(e_ids))
        seqs.append((ids, targets, positions))
    width = max(len(s[0]) for s in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    position_ids = torch.zeros((len(seqs), width), dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, (ids, lab, pos) in enumerate(seqs):
        n = len(ids)
        input_ids[r, :n] = torch.tensor(ids)
        labels[r, :n] = torch.tensor(lab)
        position_ids[r, :n] = torch.tensor(pos)
        position_ids[r, n:] = torch.arange(width - n)  # padding is its own "sequence": it attends to nothing real
        mask[r, :n] = 1
    real = sum(len(s[0]) for s in seqs)
    trained = int((labels != IGNORE).sum())
    # packed rows: positions restart per example and attention.packed_attention keeps examples apart by them;
    # rows without padding need no mask either (plain causal attention)
    unpadded = all(len(s[0]) == width for s in seqs)
    return Batch(input_ids, labels, position_ids, None if packing or unpadded else mask, real, trained)


def rank_share(examples: Examples, rank: int, world: int) -> Examples:
    """Every ``world``-th example from ``rank`` on (a rank's validation share; nothing is read yet)."""
    if isinstance(examples, Sequences):
        return examples[rank::world]
    assert isinstance(examples, list)  # rendered examples
    return examples[rank::world]


def trained_per_example(examples: Examples) -> Callable[[int], int]:
    """How many tokens example ``i`` trains in a batch (its first token is never predicted), counted once here so
    that every rank can count every other rank's share of a step without a collective (the shuffle is seeded)."""
    if isinstance(examples, Sequences):
        per_sequence = max(0, examples.width - 1)
        return lambda __: per_sequence
    counts = [sum(1 for label in examples[i][1][1:] if label != IGNORE) for i in range(len(examples))]
    return counts.__getitem__


class Sequences:
    """Corpus shards as examples: ``seqs[i]`` is (ids, labels) of the i-th sequence, read from the memmap."""

    def __init__(self, shards: list):
        self.shards = shards
        self.offsets = []
        total = 0
        for shard in shards:
            self.offsets.append(total)
            total += len(shard)
        self.total = total
        self.width = int(shards[0].shape[1]) if shards else 0  # every sequence has seq_len tokens

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i):
        import bisect

        if isinstance(i, slice):  # a rank's share: a view, nothing read yet
            return SequenceView(self, range(self.total)[i])
        k = bisect.bisect_right(self.offsets, i) - 1
        ids = self.shards[k][i - self.offsets[k]].tolist()
        return ids, ids


class SequenceView:
    """Some of a ``Sequences``' rows (a rank's validation share), read on access."""

    def __init__(self, parent: Sequences, indices: range):
        self.parent, self.indices = parent, indices
        self.width = parent.width

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.parent[self.indices[i]]
