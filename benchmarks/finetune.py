"""Finetuning speed and memory: internlocal's training loop vs a plain Hugging Face Trainer + peft and TRL's
SFTTrainer (supervised), or TRL's DPOTrainer (``--objective dpo``), same run.

Both train the same model (the embedded SmolLM2-135M as a float32 Hugging Face folder) on the same
examples with the same settings: LoRA or QLoRA (NF4, double quantization) r=16 on all linear
layers, micro-batch 4, one epoch, AdamW lr 2e-4 with cosine decay, labels on assistant tokens only
(both sides use the same rendering, so the same tokens are trained). The baseline pads each
micro-batch to its longest example (DataCollatorForSeq2Seq, the usual dynamic padding); ours packs
examples into rows of --seq-len with positions restarting per example and computes logits only
at trained positions. Each side is a fresh process; its peak RSS is the peak memory.

The data: --examples chat examples whose lengths follow a log-normal spread like instruction
datasets (Alpaca, no_robots): median about 150 tokens, 5th percentile about 50, 95th about 450.

    python benchmarks/finetune.py [--method qlora|lora] [--examples 96] [--seq-len 512]

Ours runs twice: with as many packed rows per micro-batch as carry the baseline's 4 examples
(the same examples per step), and with 4 packed rows (more tokens per step, more memory).

Target (issue 5): >= 1.3x the baseline's trained (non-padding) tokens/s, peak memory no higher,
and the memory estimate within 15% of our measured peak.

``--objective dpo``: LoRA DPO of --examples pairs (a question, its answer as chosen and another question's
answer as rejected), 4 pairs per micro-batch, one epoch, lr 5e-6 constant, beta 0.1, both sides padded and
truncated to --seq-len. TRL as a user gets it (the reference from the adapter switched off, a forward pass
per step) and with ``precompute_ref_log_probs`` (one pass before training, as ours always does), with
gradient checkpointing on both sides (TRL's default; ``--no-gradient-checkpointing`` turns it off on both). Tokens/s
counts every non-padding token of both answers' sequences; ours is shown with and without its one-time
reference pass. Target (issue 19): >= 1.2x TRL's tokens/s, peak memory no higher.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from common import make_hf_dir  # noqa: E402

WORDS = [
    "the",
    "model",
    "learns",
    "from",
    "data",
    "and",
    "answers",
    "questions",
    "about",
    "science",
    "history",
    "cooking",
    "travel",
    "music",
    "code",
    "numbers",
    "rivers",
    "mountains",
    "cities",
    "languages",
    "planets",
    "animals",
    "weather",
    "sport",
    "art",
    "books",
    "games",
    "health",
]


def make_data(work: Path, n: int, seed: int = 0) -> Path:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        total = min(900, max(30, int(rng.lognormvariate(5.0, 0.65))))  # words ≈ tokens for this text
        question = " ".join(rng.choice(WORDS) for _ in range(max(5, total // 5))) + "?"
        answer = " ".join(rng.choice(WORDS) for _ in range(max(5, total - total // 5))) + "."
        rows.append({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})
    path = work / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


BASELINE = r"""
import json, resource, sys, time
import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig, DataCollatorForSeq2Seq, Trainer,
                          TrainingArguments)
from peft import LoraConfig, get_peft_model
from internlocal.data.rendering import render
model_dir, data, method, seq_len, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(int(sys.argv[6]))
tok = AutoTokenizer.from_pretrained(model_dir)
rows = [json.loads(l) for l in open(data)]
features = []
for r in rows:
    x = render(tok, r, max_len=seq_len)
    features.append({"input_ids": x.input_ids, "labels": x.labels, "attention_mask": [1] * len(x.input_ids)})
kw = {}
if method == "qlora":
    kw = dict(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                     bnb_4bit_use_double_quant=True,
                                                     bnb_4bit_compute_dtype=torch.float32), device_map="cpu")
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kw)
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                         task_type="CAUSAL_LM"))
args = TrainingArguments(output_dir=out, per_device_train_batch_size=4, num_train_epochs=1, learning_rate=2e-4,
                         lr_scheduler_type="cosine", warmup_steps=int(0.03 * -(-len(features) // 4)),
                         logging_steps=1000, save_strategy="no", report_to=[],
                         use_cpu=True, dataloader_num_workers=0, seed=42, disable_tqdm=True, max_grad_norm=1.0)
trainer = Trainer(model=model, args=args, train_dataset=features,
                  data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
start = time.perf_counter()
result = trainer.train()
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": sum(len(f["input_ids"]) for f in features),
                  "trained_tokens": sum(sum(1 for l in f["labels"][1:] if l != -100) for f in features),
                  "loss": result.training_loss, "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


TRL_SFT = r"""
import json, resource, sys, time
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
from peft import LoraConfig
from trl import SFTConfig, SFTTrainer
model_dir, data, method, seq_len, out = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(int(sys.argv[6]))
tok = AutoTokenizer.from_pretrained(model_dir)
rows = [json.loads(l) for l in open(data)]
# prompt/completion pairs: SFTTrainer trains the completion (the assistant's answer) only, as the others do
data = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
kw = {}
if method == "qlora":
    kw = dict(quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                                     bnb_4bit_use_double_quant=True,
                                                     bnb_4bit_compute_dtype=torch.float32), device_map="cpu")
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, **kw)
args = SFTConfig(output_dir=out, per_device_train_batch_size=4, num_train_epochs=1, learning_rate=2e-4,
                 lr_scheduler_type="cosine", warmup_steps=int(0.03 * -(-len(rows) // 4)), max_length=seq_len,
                 packing=False, gradient_checkpointing=False, logging_steps=1000, save_strategy="no", report_to=[],
                 use_cpu=True, bf16=False,
                 dataloader_num_workers=0, seed=42, disable_tqdm=True, max_grad_norm=1.0)
trainer = SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok,
                     peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                            task_type="CAUSAL_LM"))
tokens = sum(len(x["input_ids"]) for x in trainer.train_dataset)
trained = None  # SFTTrainer builds its completion mask in the collator
start = time.perf_counter()
result = trainer.train()
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": tokens, "trained_tokens": trained, "loss": result.training_loss,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def run_baseline(
    model_dir: Path, data: Path, method: str, seq_len: int, work: Path, threads: int, script: str = BASELINE
) -> dict:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            str(model_dir),
            str(data),
            method,
            str(seq_len),
            str(work / "hf-out"),
            str(threads),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_loop(run_dir: Path, recipe, model_dir: Path, train_file: Path, threads: int) -> list[dict]:
    """``recipe`` trained by internlocal's loop in a fresh process in ``run_dir``: its metrics events."""
    run_dir.mkdir()
    config = {
        "recipe": recipe.model_dump(),
        "model_path": str(model_dir),
        "train_file": str(train_file),
        "validation_file": None,
        "threads": threads,
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    out = subprocess.run(
        [sys.executable, "-m", "internlocal.train.loop", str(run_dir)], capture_output=True, text=True, cwd=REPO
    )
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run_ours(
    model_dir: Path, data: Path, method: str, seq_len: int, work: Path, threads: int, micro_batch: int
) -> dict:
    from internlocal.train.recipe import Recipe

    recipe = Recipe(
        model="bench",
        method=method,
        dataset=str(data),
        seq_len=seq_len,
        micro_batch=micro_batch,
        epochs=1,
        lr=2e-4,
        lr_scheduler="cosine",
        warmup_ratio=0.03,
        packing=True,
        save_every=0,
        seed=42,
        export={"merge": False, "gguf": False, "quantize": None},
    )
    run_dir = work / f"ours-{method}-{micro_batch}"
    started = time.perf_counter()
    events = run_loop(run_dir, recipe, model_dir, data, threads)
    steps = [e for e in events if e["type"] == "step"]
    result = json.loads((run_dir / "result.json").read_text())
    # training time: from the first step's start to the last step
    # (model load and final save excluded, as for the baseline)
    first = next(e for e in events if e["type"] == "start")["t"]
    seconds = steps[-1]["t"] - first
    loss = sum(e["loss"] for e in steps) / len(steps)
    return {
        "seconds": seconds,
        "tokens": sum(e["tokens"] for e in steps),
        "trained_tokens": sum(e["trained_tokens"] for e in steps),
        "loss": loss,
        "peak": result["peak_memory"],
        "wall": time.perf_counter() - started,
        "steps": len(steps),
    }


def make_pairs(work: Path, data: Path) -> Path:
    """Preference pairs from the chat examples: each question, its answer (chosen) and the next one's (rejected)."""
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    pairs = [
        {
            "messages": row["messages"][:-1],
            "chosen": row["messages"][-1]["content"],
            "rejected": rows[(i + 1) % len(rows)]["messages"][-1]["content"],
        }
        for i, row in enumerate(rows)
    ]
    path = work / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return path


def run_ours_dpo(
    model_dir: Path, pairs: Path, seq_len: int, work: Path, threads: int, steps: int, checkpointing: bool
) -> dict:
    from internlocal.train.recipe import Recipe

    recipe = Recipe(
        model="bench",
        method="lora",
        objective="dpo",
        beta=0.1,
        dataset=str(pairs),
        seq_len=seq_len,
        micro_batch=4,
        max_steps=steps,
        lr=5e-6,
        lr_scheduler="constant",
        warmup_ratio=0,
        save_every=0,
        seed=42,
        gradient_checkpointing=checkpointing,
    )
    run_dir = work / "ours-dpo"
    events = run_loop(run_dir, recipe, model_dir, pairs, threads)
    step_events = [e for e in events if e["type"] == "step"]
    first = next(e for e in events if e["type"] == "start")["t"]
    return {
        "seconds": step_events[-1]["t"] - first,
        "reference_seconds": next(e for e in events if e["type"] == "reference")["seconds"],
        "tokens": sum(e["tokens"] for e in step_events),
        "losses": [e["loss"] for e in step_events],
        "peak": json.loads((run_dir / "result.json").read_text())["peak_memory"],
    }


def run_trl_dpo(
    model_dir: Path,
    pairs: Path,
    seq_len: int,
    work: Path,
    threads: int,
    steps: int,
    precompute: bool,
    checkpointing: bool,
):
    out_file = work / f"trl-dpo{'-precompute' if precompute else ''}.json"
    command = (
        [
            sys.executable,
            str(REPO / "benchmarks" / "trl_dpo.py"),
            str(model_dir),
            str(pairs),
            str(out_file),
            "--method",
            "lora",
            "--steps",
            str(steps),
            "--batch",
            "4",
            "--max-length",
            str(seq_len),
            "--threads",
            str(threads),
        ]
        + (["--precompute"] if precompute else [])
        + ([] if checkpointing else ["--no-gradient-checkpointing"])
    )
    out = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    result = json.loads(out_file.read_text())
    result["seconds"] = sum(result["step_seconds"])
    return result


def compare_dpo(model_dir: Path, work: Path, args) -> None:
    pairs = make_pairs(work, make_data(work, args.examples))
    steps = args.examples // 4  # one epoch of 4-pair micro-batches
    checkpointing = args.gradient_checkpointing
    ours = run_ours_dpo(model_dir, pairs, args.seq_len, work, args.threads, steps, checkpointing)
    trl = run_trl_dpo(model_dir, pairs, args.seq_len, work, args.threads, steps, False, checkpointing)
    trl_pre = run_trl_dpo(model_dir, pairs, args.seq_len, work, args.threads, steps, True, checkpointing)
    print(
        f"LoRA DPO, {args.examples} pairs, 4 per micro-batch, {steps} steps, seq_len {args.seq_len}, "
        f"{args.threads} threads, gradient checkpointing {'on' if checkpointing else 'off'} on both sides"
    )
    for name, r in (
        ("TRL DPOTrainer (reference per step)", trl),
        ("TRL DPOTrainer, precompute_ref_log_probs", trl_pre),
    ):
        print(
            f"{name:44} {r['seconds']:7.1f} s  {r['tokens'] / r['seconds']:7.1f} tokens/s  "
            f"peak {r['peak_rss'] / 2**30:5.2f} GiB  first losses {[round(x, 4) for x in r['losses'][:3]]}"
        )
    with_reference = ours["seconds"] + ours["reference_seconds"]
    print(
        f"{'internlocal (reference once, before step 1)':44} {ours['seconds']:7.1f} s  "
        f"{ours['tokens'] / ours['seconds']:7.1f} tokens/s  peak {ours['peak'] / 2**30:5.2f} GiB  "
        f"first losses {ours['losses'][:3]}  (+{ours['reference_seconds']:.1f} s reference pass)"
    )
    for name, r in (("TRL", trl), ("TRL precompute", trl_pre)):
        print(
            f"vs {name}: {(ours['tokens'] / ours['seconds']) / (r['tokens'] / r['seconds']):.2f}x tokens/s over the "
            f"steps, {(ours['tokens'] / with_reference) / (r['tokens'] / r['seconds']):.2f}x counting our reference "
            f"pass, {ours['peak'] / r['peak_rss']:.2f}x peak"
        )
    print("target: >= 1.2x TRL's tokens/s, peak no higher")


def estimate_for(model_dir: Path, method: str, seq_len: int, data: Path, micro_batch: int) -> int:
    from transformers import AutoTokenizer

    from internlocal.data.formats import load_examples
    from internlocal.data.library import token_stats
    from internlocal.train.memory import Shape, estimate

    stats = token_stats(AutoTokenizer.from_pretrained(model_dir), load_examples(data)[1])
    shape = Shape.from_hf_config(json.loads((model_dir / "config.json").read_text()))
    return estimate(
        shape,
        method=method,
        seq_len=seq_len,
        micro_batch=micro_batch,
        gradient_checkpointing=False,
        trained_fraction=stats["tokens_trained"] / stats["tokens_total"],
    ).total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--method", default="qlora", choices=("qlora", "lora"))
    parser.add_argument("--examples", type=int, default=96)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--objective", default="sft", choices=("sft", "dpo"))
    parser.add_argument(
        "--gradient-checkpointing",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="dpo: on both sides (TRL's default: on)",
    )
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="il-ftbench-"))
    model_dir = make_hf_dir(work)
    data = make_data(work, args.examples)
    if args.objective == "dpo":
        return compare_dpo(model_dir, work, args)
    base = run_baseline(model_dir, data, args.method, args.seq_len, work, args.threads)
    trl = run_baseline(model_dir, data, args.method, args.seq_len, work, args.threads, TRL_SFT)
    # a packed row holds seq_len / (mean example length) examples: this many rows carry the baseline's 4 examples
    per_row = args.seq_len / (base["tokens"] / args.examples)
    same = max(1, round(4 / per_row))
    runs = [(f"internlocal, {same} packed rows (~4 examples)", same), ("internlocal, 4 packed rows", 4)]
    results = [
        (name, mb, run_ours(model_dir, data, args.method, args.seq_len, work, args.threads, mb)) for name, mb in runs
    ]
    print(
        f"{args.method}, {args.examples} examples ({base['tokens']} tokens, {base['trained_tokens']} trained; "
        f"{per_row:.1f} examples per packed row of {args.seq_len}), {args.threads} threads"
    )
    print(
        f"{'HF Trainer + peft, 4 padded examples':42} {base['seconds']:7.1f} s  "
        f"{base['tokens'] / base['seconds']:7.1f} tokens/s  "
        f"peak {base['peak'] / 2**30:5.2f} GiB  mean loss {base['loss']:.3f}"
    )
    print(
        f"{'TRL SFTTrainer + peft, 4 padded examples':42} {trl['seconds']:7.1f} s  "
        f"{trl['tokens'] / trl['seconds']:7.1f} tokens/s  "
        f"peak {trl['peak'] / 2**30:5.2f} GiB  mean loss {trl['loss']:.3f}"
    )
    for name, mb, r in results:
        est = estimate_for(model_dir, args.method, args.seq_len, data, mb)
        speed = (r["tokens"] / r["seconds"]) / (base["tokens"] / base["seconds"])
        trl_speed = (r["tokens"] / r["seconds"]) / (trl["tokens"] / trl["seconds"])
        print(
            f"{name:42} {r['seconds']:7.1f} s  {r['tokens'] / r['seconds']:7.1f} tokens/s  "
            f"peak {r['peak'] / 2**30:5.2f} GiB  "
            f"mean loss {r['loss']:.3f}  → {speed:.2f}x tokens/s, {r['peak'] / base['peak']:.2f}x peak "
            f"(vs SFTTrainer: {trl_speed:.2f}x, {r['peak'] / trl['peak']:.2f}x), "
            f"estimate {est / 2**30:.2f} GiB ({(est - r['peak']) / r['peak'] * 100:+.0f}%)"
        )
    print("targets: >= 1.3x tokens/s, <= 1.0x peak at the same examples per micro-batch, estimate within 15%")


if __name__ == "__main__":
    main()
