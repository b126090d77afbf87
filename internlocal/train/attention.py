"""Attention for packed rows: each example attends only to itself.

Packed rows hold several examples with positions restarting at 0 for each. transformers' default
SDPA path, given such positions and no mask, attends across the whole row: examples saw each
other (measured: logits 26 apart from the same example alone). Here each example's span is
attended to separately with ``is_causal`` and no mask (PyTorch's flash kernel on CPU and CUDA),
so only the within-example blocks are computed. Registered with transformers as
``internlocal_packed``; ``tests/test_train.py`` checks packed logits against each example alone.
"""

from __future__ import annotations

from itertools import pairwise

NAME = "internlocal_packed"
_registered = False


def _segments(positions) -> list[tuple[int, int]]:
    """(start, end) of each run of positions counting up from 0."""
    starts = (positions == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    return list(pairwise([*starts, positions.shape[0]]))


def packed_attention(
    module, query, key, value, attention_mask, dropout: float = 0.0, scaling: float | None = None, **kwargs
):
    """query (B, H, L, D), key/value (B, KV, S, D) → (B, L, H, D), None."""
    import torch
    import torch.nn.functional as F

    position_ids = kwargs.get("position_ids")
    gqa = key.shape[1] != query.shape[1]  # grouped-query attention, without copying key/value per head
    dropout = dropout if module.training else 0.0
    if position_ids is None or query.shape[2] != key.shape[2]:
        # decoding with a cache (one new token attends to everything before it), or no positions given
        out = F.scaled_dot_product_attention(
            query,
            key,
            value,
            attn_mask=attention_mask if attention_mask is not None and attention_mask.dtype == torch.bool else None,
            is_causal=query.shape[2] == key.shape[2] and attention_mask is None,
            dropout_p=dropout,
            scale=scaling,
            enable_gqa=gqa,
        )
        return out.transpose(1, 2).contiguous(), None
    rows = []
    for b in range(query.shape[0]):
        pieces = [
            F.scaled_dot_product_attention(
                query[b : b + 1, :, s:e],
                key[b : b + 1, :, s:e],
                value[b : b + 1, :, s:e],
                is_causal=True,
                dropout_p=dropout,
                scale=scaling,
                enable_gqa=gqa,
            )
            for s, e in _segments(position_ids[b])
        ]
        rows.append(torch.cat(pieces, dim=2) if len(pieces) > 1 else pieces[0])
    out = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # segments come from position_ids; padding is a segment of its own


def register() -> str:
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface

        AttentionInterface.register(NAME, packed_attention)
        AttentionMaskInterface.register(NAME, _no_mask)
        _registered = True
    return NAME
