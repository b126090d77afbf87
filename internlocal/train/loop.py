"""The training loop: one explicit loop for full, LoRA, QLoRA and pretraining (setup → train → save → cleanup),
learning a dataset's answers (SFT) or preferences between two answers (DPO, ORPO: ``preference``).

Run as ``python -m internlocal.train.loop RUN_DIR`` (or under ``torchrun`` for several processes);
``RUN_DIR/config.json`` (``RunConfig``) holds the recipe and the paths. Nothing here imports the
catalog or the UI, so the same file runs on a bare GPU server. The pieces it is built from live
beside it: ``packing`` (examples → rows → batches), ``model`` (tokenizer, weights, NF4, LoRA),
``loss`` (chunked cross-entropy), ``distributed`` (processes, collectives, DDP/FSDP2), ``checkpoint``
(atomic save and restore), ``metrics`` (``metrics.jsonl``) and ``flops`` (MFU). It writes
``metrics.jsonl``, ``checkpoints/step-N/``, and at the end ``adapter/`` (LoRA, QLoRA) or ``model/``
(full, pretraining) and ``result.json``.

Triggers: an empty ``SAVE_NOW`` file makes it checkpoint at the next step; ``STOP`` (or SIGTERM)
makes it checkpoint and exit; ``--resume`` continues from the newest complete checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import sys
import time
from pathlib import Path
from typing import Any

from internlocal.errors import TrainingError, UserError
from internlocal.i18n import _
from internlocal.jobs.processes import die_with_parent
from internlocal.train.checkpoint import Checkpoints, TrainingParts, save_final_model
from internlocal.train.distributed import Processes, wrap_for_processes
from internlocal.train.flops import flops_per_token, peak_flops, peak_memory
from internlocal.train.loss import base_model, causal_lm_loss
from internlocal.train.metrics import MetricsLog
from internlocal.train.model import device_and_precision, greedy_answer
from internlocal.train.packing import (
    Batch,
    Examples,
    epoch_rows,
    load_corpus,
    load_examples,
    make_batch,
    rank_share,
    trained_per_example,
)
from internlocal.train.preference import (
    STATS,
    held_out_summary,
    load_or_compute_references,
    load_pairs,
    make_pair_batch,
    preference_loss,
)
from internlocal.train.run_config import RunConfig


class Trainer:
    def __init__(self, run_dir: Path, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.config = RunConfig.load(self.run_dir)
        self.recipe = self.config.recipe
        self.preference = self.recipe.objective != "sft"  # pairs of answers: DPO or ORPO
        self.references: dict[str, Any] = {}  # DPO: reference log-probabilities of the train/validation pairs
        self.resume = resume
        self.stop_requested = False
        self.processes = Processes.from_env()
        self.rank, self.world = self.processes.rank, self.processes.world
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.metrics = MetricsLog(self.metrics_path, writes=self.processes.leader)
        self.checkpoints = Checkpoints(
            self.run_dir / "checkpoints", self.processes, self.recipe.keep_checkpoints, self.emit
        )
        # the loop's position: what a checkpoint's state.json records
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.elapsed_before = 0.0
        self.tokens_seen = 0
        self.skipped_batches = 0

    # -- reporting --------------------------------------------------------------------------------

    def emit(self, kind: str, **values: Any) -> None:
        self.metrics.emit(kind, **values)

    def peak_memory(self) -> int:
        return peak_memory(self.device)

    # -- setup ------------------------------------------------------------------------------------

    def setup(self) -> None:
        import torch

        r = self.recipe
        if not self.resume:
            self.metrics.start_over()
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.processes.start(on_gpu=r.on_gpu)
        self.device, self.precision, self.dtype = device_and_precision(r, self.processes.local_rank)
        self.processes.device = self.device
        random.seed(r.seed)
        torch.manual_seed(r.seed)
        self._load_model()
        self._load_data()
        # what a step's loss is averaged over: trained tokens, or pairs
        self.trained_in = (lambda __: 1) if self.preference else trained_per_example(self.examples)
        reference_event = None
        if r.objective == "dpo":  # before a resume restores its checkpoint: the weights are still the reference
            started = time.monotonic()
            self.references, computed = load_or_compute_references(self, self.run_dir)
            reference_event = {
                "pairs": len(self.examples) + len(self.validation),
                "computed": computed,  # False: read back from the run folder (a resume)
                "seconds": round(time.monotonic() - started, 2),
            }
        base = base_model(self.model)
        self.flops_per_token = flops_per_token(base.config, r.seq_len, sum(p.numel() for p in base.parameters()))
        self.peak = peak_flops(self.device)
        self._make_optimizer()
        self.parts = TrainingParts(
            self.loss_module, self.optimizer, self.scheduler, self.scaler, self.trainable, self.device
        )
        if self.resume:
            self._restore()
        if reference_event is not None:  # after a resume trims the metrics back to its checkpoint
            self.emit("reference", **reference_event)
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, *__: Any) -> None:
        self.stop_requested = True

    def _load_model(self) -> None:
        import torch

        from internlocal.train.attention import register
        from internlocal.train.memory import fp32_master_weights
        from internlocal.train.model import load_model, load_tokenizer, prepare_for_training

        r = self.recipe
        self.tokenizer = load_tokenizer(self.config.model_path, r.trust_remote_code)
        # fp32 master weights under autocast where updates would vanish in bf16 (see fp32_master_weights);
        # LoRA/QLoRA keep a frozen base in the compute dtype (their adapters are fp32 anyway)
        self.autocast = None
        if fp32_master_weights(r.method, self.precision, self.device.type == "cuda"):
            self.autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        # corpus sequences are already full; preference pairs are padded (each answer is scored as a whole)
        self.packing = r.packing and r.method != "pretrain" and not self.preference
        # examples in a packed row must not see each other: our attention splits rows at position resets;
        # pretraining rows are one causal sequence each (documents joined by EOS), so one batched SDPA call does
        attention = "sdpa" if r.method == "pretrain" else register()
        model, took_attention = load_model(
            r,
            self.config.model_path,
            self.tokenizer,
            load_dtype=torch.float32 if self.autocast is not None else self.dtype,
            compute_dtype=self.dtype,
            device=self.device,
            attention=attention,
        )
        if not took_attention and self.packing:  # remote-code models take no attention backend: pad instead
            self.packing = False
            self.emit(
                "warning",
                message="this model's code does not accept an attention backend, so examples are padded "
                "instead of packed",
            )
        self.model = prepare_for_training(model, r, self.device)
        self.loss_module = (
            preference_loss(self.model, r.objective, r.beta, r.sft_weight)
            if self.preference
            else causal_lm_loss(self.model)
        )
        self.wrapped = wrap_for_processes(self.loss_module, self.model, r.distributed, self.processes)
        # after sharding: FSDP replaces the parameters with sharded ones
        self.trainable = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def _load_data(self) -> None:
        r, config = self.recipe, self.config
        self.examples: Examples
        self.validation: Examples
        if config.corpus_dir:  # pretraining: fixed-length sequences, memory-mapped, every token trained
            embeddings = self.model.get_input_embeddings().num_embeddings
            self.examples, self.validation, self.pad_id = load_corpus(
                Path(config.corpus_dir), self.tokenizer, config.model_path, r.seq_len, embeddings
            )
            self._count_steps(len(self.examples))
            return
        pad = getattr(self.tokenizer, "pad_token_id", None)
        self.pad_id = pad if pad is not None else 0
        if self.preference:
            pairs, held, dropped = load_pairs(
                self.tokenizer, config.train_file, config.validation_file, r.seq_len, r.objective
            )
            # a pair's four lists, read by preference.py (the loop itself only counts and shuffles them)
            self.examples, self.validation = pairs, held  # type: ignore[assignment]
            if dropped:
                self.emit("warning", message=f"{dropped} pairs lost an answer to seq_len={r.seq_len} and were skipped")
            self._count_steps(len(pairs))
            return
        train, self.validation, dropped = load_examples(
            self.tokenizer, config.train_file, config.validation_file, r.seq_len, r.train_on
        )
        self.examples = train
        if dropped:
            self.emit("warning", message=f"{dropped} training examples had no trainable token and were skipped")
        self._count_steps(len(epoch_rows(train, r.seq_len, self.packing, r.seed, 0)))

    def _count_steps(self, rows_per_epoch: int) -> None:
        r = self.recipe
        self.batches_per_epoch = max(1, math.ceil((rows_per_epoch // self.world) / r.micro_batch))
        steps_per_epoch = max(1, self.batches_per_epoch // r.grad_accum)
        self.total_steps = r.max_steps or max(1, math.ceil(steps_per_epoch * r.epochs))

    def _make_optimizer(self) -> None:
        import torch

        r = self.recipe
        params = [p for p in self.loss_module.parameters() if p.requires_grad]
        if r.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(
                params, lr=r.lr, weight_decay=r.weight_decay, fused=self.device.type == "cuda" or None
            )
        else:
            import bitsandbytes as bnb

            cls = bnb.optim.PagedAdamW8bit if r.optimizer == "paged_adamw_8bit" else bnb.optim.AdamW8bit
            self.optimizer = cls(params, lr=r.lr, weight_decay=r.weight_decay)
        warmup = int(r.warmup_ratio * self.total_steps)
        total = self.total_steps

        def factor(step: int) -> float:  # linear warm-up, then cosine or linear decay to 0 (or constant)
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            if r.lr_scheduler == "cosine":
                return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
            if r.lr_scheduler == "linear":
                return max(0.0, 1 - progress)
            return 1.0

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    # -- checkpoints ------------------------------------------------------------------------------

    def _fsdp(self) -> bool:
        return self.world > 1 and self.recipe.distributed == "fsdp"

    def _sharded_checkpoints(self) -> bool:
        """torch DCP checkpoints: FSDP's shards, and every pretraining run's (DCP reshards on load, so a run
        resumes on another number of processes)."""
        return self._fsdp() or self.recipe.method == "pretrain"

    def save_checkpoint(self, reason: str) -> Path | None:
        position = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "world": self.world,
            "micro_batch": self.recipe.micro_batch,
            "skipped_batches": self.skipped_batches,
            "elapsed": self._elapsed(),
            "tokens_seen": self.tokens_seen,
        }
        return self.checkpoints.save(self.parts, position, self._sharded_checkpoints(), reason)

    def _restore(self) -> None:
        restored = self.checkpoints.restore(self.parts)
        if restored is None:
            self.metrics.start_over()
            return  # nothing saved yet: a resume starts from the beginning
        last, state = restored
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        saved_world = state.get("world", self.world)
        if saved_world != self.world:  # resumed on another number of processes: continue at the same global row
            rows_done = self.batch_in_epoch * state.get("micro_batch", self.recipe.micro_batch) * saved_world
            self.batch_in_epoch = rows_done // (self.recipe.micro_batch * self.world)
            self.emit("warning", message=f"resumed on {self.world} processes (checkpoint from {saved_world})")
        self.elapsed_before, self.tokens_seen = state["elapsed"], state["tokens_seen"]
        self.skipped_batches = state.get("skipped_batches", 0)
        self.metrics.keep_until(self.step)  # the curve continues from the checkpoint, not from the crash
        self.emit("resumed", step=self.step, checkpoint=str(last))

    # -- training ---------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self._started)

    def _batches(self, epoch: int) -> list[list[list[list[int]]]]:
        """Every rank's micro-batches (lists of rows of example indices) of one epoch: the shuffle is seeded, so
        each process knows all of them, and uses the others' only to count a step's trained tokens."""
        r = self.recipe
        rows = epoch_rows(self.examples, r.seq_len, self.packing, r.seed, epoch)
        per_rank = (len(rows) // self.world) or len(rows)
        shares = [rows[rank :: self.world][:per_rank] for rank in range(self.world)]
        return [[share[i : i + r.micro_batch] for i in range(0, len(share), r.micro_batch)] for share in shares]

    def _make_batch(self, examples: Examples, rows: list[list[int]], split: str = "train") -> Batch:
        if self.preference:  # rows of one pair each
            return make_pair_batch(examples, [row[0] for row in rows], self.pad_id, self.references.get(split))  # type: ignore[arg-type]
        return make_batch(examples, rows, self.pad_id, self.packing if split == "train" else False)

    def _forward(self, batch: Batch, **extra: Any):
        """The loss (SFT: a number; DPO/ORPO: the loss and its ``STATS``) of one micro-batch."""
        import torch

        args = [t.to(self.device) for t in (batch.input_ids, batch.labels, batch.position_ids)]
        mask = batch.attention_mask.to(self.device) if batch.attention_mask is not None else None
        if batch.reference is not None:
            extra["reference"] = batch.reference.to(self.device)
        if self.autocast is not None:
            with torch.autocast("cuda", dtype=self.autocast):
                return self.wrapped(*args, attention_mask=mask, **extra)
        return self.wrapped(*args, attention_mask=mask, **extra)

    def train(self) -> str:
        """Optimizer steps until total_steps (``finished``) or a stop request (``stopped``).

        Loss: the sum of cross-entropies over the step's trained tokens, divided by their count over all
        micro-batches and ranks, so accumulation and data parallelism give one big batch's gradient (DDP
        averages gradients over ranks: each rank's loss is scaled back up by the world size).

        One blocking all-reduce per step besides the gradients' own: [loss sum, tokens seen, tokens trained,
        save requested, stop requested], after the backward passes. The loss sum must be known everywhere
        before the update (a non-finite loss on any rank drops the step on all), and the flags make every rank
        checkpoint or stop at the same step. The step's trained-token total, needed before backward, is counted
        locally: every rank knows every rank's rows.
        """
        import torch

        r = self.recipe
        self._started = time.monotonic()
        stop_file, save_file = self.run_dir / "STOP", self.run_dir / "SAVE_NOW"
        self.emit(
            "start",
            total_steps=self.total_steps,
            examples=len(self.examples),
            validation=len(self.validation),
            world_size=self.world,
            precision=self.precision,
            device=str(self.device),
            trainable_parameters=sum(p.numel() for __, p in self.trainable),
            resumed_from=self.step or None,
            flops_per_token=self.flops_per_token,
            peak_flops_per_device=self.peak,
        )
        if (r.method == "pretrain" or self.preference) and self.step == 0 and self.validation:
            self.evaluate()  # the starting point of the validation curve (and of held-out preference accuracy)
        step_started = time.monotonic()
        first_step = self.step
        window_real = window_trained = 0
        first_pending = None  # index of the first micro-batch of the step being accumulated
        while self.step < self.total_steps:
            every_rank = self._batches(self.epoch)
            batches = every_rank[self.rank]
            while self.batch_in_epoch < len(batches) and self.step < self.total_steps:
                first_pending = self.batch_in_epoch if first_pending is None else first_pending
                self.batch_in_epoch += 1
                if self.batch_in_epoch - first_pending < r.grad_accum and self.batch_in_epoch < len(batches):
                    continue
                step_range = range(first_pending, self.batch_in_epoch)
                first_pending = None
                made = [self._make_batch(self.examples, batches[i]) for i in step_range]
                step_tokens = sum(
                    self.trained_in(example)
                    for share in every_rank
                    for i in step_range
                    for row in share[i]
                    for example in row
                )
                loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)  # read once, in the all-reduce
                stats_sum = torch.zeros(len(STATS) if self.preference else 0, dtype=torch.float64, device=self.device)
                for batch in made:
                    loss = self._forward(batch)
                    if self.preference:
                        loss, stats = loss
                        stats_sum += stats.double()
                    scaled = loss * (self.world / max(step_tokens, 1))
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                    loss_sum += loss.detach().double()
                    window_real += batch.real_tokens
                    window_trained += batch.trained_tokens
                wants = (self.stop_requested or stop_file.exists(), save_file.exists())
                all_loss, real_all, trained_all, stops, saves, *stats_all = self.processes.sum(
                    loss_sum, window_real, window_trained, *(float(flag) for flag in wants), *stats_sum.unbind()
                )
                if not math.isfinite(all_loss):  # an inf/nan loss on any rank: this step's update is dropped
                    self.optimizer.zero_grad(set_to_none=True)
                    self.skipped_batches += 1
                    window_real = window_trained = 0
                    self.emit(
                        "warning",
                        message=f"non-finite loss at step {self.step + 1}: batch skipped "
                        f"({self.skipped_batches} so far)",
                    )
                    if self.skipped_batches > 50 and self.skipped_batches > self.step:
                        raise TrainingError(_("The loss is not finite for most batches; lower lr or check the data."))
                    continue
                if self.scaler:
                    self.scaler.unscale_(self.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    [p for __, p in self.trainable], r.max_grad_norm or float("inf")
                )
                if hasattr(grad_norm, "full_tensor"):  # FSDP: a sharded norm
                    grad_norm = grad_norm.full_tensor()
                if self.scaler:
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                else:
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                lr = self.scheduler.get_last_lr()[0]
                self.scheduler.step()
                self.step += 1
                self.tokens_seen += int(real_all)
                seconds = time.monotonic() - step_started
                elapsed = self._elapsed()
                per_step = (elapsed - self.elapsed_before) / max(1, self.step - first_step)
                per_device = real_all / max(seconds, 1e-9) / self.world
                tflops = per_device * self.flops_per_token / 1e12
                self.emit(
                    "step",
                    step=self.step,
                    total_steps=self.total_steps,
                    epoch=self.epoch,
                    loss=round(all_loss / max(step_tokens, 1), 5),
                    lr=lr,
                    grad_norm=round(float(grad_norm), 5),
                    tokens=int(real_all),
                    trained_tokens=int(trained_all),
                    tokens_per_s=round(real_all / max(seconds, 1e-9), 1),
                    tokens_per_s_per_device=round(per_device, 1),
                    tflops_per_device=round(tflops, 4),
                    mfu=round(tflops * 1e12 / self.peak, 4) if self.peak else None,
                    consumed_tokens=self.tokens_seen,
                    skipped_batches=self.skipped_batches,
                    peak_memory=self.peak_memory(),
                    elapsed=round(elapsed, 2),
                    eta=round(per_step * (self.total_steps - self.step), 1),
                    **(  # preference tuning: the pairs' statistics, averaged over the step's pairs
                        {name: round(v / max(step_tokens, 1), 5) for name, v in zip(STATS, stats_all, strict=True)}
                        if self.preference
                        else {}
                    ),
                )
                window_real = window_trained = 0
                if r.eval_every and self.step % r.eval_every == 0 and self.step < self.total_steps:
                    self.evaluate()
                want_stop = stops > 0
                want_save = saves > 0 or bool(r.save_every and self.step % r.save_every == 0)
                if want_save or want_stop:
                    self.save_checkpoint("stop" if want_stop else ("save now" if saves > 0 else "periodic"))
                    if self.processes.leader:
                        save_file.unlink(missing_ok=True)
                if want_stop:
                    if self.processes.leader:
                        stop_file.unlink(missing_ok=True)
                    self.emit("stopped", step=self.step)
                    return "stopped"
                step_started = time.monotonic()
            if self.batch_in_epoch >= len(batches):
                self.epoch += 1
                self.batch_in_epoch = 0
        self.evaluate()
        return "finished"

    def evaluate(self) -> None:
        """Validation over the held-out examples (or pairs), and greedy answers to the sample prompts."""
        import torch

        r = self.recipe
        self.loss_module.eval()
        with torch.no_grad():
            held_out = self._validate_pairs() if self.preference else self._validation_loss()
        samples = []
        # under FSDP every rank generates too (the same greedy steps, so the same number of gathers); rank 0 reports
        if r.sample_prompts and self.tokenizer is not None and (self._fsdp() or self.processes.leader):
            chat = r.method != "pretrain"
            samples = [
                {"prompt": p, "answer": greedy_answer(self.model, self.tokenizer, p, self.device, self.pad_id, chat)}
                for p in r.sample_prompts
            ]
        self.loss_module.train()
        self.emit("eval", step=self.step, **held_out, samples=samples)

    def _validation_loss(self) -> dict[str, Any]:
        """The mean token loss over the held-out examples (and its perplexity)."""
        r = self.recipe
        total = tokens = 0.0
        mine = rank_share(self.validation, self.rank, self.world)
        # every rank runs the same number of forward passes (under FSDP each one gathers weights from all
        # ranks, so a rank with one batch more would wait forever); a rank out of rows repeats one, uncounted
        per_rank = math.ceil(len(self.validation) / self.world)
        for k in range(math.ceil(per_rank / r.micro_batch)):
            start = k * r.micro_batch
            rows = [[i] for i in range(start, min(start + r.micro_batch, len(mine)))]
            source, counted = (mine, True) if rows else (self.validation, False)
            batch = make_batch(source, rows or [[0]], self.pad_id, packing=False)
            loss = float(self._forward(batch))
            if counted:
                total += loss
                tokens += batch.trained_tokens
        total, tokens = self.processes.sum(total, tokens)
        val_loss = total / tokens if tokens else None
        return {
            "val_loss": round(val_loss, 5) if val_loss is not None else None,
            "val_tokens": int(tokens),
            "val_ppl": round(math.exp(min(val_loss, 50)), 4) if val_loss is not None else None,
        }

    def _validate_pairs(self) -> dict[str, Any]:
        """The preference objective and its ``STATS`` over the held-out pairs (mean per pair, ``val_``-prefixed).
        Every rank runs the same number of forward passes (see ``_validation_loss``)."""
        import torch

        n, micro = len(self.validation), self.recipe.micro_batch
        mine = list(range(self.rank, n, self.world))
        totals = torch.zeros(1 + len(STATS), dtype=torch.float64, device=self.device)
        for k in range(math.ceil(math.ceil(n / self.world) / micro)):
            indices = mine[k * micro : (k + 1) * micro]
            batch = self._make_batch(self.validation, [[i] for i in indices or [0]], "validation")
            loss, stats = self._forward(batch)
            if indices:
                totals += torch.cat([loss.detach().double().reshape(1), stats.double()])
        total, *stats = self.processes.sum(*totals.unbind())
        if not n:
            return {"val_loss": None, "val_pairs": 0}
        return {
            "val_loss": round(total / n, 5),
            "val_pairs": n,
            **{f"val_{name}": round(v / n, 5) for name, v in zip(STATS, stats, strict=True)},
        }

    # -- the result -------------------------------------------------------------------------------

    def save_final(self) -> dict[str, Any]:
        """``adapter/`` (LoRA, QLoRA) or ``model/`` (full, pretraining), with the tokenizer."""
        name = "model" if self.recipe.method in ("full", "pretrain") else "adapter"
        saved = save_final_model(self.model, self.tokenizer, self.run_dir / name, self._fsdp(), self.processes)
        return {name: str(saved)} if saved is not None else {}

    def cleanup(self) -> None:
        self.processes.close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    # the job runner starts this entry point (train/process.py); a person never reads its --help
    parser = argparse.ArgumentParser(description="internlocal training loop")  # i18n: not translated
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    from internlocal.i18n import resolve_language, set_language

    set_language(resolve_language())  # INTERNLOCAL_LANG, inherited: its errors reach the UI in the UI's language
    if "TORCHELASTIC_RUN_ID" in os.environ:  # a rank torchrun started ends with it (a SIGKILLed agent cleans nothing)
        die_with_parent()
    trainer = Trainer(Path(args.run_dir), resume=args.resume)
    try:
        trainer.setup()
        status = trainer.train()
        outputs = trainer.save_final() if status == "finished" else {}
        result = {
            "status": status,
            "step": trainer.step,
            "total_steps": trainer.total_steps,
            "final_loss": trainer.metrics.last_loss(),
            "peak_memory": trainer.peak_memory(),
            "elapsed": round(trainer._elapsed(), 2),
            "tokens_seen": trainer.tokens_seen,
            **outputs,
        }
        if trainer.preference and trainer.processes.leader:
            held_out = held_out_summary(trainer.metrics_path)
            if held_out is not None:
                result["held_out"] = held_out
        if trainer.processes.leader:
            (trainer.run_dir / "result.json").write_text(json.dumps(result, indent=1))
            trainer.emit("done", **result)
        return 0
    except UserError as exc:  # TrainingError, and what the data layer and tokenizer loader refuse
        trainer.emit("error", message=str(exc))
        print(_("error: {error}").format(error=exc), file=sys.stderr)
        return 2
    finally:
        trainer.cleanup()


if __name__ == "__main__":
    sys.exit(main())
