"""Preference tuning in the shared loop: DPO and ORPO as objectives beside supervised finetuning.

A preference example is a pair rendered twice (prompt + chosen, prompt + rejected, only the final answer
scored: ``data/rendering.render_pair``). A micro-batch holds the chosen renderings of its pairs, then the
rejected ones, padded rather than packed. A sequence's log-probability is the sum of its answer tokens'
log-probabilities (TRL's convention).

- DPO (Rafailov et al., 2023): loss = −log σ(β·((π_c − ref_c) − (π_r − ref_r))). The reference
  log-probabilities are computed once, before the first step, with the model as it starts (an adapter's base,
  or a full finetune's initial weights) and kept in the run folder (``reference_logps.json``): no second copy
  of the model in memory and no reference forward pass per step; a resumed run reads them back.
  With ``sft_weight`` α, each pair adds α times its chosen answer's mean token NLL (TRL's loss_type
  ["sigmoid", "sft"], which averages over a batch's chosen tokens instead).
- ORPO (Hong et al., 2024): loss = NLL(chosen) − β·log σ(log odds(chosen) − log odds(rejected)), with
  per-token mean log-probabilities and odds = p / (1 − p); no reference model. The NLL is each pair's mean over
  its chosen tokens (the paper's definition; TRL's ORPO averages over all chosen tokens of a batch instead,
  which differs only when answers differ in length).

Per pair, the loss module also returns the numbers the step and evaluation events report (``STATS``): the
policy's log-probabilities, the rewards (DPO: β·(π − ref); ORPO: β·mean log-probability), their margin, whether
the chosen reward is higher (preference accuracy), and whether the policy itself gives the chosen answer the
higher log-probability.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from internlocal.errors import TrainingError
from internlocal.i18n import _
from internlocal.train.loss import fast_loss_path, trained_token_logps
from internlocal.train.packing import IGNORE, Batch, make_batch, read_jsonl

# sums over a batch's pairs, in this order; a step or evaluation reports each divided by its number of pairs
STATS = (
    "chosen_logp",
    "rejected_logp",
    "chosen_reward",
    "rejected_reward",
    "reward_margin",
    "reward_accuracy",
    "prefers_chosen",
)
REFERENCE_FILE = "reference_logps.json"

Pair = tuple[list[int], list[int], list[int], list[int]]  # chosen ids, chosen labels, rejected ids, rejected labels


def load_pairs(
    tokenizer, train_file: str | None, validation_file: str | None, seq_len: int, objective: str
) -> tuple[list[Pair], list[Pair], int]:
    """(training pairs, validation pairs, training pairs dropped because truncation to seq_len left an answer
    with nothing to score)."""
    train, dropped = render_pairs(tokenizer, read_jsonl(train_file), seq_len, objective)
    if not train:
        raise TrainingError(
            _(
                "No preference pair keeps both answers within seq_len={seq_len}; raise seq_len or shorten the prompts."
            ).format(seq_len=seq_len)
        )
    validation, __ = render_pairs(tokenizer, read_jsonl(validation_file), seq_len, objective)
    return train, validation, dropped


def render_pairs(tokenizer, rows: list[dict[str, Any]], seq_len: int, objective: str) -> tuple[list[Pair], int]:
    from internlocal.data.rendering import is_pair, render_pair

    out: list[Pair] = []
    dropped = 0
    for row in rows:
        if not is_pair(row):
            raise TrainingError(
                _(
                    "objective {objective} trains on preference pairs (prompt, chosen, rejected), and this dataset "
                    "holds other examples; import a preference dataset or use objective: sft."
                ).format(objective=objective)
            )
        chosen, rejected = render_pair(tokenizer, row, max_len=seq_len)
        if not all(any(label != IGNORE for label in r.labels[1:]) for r in (chosen, rejected)):
            dropped += 1
            continue
        out.append((chosen.input_ids, chosen.labels, rejected.input_ids, rejected.labels))
    return out, dropped


def make_pair_batch(pairs: list[Pair], indices: list[int], pad_id: int, reference: Any | None) -> Batch:
    """The chosen renderings of ``pairs[indices]``, then their rejected ones, padded; with their reference
    log-probabilities in the same order (DPO) or None (ORPO)."""
    import torch

    sequences = [(pairs[i][0], pairs[i][1]) for i in indices] + [(pairs[i][2], pairs[i][3]) for i in indices]
    batch = make_batch(sequences, [[k] for k in range(len(sequences))], pad_id, packing=False)
    if reference is not None:
        index = torch.tensor(indices, dtype=torch.long)
        batch.reference = torch.cat([reference[index, 0], reference[index, 1]])
    return batch


def preference_loss(model, objective: str, beta: float, sft_weight: float = 0.0):
    """``model`` wrapped as a module whose forward returns (the summed loss of a batch's pairs, their ``STATS``
    sums), or with ``scores_only`` each sequence's log-probability (the reference pass: through the same
    forward, so DDP and FSDP see it)."""
    import torch
    import torch.nn.functional as F

    fast = fast_loss_path(model)

    class PreferenceLoss(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, labels, position_ids, attention_mask=None, reference=None, scores_only=False):
            logps, keep = trained_token_logps(self.inner, fast, input_ids, labels, position_ids, attention_mask)
            rows = keep.nonzero()[:, 0]
            sums = torch.zeros(input_ids.shape[0], dtype=logps.dtype, device=logps.device).index_add(0, rows, logps)
            if scores_only:
                return sums
            pairs = input_ids.shape[0] // 2
            chosen, rejected = sums[:pairs], sums[pairs:]
            counts = keep.sum(dim=1).to(sums.dtype)
            if objective == "dpo":
                if reference is None:
                    # an internal invariant (the loop computes them first), not something a person can fix
                    raise TrainingError(
                        "DPO needs the reference log-probabilities of every pair"  # i18n: not translated
                    )
                reference = reference.to(sums.dtype)
                chosen_reward = beta * (chosen - reference[:pairs])
                rejected_reward = beta * (rejected - reference[pairs:])
                losses = -F.logsigmoid(chosen_reward - rejected_reward)
                if sft_weight:
                    losses = losses - sft_weight * chosen / counts[:pairs]
            else:  # orpo
                mean_chosen, mean_rejected = chosen / counts[:pairs], rejected / counts[pairs:]
                log_odds = (mean_chosen - mean_rejected) - (_log1m_exp(mean_chosen) - _log1m_exp(mean_rejected))
                losses = -mean_chosen - beta * F.logsigmoid(log_odds)
                chosen_reward, rejected_reward = beta * mean_chosen, beta * mean_rejected
            with torch.no_grad():
                margin = chosen_reward - rejected_reward
                stats = torch.stack(
                    [
                        chosen.sum(),
                        rejected.sum(),
                        chosen_reward.sum(),
                        rejected_reward.sum(),
                        margin.sum(),
                        (margin > 0).sum().to(sums.dtype),
                        (chosen > rejected).sum().to(sums.dtype),
                    ]
                )
            return losses.sum(), stats

    return PreferenceLoss(model)


def _log1m_exp(x):
    """log(1 − exp(x)) for log-probabilities x < 0, accurate near 0 (a certain answer has infinite odds)."""
    import torch

    return torch.log(-torch.expm1(x.clamp(max=-1e-6)))


def held_out_summary(metrics_path: Path) -> dict[str, Any] | None:
    """The held-out pairs before training and at the last evaluation (from ``metrics.jsonl``, so a resumed run
    still has its starting point): what the run's summary and the CLI report."""
    evals = [
        event
        for event in (json.loads(line) for line in Path(metrics_path).read_text(encoding="utf-8").splitlines() if line)
        if event.get("type") == "eval" and "val_reward_margin" in event
    ]
    if not evals:
        return None
    keep = (
        "step",
        "val_loss",
        "val_reward_margin",
        "val_reward_accuracy",
        "val_prefers_chosen",
        "val_chosen_logp",
        "val_rejected_logp",
    )
    return {
        "pairs": evals[-1]["val_pairs"],
        "before": {k: evals[0][k] for k in keep},
        "after": {k: evals[-1][k] for k in keep},
    }


def held_out_line(summary: dict[str, Any]) -> str:
    """One line for people: the held-out pairs before → after."""
    n, before, after = summary["pairs"], summary["before"], summary["after"]
    return (
        f"held-out pairs ({n}): reward margin {before['val_reward_margin']:.3f} → {after['val_reward_margin']:.3f}, "
        f"preference accuracy {before['val_reward_accuracy']:.0%} → {after['val_reward_accuracy']:.0%}, chosen answer "
        f"more likely than the rejected in {round(before['val_prefers_chosen'] * n)}/{n} → "
        f"{round(after['val_prefers_chosen'] * n)}/{n}"
    )


def reference_logps(trainer, pairs: list[Pair]) -> Any:
    """Each pair's (chosen, rejected) log-probabilities under the model as it is now, as an [N, 2] tensor on the
    CPU; every process computes its share (the same number of forward passes on each, as FSDP needs) and an
    all-reduce gives everyone all of them."""
    import torch

    world, rank, micro = trainer.world, trainer.rank, trainer.recipe.micro_batch
    values = torch.zeros((len(pairs), 2), dtype=torch.float64, device=trainer.device)
    mine = list(range(rank, len(pairs), world))
    per_rank = math.ceil(len(pairs) / world)
    trainer.loss_module.eval()
    with torch.no_grad():
        for k in range(math.ceil(per_rank / micro)):
            indices = mine[k * micro : (k + 1) * micro]
            batch = make_pair_batch(pairs, indices or [0], trainer.pad_id, None)  # out of rows: one repeated, unused
            sums = trainer._forward(batch, scores_only=True).double()
            if indices:
                n = len(indices)
                values[torch.tensor(indices, device=trainer.device)] = torch.stack([sums[:n], sums[n:]], dim=1)
    trainer.loss_module.train()
    trainer.processes.sum_tensor(values)
    return values.cpu()


def load_or_compute_references(trainer, run_dir: Path) -> tuple[dict[str, Any], bool]:
    """The reference log-probabilities of the training and validation pairs: from the run folder when an earlier
    start computed them, else now (before a resumed run restores its checkpoint: the weights are still the
    starting ones). Also says whether they were computed now."""
    import torch

    path = Path(run_dir) / REFERENCE_FILE
    sizes = {"train": len(trainer.examples), "validation": len(trainer.validation)}
    if path.exists():
        saved = json.loads(path.read_text(encoding="utf-8"))
        if {k: len(v) for k, v in saved.items()} == sizes:
            return {k: torch.tensor(v, dtype=torch.float64) for k, v in saved.items()}, False
    refs = {
        "train": reference_logps(trainer, trainer.examples),
        "validation": reference_logps(trainer, trainer.validation),
    }
    if trainer.processes.leader:
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps({k: v.tolist() for k, v in refs.items()}), encoding="utf-8")
        os.replace(partial, path)
    trainer.processes.barrier()
    return refs, True
