"""internlocal's training loop on the same QLoRA job as qlora_baseline.py: a randomly initialised model of
InternLM2.5-7B's shape on the Llama architecture (weights need no download), one sequence of SEQ random
tokens per step, LoRA r=16 on all linear layers, gradient checkpointing, AdamW. Prints JSON like the
baseline: peak allocated GiB and tokens/s (median step). Run the baseline first: it makes the model.

    python benchmarks/gpu/qlora_ours.py SHAPE SEQ STEPS        (SHAPE: tiny or internlm2_5-7b)

The run's config is written with the loop's own types (``Recipe``, ``RunConfig``), so a field the loop
renames or adds cannot silently diverge from this script. Needs bitsandbytes (carry its cp312 wheel to
the GPU machine) and runs the loop from this repository. On a machine without CUDA it runs the same
job on the CPU in fp32 (``tests/test_train.py`` does that at the tiny shape).
"""

from __future__ import annotations

import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from internlocal.train.recipe import Recipe  # noqa: E402  (the repository, not an installed copy)
from internlocal.train.run_config import RunConfig  # noqa: E402


def main(shape: str, seq: int, steps: int) -> dict:
    import torch

    model = Path(os.environ.get("QLORA_MODEL_DIR", f"/tmp/rand-{shape}"))
    if not model.exists():
        sys.exit(f"{model} is missing: run qlora_baseline.py {shape} {seq} 1 first (it creates the random model)")
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    run = Path(tempfile.mkdtemp(prefix="il-gpu-"))
    rng = random.Random(0)
    with (run / "train.jsonl").open("w") as fh:
        for _ in range(steps + 2):
            fh.write(json.dumps({"input_ids": [rng.randrange(vocab) for _ in range(seq)]}) + "\n")
    gpu = torch.cuda.is_available()
    recipe = Recipe(
        model="random",
        method="qlora",
        hardware="gpu" if gpu else "cpu",
        dataset="random",
        validation=0,
        train_on="all",
        seq_len=seq,
        packing=False,
        micro_batch=1,
        max_steps=steps + 2,
        lr=1e-4,
        lr_scheduler="constant",
        warmup_ratio=0.0,
        precision="bf16" if gpu else "fp32",
        gradient_checkpointing=True,
        lora={"r": 16, "alpha": 32, "dropout": 0.0, "targets": "all-linear"},
        keep_checkpoints=1,
    )
    RunConfig(recipe=recipe, model_path=str(model), train_file=str(run / "train.jsonl")).save(run)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run(
        [sys.executable, "-m", "internlocal.train.loop", str(run)], env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        sys.exit(done.stdout[-3000:] + done.stderr[-3000:])
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    step_events = [e for e in events if e["type"] == "step"]
    times = [b["t"] - a["t"] for a, b in pairwise(step_events)][1:]  # the first step warms up
    return {
        "shape": shape,
        "seq": seq,
        "tool": "internlocal",
        "device": "cuda" if gpu else "cpu",
        "step_s_median": round(statistics.median(times), 3),
        "tokens_per_s": round(seq / statistics.median(times), 1),
        "peak_alloc_gib": round(max(e["peak_memory"] for e in step_events) / 2**30, 2),
        "final_loss": step_events[-1]["loss"],
    }


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))))
