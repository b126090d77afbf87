"""Continued-pretraining speed and memory: internlocal's loop vs a plain Hugging Face Trainer, same run.

Both continue pretraining the embedded SmolLM2-135M (float32 Hugging Face folder) on the very same
token sequences: 3,000 generated notes prepared by `data/corpus.py` into --seq-len sequences
(every token trained), enough that no sequence is seen twice. Same settings on both sides: full training,
micro-batch 4, AdamW lr 5e-5 with cosine decay, --steps steps, fp32 on the CPU. The baseline is the usual recipe: a
`Dataset` of `input_ids`/`labels`, `DataCollatorForLanguageModeling(mlm=False)`, `Trainer.train()`.
Ours computes logits in 1024-token chunks recomputed in backward instead of a whole vocabulary-sized
tensor. Each side is a fresh process; tokens/s counts the training steps only; peak is peak RSS.

    python benchmarks/pretrain.py [--seq-len 512] [--steps 16]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from common import make_hf_dir  # noqa: E402

BASELINE = r"""
import json, resource, sys, time
import numpy as np, torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, DataCollatorForLanguageModeling, Trainer,
                          TrainingArguments)
from internlocal.data.corpus import CorpusIndex
model_dir, corpus, steps, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.set_num_threads(threads)
tok = AutoTokenizer.from_pretrained(model_dir)
index = CorpusIndex.load(corpus)
rows = np.concatenate([np.asarray(s) for s in index.sequences("train")])
features = [{"input_ids": r.astype(np.int64).tolist()} for r in rows[: steps * 4]]
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
args = TrainingArguments(output_dir=out, per_device_train_batch_size=4, max_steps=steps, learning_rate=5e-5,
                         lr_scheduler_type="cosine", warmup_steps=1, logging_steps=1000, save_strategy="no",
                         report_to=[],
                         use_cpu=True, dataloader_num_workers=0, seed=42, disable_tqdm=True, max_grad_norm=1.0)
trainer = Trainer(model=model, args=args, train_dataset=features,
                  data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
start = time.perf_counter()
result = trainer.train()
seconds = time.perf_counter() - start
assert len(features) == steps * 4, "the corpus is too small for this many steps"
print(json.dumps({"seconds": seconds, "tokens": steps * 4 * index.seq_len, "loss": result.training_loss,
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def run_baseline(model_dir: Path, corpus: Path, steps: int, work: Path, threads: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", BASELINE, str(model_dir), str(corpus), str(steps), str(work / "hf-out"), str(threads)],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_ours(model_dir: Path, corpus: Path, seq_len: int, steps: int, work: Path, threads: int) -> dict:
    from internlocal.train.recipe import Recipe

    recipe = Recipe(
        model="bench",
        method="pretrain",
        corpus=str(corpus),
        seq_len=seq_len,
        micro_batch=4,
        max_steps=steps,
        lr=5e-5,
        lr_scheduler="cosine",
        warmup_ratio=0.0,
        save_every=0,
        eval_every=0,
        seed=42,
        export={"merge": False, "gguf": False, "quantize": None},
    )
    run_dir = work / "ours"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(
        json.dumps(
            {"recipe": recipe.model_dump(), "model_path": str(model_dir), "corpus_dir": str(corpus), "threads": threads}
        )
    )
    out = subprocess.run(
        [sys.executable, "-m", "internlocal.train.loop", str(run_dir)], capture_output=True, text=True, cwd=REPO
    )
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_ = [e for e in events if e["type"] == "step"]
    evals = [e for e in events if e["type"] == "eval"]
    # training time: the last step's elapsed time less the step-0 evaluation (the final evaluation and save come after)
    start = next(e for e in events if e["type"] == "start")["t"]
    step0 = next((e["t"] - start for e in evals if e["step"] == 0), 0.0)
    seconds = steps_[-1]["elapsed"] - step0
    result = json.loads((run_dir / "result.json").read_text())
    return {
        "seconds": seconds,
        "tokens": sum(e["tokens"] for e in steps_),
        "loss": sum(e["loss"] for e in steps_) / len(steps_),
        "peak": result["peak_memory"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    from internlocal.data.corpus import prepare_corpus
    from internlocal.train.recipe import recipes_dir  # the bundled notes' words

    with tempfile.TemporaryDirectory(prefix="il-ptbench-") as tmp:
        work = Path(tmp)
        model_dir = make_hf_dir(work)
        corpus = work / "corpus"
        notes = work / "notes.jsonl"
        rng = random.Random(0)
        words = (recipes_dir() / "data" / "pretrain_nature_notes.jsonl").read_text().replace('"', " ").split()
        notes.write_text(
            "".join(
                json.dumps({"text": " ".join(rng.choice(words) for _ in range(rng.randint(40, 160)))}) + "\n"
                for _ in range(3000)
            )
        )
        prepare_corpus(notes, model_dir, corpus, seq_len=args.seq_len, validation=0.01, workers=args.threads)
        base = run_baseline(model_dir, corpus, args.steps, work, args.threads)
        ours = run_ours(model_dir, corpus, args.seq_len, args.steps, work, args.threads)
        gib = 2**30
        print(
            f"{args.steps} steps × 4 sequences × {args.seq_len} tokens, SmolLM2-135M full, fp32, {args.threads} threads"
        )
        for label, r in (("HF Trainer", base), ("internlocal", ours)):
            print(
                f"{label:12} {r['seconds']:7.1f} s  {r['tokens'] / r['seconds']:8.1f} tokens/s  "
                f"peak {r['peak'] / gib:.2f} GiB  "
                f"mean loss {r['loss']:.4f}"
            )
        speed = ours["tokens"] / ours["seconds"] / (base["tokens"] / base["seconds"])
        print(f"internlocal / HF Trainer: tokens/s {speed:.2f}x, peak {ours['peak'] / base['peak']:.2f}x")


if __name__ == "__main__":
    main()
