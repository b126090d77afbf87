"""Embedder for sentence-transformers folders of the common shape (a transformer, pooling, optional normalization),
run on plain transformers.

Why not sentence-transformers itself: importing it costs about 6 s (it pulls in scikit-learn and transformers'
trainer), against about 2 s for torch and transformers, and every `internlocal kb` command pays it. The
computation is the same: tokenize, run the encoder, pool over the attention mask, normalize; tests compare
the vectors with sentence-transformers'. Folders of any other shape (a Dense layer, custom modules) go to
``SentenceTransformerEmbedder``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
_POOLING_MODES = ("cls", "mean", "max", "lasttoken")
# the older spelling of sentence-transformers' Pooling config: one flag per mode
_POOLING_FLAGS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
_BATCH = 32


def _pooling_mode(config: dict) -> str | None:
    """The one pooling mode the folder's Pooling module asks for, or None when it asks for anything else."""
    if config.get("include_prompt") is False:
        return None  # instruction-prompt exclusion needs sentence-transformers' prompt bookkeeping
    if "pooling_mode" in config:  # the newer spelling: one string
        mode = config["pooling_mode"]
        return mode if mode in _POOLING_MODES else None
    chosen = [mode for flag, mode in _POOLING_FLAGS.items() if config.get(flag)] or ["mean"]
    if len(chosen) != 1:
        return None  # several modes, concatenated
    return chosen[0] if chosen[0] in _POOLING_MODES else None


def plain_layout(path: str | Path) -> dict | None:
    """How to embed with plain transformers (pooling mode, normalize, max length), or None when the folder has
    modules this embedder does not reproduce."""
    folder = Path(path)
    try:
        modules = json.loads((folder / "modules.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    kinds = [m.get("type") for m in modules]
    if kinds not in ([_TRANSFORMER, _POOLING], [_TRANSFORMER, _POOLING, _NORMALIZE]) or modules[0].get("path"):
        return None
    try:
        pooling = json.loads((folder / modules[1]["path"] / "config.json").read_text(encoding="utf-8"))
        bert_config_file = folder / "sentence_bert_config.json"
        bert_config = json.loads(bert_config_file.read_text(encoding="utf-8")) if bert_config_file.is_file() else {}
    except (OSError, ValueError, KeyError):
        return None
    mode = _pooling_mode(pooling)
    if mode is None:
        return None
    return {
        "lower_case": bool(bert_config.get("do_lower_case")),
        "pooling": mode,
        "normalize": len(kinds) == 3,
        "max_seq_length": bert_config.get("max_seq_length"),
        "dimension": pooling.get("word_embedding_dimension"),
    }


class TransformersEmbedder:
    def __init__(self, path: str | Path, layout: dict, *, model_name: str | None = None, device: str = "cpu"):
        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_name = model_name or Path(path).name
        self._torch = torch
        self._device = device
        self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self._model = AutoModel.from_pretrained(str(path), local_files_only=True).to(device).eval()
        self._pooling = layout["pooling"]
        self._normalize = layout["normalize"]
        self._lower_case = layout["lower_case"]
        # as sentence-transformers: the folder's max_seq_length, else what both the tokenizer and the model allow
        limits = [self._tokenizer.model_max_length, getattr(self._model.config, "max_position_embeddings", None)]
        self._max_length = layout["max_seq_length"] or min(x for x in limits if x)
        self.dimension = int(layout["dimension"] or self._model.config.hidden_size)

    def _features(self, texts: Sequence[str]):
        return self._tokenizer(
            [text.lower() for text in texts] if self._lower_case else list(texts),
            padding=True,
            truncation="longest_first",
            max_length=self._max_length,
            return_tensors="pt",
        )

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        torch = self._torch
        # longest first, as sentence-transformers batches: less padding per batch
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        vectors: list[list[float]] = [[] for _ in texts]
        with torch.inference_mode():
            for start in range(0, len(order), _BATCH):
                batch = order[start : start + _BATCH]
                features = self._features([texts[i] for i in batch]).to(self._device)
                hidden = self._model(**features).last_hidden_state
                pooled = self._pool(hidden, features["attention_mask"])
                if self._normalize:
                    pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                for i, vector in zip(batch, pooled.float().cpu().tolist(), strict=True):
                    vectors[i] = vector
        return vectors

    def _pool(self, hidden, mask):
        torch = self._torch
        rows = torch.arange(hidden.shape[0], device=hidden.device)
        if self._pooling == "cls":  # the first real token of each row, wherever the padding side puts it
            return hidden[rows, mask.to(torch.int).argmax(dim=1)]
        if self._pooling == "lasttoken":  # the last real token
            return hidden[rows, mask.shape[1] - 1 - mask.to(torch.int).flip(1).argmax(dim=1)]
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        if self._pooling == "max":
            return hidden.masked_fill(weights == 0, float("-inf")).max(dim=1).values
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model reads for ``texts``: tokenized as ``embed`` tokenizes them ([CLS]/[SEP] included,
        truncated to max_seq_length), counted by the attention mask."""
        total = 0
        for start in range(0, len(texts), 64):
            total += int(self._features(texts[start : start + 64])["attention_mask"].sum())
        return total
