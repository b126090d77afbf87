"""The training loss: the sum of token cross-entropies over trained positions (what DDP / FSDP wrap).

Logits are computed only where a trained token is predicted, in ``LOGIT_CHUNK``-row chunks that are
recomputed in the backward pass, so vocabulary-sized tensors never exist for a whole batch. A batch
that fits in one chunk is not recomputed: the peak would be the same (one chunk's logits and their
gradient) and the output layer's matmul would run once more for nothing. Models
whose forward post-processes the logits (soft-capping and the like) take the plain path instead.
"""

from __future__ import annotations

from internlocal.train.packing import IGNORE

LOGIT_CHUNK = 1024
# logits post-processed in forward: the decoder + head shortcut would skip that
_NO_FAST_LOSS = {"gemma2", "gemma3", "gemma3_text", "cohere", "cohere2", "granite"}


def base_model(model):
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def fast_loss_path(model) -> bool:
    """Whether logits can be computed from the decoder's output and the head directly (see the module)."""
    base = base_model(model)
    return (
        base.config.model_type not in _NO_FAST_LOSS
        and callable(getattr(base, "get_decoder", None))
        and base.get_output_embeddings() is not None
    )


def trained_token_logps(inner, fast: bool, input_ids, labels, position_ids, attention_mask=None):
    """(log-probability of each trained token, the mask of trained positions over ``labels[:, 1:]``): what every
    objective is made of. Called inside a module's forward (DDP and FSDP hooks must see it)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    targets = labels[:, 1:]
    keep = targets != IGNORE
    if not fast:
        logits = inner(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask).logits
        picked = logits[:, :-1][keep].float()
        return -torch.nn.functional.cross_entropy(picked, targets[keep], reduction="none"), keep
    inner = base_model(inner)
    hidden = inner.get_decoder()(
        input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask
    ).last_hidden_state
    selected = hidden[:, :-1][keep]
    wanted = targets[keep]
    head = inner.get_output_embeddings()
    if selected.shape[0] <= LOGIT_CHUNK:  # the CPU recipes' batches (2 × 256): one chunk, kept
        return _chunk_logps(head, selected, wanted), keep
    parts = [
        checkpoint(
            _chunk_logps,
            head,
            selected[start : start + LOGIT_CHUNK],
            wanted[start : start + LOGIT_CHUNK],
            use_reentrant=False,
        )
        for start in range(0, selected.shape[0], LOGIT_CHUNK)
    ]
    return torch.cat(parts), keep


def causal_lm_loss(model):
    """``model`` wrapped as a module whose forward returns the summed loss of a batch."""
    import torch

    fast = fast_loss_path(model)

    class CausalLMLoss(torch.nn.Module):
        """Sum of token cross-entropies over trained positions; logits only there, in recomputed chunks."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, labels, position_ids, attention_mask=None):
            logps, _ = trained_token_logps(self.inner, fast, input_ids, labels, position_ids, attention_mask)
            return -logps.sum()

    return CausalLMLoss(model)


def _chunk_logps(head, hidden, targets):
    import torch

    return -torch.nn.functional.cross_entropy(head(hidden).float(), targets, reduction="none")
