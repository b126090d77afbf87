"""Pretraining throughput and MFU on a GPU: internlocal's loop vs a Hugging Face ``Trainer`` on the same job.

A randomly initialised model of InternLM2-1.8B's shape on the Llama architecture (weights need no download)
is pretrained on random token sequences: every weight trained, fp32 master weights under bf16 autocast on
both sides (``Trainer(bf16=True)`` does the same), AdamW, micro-batch MB of SEQ tokens, no gradient
checkpointing. Both sides are timed per optimizer step after two warm-up steps; MFU uses the loop's own
FLOP count (``internlocal.train.flops``) for both, so the two figures compare. Prints one JSON line per side.

    python benchmarks/gpu/pretrain_mfu.py SHAPE SEQ MB STEPS      (SHAPE: tiny or internlm2-1_8b)

On a machine without CUDA it runs the same job in fp32 on the CPU (to check the script, not to measure).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from internlocal.train.flops import flops_per_token, peak_flops  # noqa: E402  (the repository's copy)
from internlocal.train.recipe import Recipe  # noqa: E402
from internlocal.train.run_config import RunConfig  # noqa: E402

SHAPES = {
    "tiny": dict(hidden_size=256, intermediate_size=688, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=32000),
    "internlm2-1_8b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=16,
                           num_key_value_heads=8, vocab_size=92544),
}  # fmt: skip


def make_model(shape: str, seq: int) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = Path(os.environ.get("PRETRAIN_MODEL_DIR", f"/tmp/rand-pretrain-{shape}"))
    if not path.exists():
        torch.manual_seed(0)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = LlamaForCausalLM(LlamaConfig(**SHAPES[shape], max_position_embeddings=max(seq, 4096)))
        model.to(torch.bfloat16).save_pretrained(path)
    return path


def make_corpus(work: Path, vocab: int, seq: int, sequences: int) -> Path:
    """A prepared corpus in ``data/corpus.py``'s layout: one uint32 shard of random tokens."""
    import numpy as np

    corpus = work / "corpus"
    corpus.mkdir()
    tokens = np.random.default_rng(0).integers(0, vocab, size=(sequences, seq), dtype=np.uint32)
    tokens.tofile(corpus / "train-00000.bin")
    index = {
        "seq_len": seq,
        "dtype": "uint32",
        "eos_id": 0,
        "vocab_size": vocab,
        "tokenizer": "none",
        "train": [{"file": "train-00000.bin", "sequences": sequences}],
        "validation": [],
        "stats": {},
    }
    (corpus / "index.json").write_text(json.dumps(index))
    return corpus


def summary(tool: str, shape: str, seq: int, mb: int, step_times: list[float], fpt: float, peak) -> dict:
    step = statistics.median(step_times)
    tokens_per_s = seq * mb / step
    return {
        "tool": tool,
        "shape": shape,
        "seq": seq,
        "micro_batch": mb,
        "step_s_median": round(step, 4),
        "tokens_per_s": round(tokens_per_s, 1),
        "tflops": round(tokens_per_s * fpt / 1e12, 1),
        "mfu": round(tokens_per_s * fpt / peak, 4) if peak else None,
    }


def ours(model: Path, corpus: Path, work: Path, shape: str, seq: int, mb: int, steps: int) -> dict:
    import torch

    gpu = torch.cuda.is_available()
    recipe = Recipe(
        model="random",
        method="pretrain",
        corpus=str(corpus),
        hardware="gpu" if gpu else "cpu",
        validation=0,
        seq_len=seq,
        micro_batch=mb,
        max_steps=steps + 2,
        lr=1e-4,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        precision="bf16" if gpu else "fp32",
        keep_checkpoints=1,
        export={"merge": False, "gguf": False, "quantize": None},
    )
    run = work / "run"
    run.mkdir()
    RunConfig(recipe=recipe, model_path=str(model), corpus_dir=str(corpus)).save(run)
    done = subprocess.run(
        [sys.executable, "-m", "internlocal.train.loop", str(run)],
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
    steps_seen = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps_seen = [e for e in steps_seen if e["type"] == "step"]
    times = [b["t"] - a["t"] for a, b in pairwise(steps_seen)][1:]  # after two warm-up steps
    out = summary("internlocal", shape, seq, mb, times, *_flops(model, seq))
    out["loop_mfu_last"] = steps_seen[-1].get("mfu")  # what the TUI shows, from the loop's own clock
    out["peak_memory_gib"] = round(max(e["peak_memory"] for e in steps_seen) / 2**30, 2)
    out["final_loss"] = steps_seen[-1]["loss"]
    return out


def baseline(model: Path, corpus: Path, work: Path, shape: str, seq: int, mb: int, steps: int) -> dict:
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    gpu = torch.cuda.is_available()
    rows = np.fromfile(corpus / "train-00000.bin", dtype=np.uint32).reshape(-1, seq)[: (steps + 2) * mb]
    features = [{"input_ids": r.astype(np.int64).tolist(), "labels": r.astype(np.int64).tolist()} for r in rows]
    times: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if gpu:
                torch.cuda.synchronize()
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if gpu:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - self.started)

    hf = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    args = TrainingArguments(
        output_dir=str(work / "hf"),
        per_device_train_batch_size=mb,
        max_steps=steps + 2,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        bf16=gpu,
        use_cpu=not gpu,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    Trainer(model=hf, args=args, train_dataset=features, callbacks=[StepClock()]).train()
    out = summary("hf-trainer", shape, seq, mb, times[2:], *_flops(model, seq))
    if gpu:
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def _flops(model: Path, seq: int) -> tuple[float, float | None]:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model)
    with torch.device("meta"):  # the parameter count without allocating the weights
        params = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return flops_per_token(config, seq, params), peak_flops(device)


def main(shape: str, seq: int, mb: int, steps: int, which: str) -> None:
    model = make_model(shape, seq)
    vocab = SHAPES[shape]["vocab_size"]
    work = Path(tempfile.mkdtemp(prefix="il-pretrain-"))
    corpus = make_corpus(work, vocab, seq, (steps + 2) * mb)
    if which in ("both", "baseline"):
        print(json.dumps(baseline(model, corpus, work, shape, seq, mb, steps)), flush=True)
    if which in ("both", "ours"):
        print(json.dumps(ours(model, corpus, work, shape, seq, mb, steps)), flush=True)


if __name__ == "__main__":
    main(
        sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] if len(sys.argv) > 5 else "both"
    )
