"""The training loop: one explicit loop for full, LoRA and QLoRA finetuning (setup / train / save / cleanup).

Run as ``python -m internlocal.train.loop RUN_DIR`` (or under ``torchrun`` for several processes);
``RUN_DIR/config.json`` holds the resolved recipe and the paths. Nothing here imports the catalog
or the UI, so the same file runs on a bare GPU server.

What it writes to ``RUN_DIR`` (rank 0 only):

- ``metrics.jsonl``: one JSON line per optimizer step (``type: step``: step, epoch, loss, lr,
  grad_norm, tokens/s, peak memory, elapsed, ETA), per evaluation (``type: eval``: validation loss
  and sample generations), and events (``checkpoint``, ``warning``, ``done``, ``error``).
- ``checkpoints/step-N/``: trainable weights, optimizer, scheduler, data position and RNG states,
  written to ``step-N.tmp`` and renamed when complete (a full disk leaves the previous one intact).
- ``adapter/`` (LoRA, QLoRA) or ``model/`` (full) at the end, and ``result.json``.

Triggers: an empty ``SAVE_NOW`` file makes it checkpoint at the next step; ``STOP`` (or SIGTERM)
makes it checkpoint and exit; ``--resume`` continues from the newest complete checkpoint.

Speed: examples are packed into rows of ``seq_len`` with positions restarting per example and
attended to one example at a time (``attention.py``: no attention across examples, no padding,
no L×L masks), and logits are computed only where a trained token is predicted, in chunks that
are recomputed in the backward pass, so vocabulary-sized tensors never exist for a whole batch.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IGNORE = -100
LOGIT_CHUNK = 1024
_NO_FAST_LOSS = {"gemma2", "gemma3", "gemma3_text", "cohere", "cohere2", "granite"}  # logits post-processed in forward


class TrainingError(Exception):
    """A problem the user can fix; the message is written to metrics.jsonl and stderr."""


@dataclass
class Batch:
    input_ids: Any
    labels: Any
    position_ids: Any
    attention_mask: Any | None
    real_tokens: int
    trained_tokens: int


# -- data -------------------------------------------------------------------------------------------


def render_examples(
    tokenizer, rows: list[dict[str, Any]], seq_len: int, train_on: str
) -> tuple[list[tuple[list[int], list[int]]], int]:
    """Token ids and labels of each example (truncated to seq_len); examples with nothing to train are dropped."""
    from internlocal.data.rendering import Rendered, render

    out, dropped = [], 0
    for row in rows:
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


def epoch_rows(
    examples: list[tuple[list[int], list[int]]], seq_len: int, packing: bool, seed: int, epoch: int
) -> list[list[int]]:
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


def make_batch(examples, rows: list[list[int]], pad_id: int, packing: bool) -> Batch:
    import torch

    seqs = []
    for row in rows:
        ids, labels, positions = [], [], []
        for i in row:
            e_ids, e_labels = examples[i]
            ids += e_ids
            labels += [IGNORE] + e_labels[1:]  # an example's first token is not predicted from the one before
            positions += range(len(e_ids))
        seqs.append((ids, labels, positions))
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

    def __len__(self) -> int:
        return self.total

    def __getitem__(self, i):
        import bisect

        if isinstance(i, slice):  # a rank's share: a view, nothing read yet
            return _View(self, range(self.total)[i])
        k = bisect.bisect_right(self.offsets, i) - 1
        ids = self.shards[k][i - self.offsets[k]].tolist()
        return ids, ids


class _View:
    def __init__(self, parent: Sequences, indices: range):
        self.parent, self.indices = parent, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.parent[self.indices[i]]


def _scratch_model(r: dict[str, Any], tokenizer, dtype, attention: str):
    """A new model of the recipe's architecture (Llama layout) with the tokenizer's vocabulary, seeded."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    if tokenizer is None:
        raise TrainingError(
            "A from-scratch model takes its vocabulary from a tokenizer, and the recipe's model has none."
        )
    a = r["architecture"]
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=a["hidden"],
        num_hidden_layers=a["layers"],
        num_attention_heads=a["heads"],
        num_key_value_heads=a["kv_heads"] or a["heads"],
        intermediate_size=a["intermediate"],
        max_position_embeddings=a["max_positions"],
        rope_theta=a["rope_theta"],
        tie_word_embeddings=a["tie_embeddings"],
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(r["seed"])
    return AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attention)


def flops_per_token(config, seq_len: int, parameters: int) -> float:
    """Model FLOPs of one trained token: 6 per non-embedding weight plus attention's 12·layers·hidden·seq_len
    (the PaLM paper's MFU accounting; activation recomputation is not counted)."""
    layers = getattr(config, "num_hidden_layers", 0) or 0
    hidden = getattr(config, "hidden_size", 0) or 0
    vocab = getattr(config, "vocab_size", 0) or 0
    return 6.0 * max(0, parameters - vocab * hidden) + 12.0 * layers * hidden * seq_len


# dense bf16/fp16 tensor-core peaks (FLOP/s) of common GPUs, for MFU; unknown devices report none
PEAK_FLOPS = {
    "H200": 989e12,
    "H100": 989e12,
    "H800": 989e12,
    "A100": 312e12,
    "A800": 312e12,
    "L40S": 362e12,
    "L40": 181e12,
    "RTX 4090": 165e12,
    "A10": 125e12,
    "V100": 125e12,
    "T4": 65e12,
    "RTX 3090": 71e12,
}


def peak_flops(device) -> float | None:
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


# -- the loss module (what DDP / FSDP wrap) ---------------------------------------------------------


def _loss_module(model, fast: bool):
    import torch
    from torch.utils.checkpoint import checkpoint

    class CausalLMLoss(torch.nn.Module):
        """Sum of token cross-entropies over trained positions; logits only there, in recomputed chunks."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, labels, position_ids, attention_mask=None):
            targets = labels[:, 1:]
            keep = targets != IGNORE
            if not fast:
                logits = self.inner(
                    input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask
                ).logits
                picked = logits[:, :-1][keep].float()
                return torch.nn.functional.cross_entropy(picked, targets[keep], reduction="sum")
            base = self.inner.get_base_model() if hasattr(self.inner, "get_base_model") else self.inner
            hidden = base.get_decoder()(
                input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask
            ).last_hidden_state
            selected = hidden[:, :-1][keep]
            wanted = targets[keep]
            head = base.get_output_embeddings()
            total = hidden.new_zeros((), dtype=torch.float32)
            for start in range(0, selected.shape[0], LOGIT_CHUNK):
                total = total + checkpoint(
                    _chunk_ce,
                    head,
                    selected[start : start + LOGIT_CHUNK],
                    wanted[start : start + LOGIT_CHUNK],
                    use_reentrant=False,
                )
            return total

    return CausalLMLoss(model)


def _chunk_ce(head, hidden, targets):
    import torch

    return torch.nn.functional.cross_entropy(head(hidden).float(), targets, reduction="sum")


# -- the trainer ------------------------------------------------------------------------------------


class Trainer:
    def __init__(self, run_dir: Path, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.config = json.loads((self.run_dir / "config.json").read_text())
        self.recipe: dict[str, Any] = self.config["recipe"]
        self.resume = resume
        self.stop_requested = False
        self.rank, self.world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.checkpoints = self.run_dir / "checkpoints"
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.elapsed_before = 0.0
        self.tokens_seen = 0
        self.skipped_batches = 0

    # -- reporting --------------------------------------------------------------------------------

    def emit(self, kind: str, **values: Any) -> None:
        if self.rank != 0:
            return
        try:
            with self.metrics_path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"type": kind, "t": round(time.time(), 3), **values}, ensure_ascii=False) + "\n")
        except OSError as exc:  # a full disk: say so in one sentence (the last checkpoint is intact) instead of a trace
            if kind == "error":
                return  # reporting the error itself failed: stderr still has it
            raise TrainingError(
                f"Could not write {self.metrics_path.name} ({exc.strerror or exc}); free disk space "
                "and resume the run from its last checkpoint."
            ) from None

    def peak_memory(self) -> int:
        import torch

        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        import resource

        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux

    # -- setup ------------------------------------------------------------------------------------

    def setup(self) -> None:
        import torch

        r = self.recipe
        if not self.resume and self.rank == 0:
            self.metrics_path.unlink(missing_ok=True)  # a fresh run: a fresh curve
        if self.config.get("threads"):
            torch.set_num_threads(int(self.config["threads"]))
        if self.world > 1:
            import torch.distributed as dist

            backend = "nccl" if torch.cuda.is_available() and r["hardware"] != "cpu" else "gloo"
            dist.init_process_group(backend)
        wants_gpu = r["hardware"] in ("gpu", "multi-gpu")
        if wants_gpu and not torch.cuda.is_available():
            raise TrainingError(
                f"This recipe is for hardware: {r['hardware']}, but no CUDA GPU is visible; "
                "use a cpu recipe or hardware=cpu."
            )
        self.device = torch.device(f"cuda:{self.local_rank}" if wants_gpu else "cpu")
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        precision = r["precision"]
        if precision == "auto":
            precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if self.device.type == "cuda" else "fp32"
        self.precision = precision
        self.dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        random.seed(r["seed"])
        torch.manual_seed(r["seed"])
        self._load_model()
        self._load_data()
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self.flops_per_token = flops_per_token(base.config, r["seq_len"], sum(p.numel() for p in base.parameters()))
        self.peak = peak_flops(self.device)
        self._make_optimizer()
        if self.resume:
            self._restore()
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, *_: Any) -> None:
        self.stop_requested = True

    def _load_model(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from internlocal.data.tokenizer import hf_tokenizer
        from internlocal.errors import UserError

        r = self.recipe
        path = self.config["model_path"]
        try:
            self.tokenizer = hf_tokenizer(path, trust_remote_code=r["trust_remote_code"])
        except UserError as exc:  # remote code the recipe does not trust
            raise TrainingError(str(exc)) from None
        except (OSError, ValueError):  # a folder without tokenizer files: only pre-tokenized data can be used
            self.tokenizer = None
        kwargs: dict[str, Any] = {"trust_remote_code": r["trust_remote_code"]}
        from internlocal.train.memory import fp32_master_weights

        # fp32 master weights under autocast where updates would vanish in bf16 (see fp32_master_weights);
        # LoRA/QLoRA keep a frozen base in the compute dtype (their adapters are fp32 anyway)
        self.autocast = None
        if fp32_master_weights(r["method"], self.precision, self.device.type == "cuda"):
            self.autocast = {"fp16": torch.float16, "bf16": torch.bfloat16}[self.precision]
        load_dtype = torch.float32 if self.autocast is not None else self.dtype
        if r["method"] == "qlora":
            from transformers import BitsAndBytesConfig

            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.float32 if self.precision == "fp16" else self.dtype,
            )
            kwargs["device_map"] = {"": self.device.index if self.device.type == "cuda" else "cpu"}
        from internlocal.train.attention import register

        self.packing = bool(r["packing"]) and r["method"] != "pretrain"  # corpus sequences are already full
        # examples in a packed row must not see each other: our attention splits rows at position resets;
        # pretraining rows are one causal sequence each (documents joined by EOS), so one batched SDPA call does
        attention = "sdpa" if r["method"] == "pretrain" else register()
        if r.get("init") == "scratch":
            model = _scratch_model(r, self.tokenizer, load_dtype, attention)
        else:
            model = None
        try:
            if model is None:
                model = AutoModelForCausalLM.from_pretrained(
                    path, dtype=load_dtype, attn_implementation=attention, **kwargs
                )
        except (ValueError, ImportError):  # remote-code models take no attention backend: pad instead of packing
            model = AutoModelForCausalLM.from_pretrained(path, dtype=load_dtype, **kwargs)
            if self.packing:
                self.packing = False
                self.emit(
                    "warning",
                    message="this model's code does not accept an attention backend, so examples are "
                    "padded instead of packed",
                )
        if r["method"] == "qlora":
            import bitsandbytes as bnb

            for module in model.modules():
                if isinstance(module, bnb.nn.Linear4bit):
                    # bitsandbytes repacks NF4 weights for fast CPU inference on the first no-grad forward
                    # (an evaluation); the repacked path has no backward, so gradients after it would be
                    # wrong. Training keeps the trainable layout throughout.
                    module.support_avx512bf16_for_cpu = False
        else:
            model.to(self.device)
        if r["gradient_checkpointing"]:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        if r["method"] in ("lora", "qlora"):
            from peft import LoraConfig, get_peft_model

            lora = r["lora"]
            model = get_peft_model(
                model,
                LoraConfig(
                    r=lora["r"],
                    lora_alpha=lora["alpha"],
                    lora_dropout=lora["dropout"],
                    target_modules=lora["targets"],
                    task_type="CAUSAL_LM",
                ),
            )
        model.train()
        self.model = model
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        fast = (
            base.config.model_type not in _NO_FAST_LOSS
            and callable(getattr(base, "get_decoder", None))
            and base.get_output_embeddings() is not None
        )
        self.loss_module = _loss_module(model, fast)
        self.wrapped = self.loss_module
        if self.world > 1:
            if r["distributed"] == "fsdp":
                from torch.distributed.fsdp import fully_shard

                layers = [m for m in model.modules() if type(m).__name__.endswith("DecoderLayer")]
                for layer in layers:
                    fully_shard(layer)
                fully_shard(self.loss_module)
            else:
                from torch.nn.parallel import DistributedDataParallel

                self.wrapped = DistributedDataParallel(
                    self.loss_module, device_ids=[self.device.index] if self.device.type == "cuda" else None
                )
        # after sharding: FSDP replaces the parameters with sharded ones
        self.trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    def _load_data(self) -> None:
        r = self.recipe
        if self.config.get("corpus_dir"):
            self._load_corpus()
            return

        def read(path: str | None) -> list[dict[str, Any]]:
            if not path or not Path(path).exists():
                return []
            return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]

        self.examples, dropped = render_examples(
            self.tokenizer, read(self.config["train_file"]), r["seq_len"], r["train_on"]
        )
        if not self.examples:
            raise TrainingError(
                "No training example has a token to train on (assistant answers empty or cut off by "
                f"seq_len={r['seq_len']}); check the dataset or raise seq_len."
            )
        self.validation, _ = render_examples(
            self.tokenizer, read(self.config.get("validation_file")), r["seq_len"], r["train_on"]
        )
        if dropped:
            self.emit("warning", message=f"{dropped} training examples had no trainable token and were skipped")
        pad = getattr(self.tokenizer, "pad_token_id", None)
        self.pad_id = pad if pad is not None else 0
        rows = epoch_rows(self.examples, r["seq_len"], self.packing, r["seed"], 0)
        per_rank = len(rows) // self.world
        self.batches_per_epoch = max(1, math.ceil(per_rank / r["micro_batch"]))
        steps_per_epoch = max(1, self.batches_per_epoch // r["grad_accum"])
        self.total_steps = r["max_steps"] or max(1, math.ceil(steps_per_epoch * r["epochs"]))

    def _load_corpus(self) -> None:
        """Pretraining: fixed-length token sequences from a prepared corpus, memory-mapped, every token trained."""
        from internlocal.data.corpus import CorpusIndex, tokenizer_fingerprint

        r = self.recipe
        try:
            index = CorpusIndex.load(Path(self.config["corpus_dir"]))
        except Exception as exc:  # UserError from the data layer: the loop reports TrainingError
            raise TrainingError(str(exc)) from None
        if self.tokenizer is not None and tokenizer_fingerprint(self.tokenizer) != index.tokenizer:
            raise TrainingError(
                f"The corpus {index.path} was tokenized with another tokenizer than {self.config['model_path']}'s; "
                "prepare it again for this model."
            )
        if index.seq_len != r["seq_len"]:
            raise TrainingError(
                f"The corpus holds sequences of {index.seq_len} tokens but the recipe says seq_len={r['seq_len']}."
            )
        if self.tokenizer is not None and index.vocab_size > self.model.get_input_embeddings().num_embeddings:
            raise TrainingError(
                f"The corpus's tokenizer has {index.vocab_size} tokens, more than the model's embeddings."
            )
        self.examples = Sequences(index.sequences("train"))
        self.validation = Sequences(index.sequences("validation"))
        self.pad_id = index.eos_id
        self.batches_per_epoch = max(1, math.ceil((len(self.examples) // self.world) / r["micro_batch"]))
        steps_per_epoch = max(1, self.batches_per_epoch // r["grad_accum"])
        self.total_steps = r["max_steps"] or max(1, math.ceil(steps_per_epoch * r["epochs"]))

    def _make_optimizer(self) -> None:
        import torch

        r = self.recipe
        params = [p for p in self.loss_module.parameters() if p.requires_grad]
        if r["optimizer"] == "adamw":
            self.optimizer = torch.optim.AdamW(
                params, lr=r["lr"], weight_decay=r["weight_decay"], fused=self.device.type == "cuda" or None
            )
        else:
            import bitsandbytes as bnb

            cls = bnb.optim.PagedAdamW8bit if r["optimizer"] == "paged_adamw_8bit" else bnb.optim.AdamW8bit
            self.optimizer = cls(params, lr=r["lr"], weight_decay=r["weight_decay"])
        warmup = int(r["warmup_ratio"] * self.total_steps)
        total = self.total_steps
        kind = r["lr_scheduler"]

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = (step - warmup) / max(1, total - warmup)
            if kind == "cosine":
                return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
            if kind == "linear":
                return max(0.0, 1 - progress)
            return 1.0

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None

    # -- checkpoints ------------------------------------------------------------------------------

    def _complete_checkpoints(self) -> list[Path]:
        if not self.checkpoints.is_dir():
            return []
        found = [
            p
            for p in self.checkpoints.iterdir()
            if p.is_dir() and p.name.startswith("step-") and not p.name.endswith(".tmp") and (p / "state.json").exists()
        ]
        return sorted(found, key=lambda p: int(p.name.split("-")[1]))

    def _fsdp(self) -> bool:
        return self.world > 1 and self.recipe["distributed"] == "fsdp"

    def _sharded_checkpoints(self) -> bool:
        """torch DCP checkpoints: FSDP's shards, and every pretraining run's (DCP reshards on load, so a run
        resumes on another number of processes)."""
        return self._fsdp() or self.recipe["method"] == "pretrain"

    def save_checkpoint(self, reason: str) -> Path | None:
        """Write checkpoints/step-N atomically; on failure (a full disk) keep the previous one and go on."""
        import numpy as np
        import torch

        final = self.checkpoints / f"step-{self.step}"
        if final.exists():
            return final
        tmp = self.checkpoints / f"step-{self.step}.tmp"
        ok = True
        try:
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            self._barrier()
            if self._sharded_checkpoints():
                import torch.distributed.checkpoint as dcp

                dcp.save(self._sharded_state(), checkpoint_id=str(tmp / "sharded"))
            elif self.rank == 0:
                torch.save(self._trainable_state(), tmp / "trainable.pt")
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
            if self.rank == 0:
                torch.save(
                    {
                        "scheduler": self.scheduler.state_dict(),
                        "python": random.getstate(),
                        "numpy": np.random.get_state(),
                        "torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
                        "scaler": self.scaler.state_dict() if self.scaler else None,
                    },
                    tmp / "rng_scheduler.pt",
                )
                state = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "batch_in_epoch": self.batch_in_epoch,
                    "world": self.world,
                    "micro_batch": self.recipe["micro_batch"],
                    "skipped_batches": self.skipped_batches,
                    "elapsed": self._elapsed(),
                    "tokens_seen": self.tokens_seen,
                    "reason": reason,
                }
                (tmp / "state.json").write_text(json.dumps(state))
                for f in tmp.rglob("*"):
                    if f.is_file():
                        with f.open("rb") as fh:
                            os.fsync(fh.fileno())
        except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as RuntimeError
            ok = False
            if self.rank == 0:
                shutil.rmtree(tmp, ignore_errors=True)
                previous = self._complete_checkpoints()
                why = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
                self.emit(
                    "warning",
                    message=f"checkpoint at step {self.step} failed ({why}); "
                    f"kept {previous[-1].name if previous else 'no earlier checkpoint'}",
                )
        ok = self._all_agree(ok)
        if not ok:
            return None
        if self.rank == 0:
            tmp.rename(final)
            for old in self._complete_checkpoints()[: -self.recipe["keep_checkpoints"]]:
                shutil.rmtree(old, ignore_errors=True)
            self.emit("checkpoint", step=self.step, path=str(final), reason=reason)
        self._barrier()
        return final

    def _trainable_state(self) -> dict[str, Any]:
        return {n: p.detach().cpu().clone() for n, p in self.trainable}

    def _sharded_state(self) -> dict[str, Any]:
        """FSDP: every rank's shards of the trainable weights and of the optimizer state (initialised if empty)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        model, optimizer = get_state_dict(
            self.loss_module, self.optimizer, options=StateDictOptions(ignore_frozen_params=True)
        )
        return {"model": model, "optimizer": optimizer}

    def _restore(self) -> None:
        import numpy as np
        import torch

        found = self._complete_checkpoints()
        if not found:
            if self.rank == 0:
                self.metrics_path.unlink(missing_ok=True)
            return  # nothing saved yet: a resume starts from the beginning
        last = found[-1]
        state = json.loads((last / "state.json").read_text())
        if (last / "sharded").is_dir():
            import torch.distributed.checkpoint as dcp
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

            target = self._sharded_state()
            dcp.load(target, checkpoint_id=str(last / "sharded"))
            set_state_dict(
                self.loss_module,
                self.optimizer,
                model_state_dict=target["model"],
                optim_state_dict=target["optimizer"],
                options=StateDictOptions(ignore_frozen_params=True, strict=False),
            )
        else:
            saved = torch.load(last / "trainable.pt", map_location=self.device)
            params = dict(self.trainable)
            with torch.no_grad():
                for name, tensor in saved.items():
                    params[name].copy_(tensor)
            self.optimizer.load_state_dict(torch.load(last / "optimizer.pt", map_location=self.device))
        extra = torch.load(last / "rng_scheduler.pt", weights_only=False)
        self.scheduler.load_state_dict(extra["scheduler"])
        random.setstate(extra["python"])
        np.random.set_state(extra["numpy"])
        torch.set_rng_state(extra["torch"])
        if extra.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(extra["cuda"])
        if self.scaler and extra.get("scaler"):
            self.scaler.load_state_dict(extra["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        saved_world = state.get("world", self.world)
        if saved_world != self.world:  # resumed on another number of processes: continue at the same global row
            rows_done = self.batch_in_epoch * state.get("micro_batch", self.recipe["micro_batch"]) * saved_world
            self.batch_in_epoch = rows_done // (self.recipe["micro_batch"] * self.world)
            self.emit("warning", message=f"resumed on {self.world} processes (checkpoint from {saved_world})")
        self.elapsed_before, self.tokens_seen = state["elapsed"], state["tokens_seen"]
        self.skipped_batches = state.get("skipped_batches", 0)
        if self.rank == 0 and self.metrics_path.exists():  # the curve continues from the checkpoint, not from the crash
            kept = [
                line
                for line in self.metrics_path.read_text(encoding="utf-8").splitlines()
                if line.strip()
                and json.loads(line).get("step", 0) <= self.step
                and json.loads(line).get("type") in ("step", "eval", "checkpoint", "warning")
            ]
            tmp = self.metrics_path.with_suffix(".tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, self.metrics_path)  # a new file: readers following the old one start over
        self.emit("resumed", step=self.step, checkpoint=str(last))

    # -- distributed helpers ----------------------------------------------------------------------

    def _barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def _sum(self, value: float) -> float:
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return float(tensor.item())

    def _all_agree(self, flag: bool) -> bool:
        return self._sum(0.0 if flag else 1.0) == 0.0

    def _any(self, flag: bool) -> bool:
        return self._sum(1.0 if flag else 0.0) > 0

    # -- training ---------------------------------------------------------------------------------

    def _elapsed(self) -> float:
        return self.elapsed_before + (time.monotonic() - self._started)

    def _batches(self, epoch: int):
        r = self.recipe
        rows = epoch_rows(self.examples, r["seq_len"], self.packing, r["seed"], epoch)
        mine = rows[self.rank :: self.world][: (len(rows) // self.world) or len(rows)]
        return [mine[i : i + r["micro_batch"]] for i in range(0, len(mine), r["micro_batch"])]

    def _forward(self, batch: Batch):
        import torch

        args = [t.to(self.device) for t in (batch.input_ids, batch.labels, batch.position_ids)]
        mask = batch.attention_mask.to(self.device) if batch.attention_mask is not None else None
        if self.autocast is not None:
            with torch.autocast("cuda", dtype=self.autocast):
                return self.wrapped(*args, attention_mask=mask)
        return self.wrapped(*args, attention_mask=mask)

    def train(self) -> str:
        import torch

        r = self.recipe
        self._started = time.monotonic()
        accum = r["grad_accum"]
        stop_file, save_file = self.run_dir / "STOP", self.run_dir / "SAVE_NOW"
        self.emit(
            "start",
            total_steps=self.total_steps,
            examples=len(self.examples),
            validation=len(self.validation),
            world_size=self.world,
            precision=self.precision,
            device=str(self.device),
            trainable_parameters=sum(p.numel() for _, p in self.trainable),
            resumed_from=self.step or None,
            flops_per_token=self.flops_per_token,
            peak_flops_per_device=self.peak,
        )
        if self.recipe["method"] == "pretrain" and self.step == 0 and self.validation:
            self.evaluate()  # the starting point of the validation curve
        step_started = time.monotonic()
        first_step = self.step
        window_real = window_trained = 0
        window_loss = 0.0
        pending: list = []
        while self.step < self.total_steps:
            batches = self._batches(self.epoch)
            while self.batch_in_epoch < len(batches) and self.step < self.total_steps:
                pending.append(batches[self.batch_in_epoch])
                self.batch_in_epoch += 1
                if len(pending) < accum and self.batch_in_epoch < len(batches):
                    continue
                made = [make_batch(self.examples, rows, self.pad_id, self.packing) for rows in pending]
                pending = []
                # normalise by the trained tokens of the whole step on every rank, so accumulation and data
                # parallelism give the same gradient as one big batch (DDP averages over ranks: scale back up)
                step_tokens = self._sum(sum(b.trained_tokens for b in made))
                loss_sum = 0.0
                for batch in made:
                    loss = self._forward(batch)
                    scaled = loss * (self.world / max(step_tokens, 1.0))
                    (self.scaler.scale(scaled) if self.scaler else scaled).backward()
                    loss_sum += float(loss.detach())
                    window_real += batch.real_tokens
                    window_trained += batch.trained_tokens
                if self._any(not math.isfinite(loss_sum)):  # an inf/nan loss: this step's update is dropped
                    self.optimizer.zero_grad(set_to_none=True)
                    self.skipped_batches += 1
                    window_real = window_trained = 0
                    self.emit(
                        "warning",
                        message=f"non-finite loss at step {self.step + 1}: batch skipped "
                        f"({self.skipped_batches} so far)",
                    )
                    if self.skipped_batches > 50 and self.skipped_batches > self.step:
                        raise TrainingError("The loss is not finite for most batches; lower lr or check the data.")
                    continue
                if self.scaler:
                    self.scaler.unscale_(self.optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    [p for _, p in self.trainable], r["max_grad_norm"] or float("inf")
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
                window_loss = self._sum(loss_sum) / max(step_tokens, 1.0)
                real_all = self._sum(window_real)
                self.tokens_seen += int(real_all)
                now = time.monotonic()
                seconds = now - step_started
                elapsed = self._elapsed()
                per_step = (elapsed - self.elapsed_before) / max(1, self.step - first_step)
                per_device = real_all / max(seconds, 1e-9) / self.world
                tflops = per_device * self.flops_per_token / 1e12
                self.emit(
                    "step",
                    step=self.step,
                    total_steps=self.total_steps,
                    epoch=self.epoch,
                    loss=round(window_loss, 5),
                    lr=lr,
                    grad_norm=round(float(grad_norm), 5),
                    tokens=int(real_all),
                    trained_tokens=int(self._sum(window_trained)),
                    tokens_per_s=round(real_all / max(seconds, 1e-9), 1),
                    tokens_per_s_per_device=round(per_device, 1),
                    tflops_per_device=round(tflops, 4),
                    mfu=round(tflops * 1e12 / self.peak, 4) if self.peak else None,
                    consumed_tokens=self.tokens_seen,
                    skipped_batches=self.skipped_batches,
                    peak_memory=self.peak_memory(),
                    elapsed=round(elapsed, 2),
                    eta=round(per_step * (self.total_steps - self.step), 1),
                )
                window_real = window_trained = 0
                if r["eval_every"] and self.step % r["eval_every"] == 0 and self.step < self.total_steps:
                    self.evaluate()
                want_save = self._any(save_file.exists()) or bool(r["save_every"] and self.step % r["save_every"] == 0)
                want_stop = self._any(self.stop_requested or stop_file.exists())
                if want_save or want_stop:
                    self.save_checkpoint("stop" if want_stop else ("save now" if save_file.exists() else "periodic"))
                    if self.rank == 0:
                        save_file.unlink(missing_ok=True)
                if want_stop:
                    if self.rank == 0:
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
        """Validation loss over the held-out examples, and greedy answers to the sample prompts."""
        import torch

        r = self.recipe
        self.loss_module.eval()
        total = tokens = 0.0
        with torch.no_grad():
            mine = self.validation[self.rank :: self.world]
            # every rank runs the same number of forward passes (under FSDP each one gathers weights from all
            # ranks, so a rank with one batch more would wait forever); a rank out of rows repeats one, uncounted
            batches = -(-(-(-len(self.validation) // self.world)) // r["micro_batch"])
            for k in range(batches):
                start = k * r["micro_batch"]
                rows = [[i] for i in range(start, min(start + r["micro_batch"], len(mine)))]
                source, counted = (mine, True) if rows else (self.validation, False)
                batch = make_batch(source, rows or [[0]], self.pad_id, packing=False)
                loss = float(self._forward(batch))
                if counted:
                    total += loss
                    tokens += batch.trained_tokens
        total, tokens = self._sum(total), self._sum(tokens)
        samples = []
        # under FSDP every rank generates too (the same greedy steps, so the same number of gathers); rank 0 reports
        if r["sample_prompts"] and self.tokenizer is not None and (self._fsdp() or self.rank == 0):
            samples = [{"prompt": p, "answer": self.generate(p)} for p in r["sample_prompts"]]
        self.loss_module.train()
        val_loss = total / tokens if tokens else None
        self.emit(
            "eval",
            step=self.step,
            val_loss=round(val_loss, 5) if val_loss is not None else None,
            val_tokens=int(tokens),
            val_ppl=round(math.exp(min(val_loss, 50)), 4) if val_loss is not None else None,
            samples=samples,
        )

    def generate(self, prompt: str, max_new_tokens: int = 48) -> str:
        import torch

        messages = [{"role": "user", "content": prompt}]
        if getattr(self.tokenizer, "chat_template", None) and self.recipe["method"] != "pretrain":
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
            )["input_ids"]
        else:
            ids = self.tokenizer(prompt, return_tensors="pt")["input_ids"]
        ids = ids.to(self.device)
        with torch.no_grad():
            out = self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=self.pad_id,
            )
        return self.tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()

    def save_final(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self._fsdp():
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

            full = get_model_state_dict(self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            full = None
        if self.rank == 0:
            target = self.run_dir / ("model" if self.recipe["method"] in ("full", "pretrain") else "adapter")
            tmp = target.with_name(target.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            if full is not None:
                self.model.save_pretrained(tmp, state_dict=full)
            else:
                self.model.save_pretrained(tmp)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
            out[target.name] = str(target)
        self._barrier()
        return out

    def cleanup(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="internlocal training loop")
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    trainer = Trainer(Path(args.run_dir), resume=args.resume)
    try:
        trainer.setup()
        status = trainer.train()
        outputs = trainer.save_final() if status == "finished" else {}
        last_loss = None
        if trainer.rank == 0 and trainer.metrics_path.exists():
            for line in trainer.metrics_path.read_text(encoding="utf-8").splitlines():
                event = json.loads(line)
                if event.get("type") == "step":
                    last_loss = event["loss"]
        result = {
            "status": status,
            "step": trainer.step,
            "total_steps": trainer.total_steps,
            "final_loss": last_loss,
            "peak_memory": trainer.peak_memory(),
            "elapsed": round(trainer._elapsed(), 2),
            "tokens_seen": trainer.tokens_seen,
            **outputs,
        }
        if trainer.rank == 0:
            (trainer.run_dir / "result.json").write_text(json.dumps(result, indent=1))
            trainer.emit("done", **result)
        return 0
    except TrainingError as exc:
        trainer.emit("error", message=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        trainer.cleanup()


if __name__ == "__main__":
    sys.exit(main())
