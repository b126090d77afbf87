"""internlocal's training loop on the same QLoRA job as qlora_baseline.py: a randomly initialised model of
InternLM2.5-7B's shape on the Llama architecture (weights need no download), one sequence of SEQ random
tokens per step, LoRA r=16 on all linear layers, gradient checkpointing, AdamW. Prints JSON like the
baseline: peak allocated GiB and tokens/s (median step). Run the baseline first: it makes the model.

    python benchmarks/gpu/qlora_ours.py SHAPE SEQ STEPS        (SHAPE: tiny or internlm2_5-7b)

Needs bitsandbytes (carry its cp312 wheel to the GPU machine) and runs the loop from this repository.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

shape, seq, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = Path(f"/tmp/rand-{shape}")
if not model.exists():
    sys.exit(f"{model} is missing: run qlora_baseline.py {shape} {seq} 1 first (it creates the random model)")
vocab = json.loads((model / "config.json").read_text())["vocab_size"]
run = Path(tempfile.mkdtemp(prefix="il-gpu-"))
import random

rng = random.Random(0)
with (run / "train.jsonl").open("w") as fh:
    for _ in range(steps + 2):
        fh.write(json.dumps({"input_ids": [rng.randrange(vocab) for _ in range(seq)]}) + "\n")
recipe = {
    "model": "random",
    "method": "qlora",
    "hardware": "gpu",
    "dataset": "random",
    "dataset_form": "auto",
    "validation": 0,
    "train_on": "all",
    "seq_len": seq,
    "packing": False,
    "micro_batch": 1,
    "grad_accum": 1,
    "epochs": 1,
    "max_steps": steps + 2,
    "lr": 1e-4,
    "lr_scheduler": "constant",
    "warmup_ratio": 0.0,
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "optimizer": "adamw",
    "precision": "bf16",
    "gradient_checkpointing": True,
    "lora": {"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
    "eval_every": 0,
    "sample_prompts": [],
    "save_every": 0,
    "keep_checkpoints": 1,
    "seed": 42,
    "gpus": 1,
    "distributed": "ddp",
    "trust_remote_code": False,
}
import torch

if not torch.cuda.is_available():  # a dry run of the script on a CPU box
    recipe.update(hardware="cpu", precision="fp32")
(run / "config.json").write_text(
    json.dumps(
        {"recipe": recipe, "model_path": str(model), "train_file": str(run / "train.jsonl"), "validation_file": None}
    )
)
repo = Path(__file__).resolve().parents[2]
env = dict(os.environ, PYTHONPATH=str(repo))
done = subprocess.run(
    [sys.executable, "-m", "internlocal.train.loop", str(run)], env=env, capture_output=True, text=True
)
if done.returncode != 0:
    sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
step_events = [e for e in events if e["type"] == "step"]
times = [b["t"] - a["t"] for a, b in zip(step_events, step_events[1:])][1:]
print(
    json.dumps(
        {
            "shape": shape,
            "seq": seq,
            "tool": "internlocal",
            "step_s_median": round(statistics.median(times), 3),
            "tokens_per_s": round(seq / statistics.median(times), 1),
            "peak_alloc_gib": round(max(e["peak_memory"] for e in step_events) / 2**30, 2),
        }
    )
)
