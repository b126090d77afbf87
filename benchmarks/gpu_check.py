"""GPU check for a lent NVIDIA machine: doctor's GPU report and the transformers engine on CUDA.

The model is SmolLM2-135M's config and tokenizer with random weights (no weights travel), so the
text is noise; what is measured is the engine: decode tokens/s of its token loop vs Hugging Face
`model.generate` on the same model, TTFT, and batched log-likelihood throughput. EOS is ignored so
every run makes the same number of tokens.

    python benchmarks/gpu_check.py .gpu-model [--wheels .gpu-wheels] [--tokens 256]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def ensure_deps(wheels: Path | None) -> None:
    missing = []
    for name in ("pydantic", "pydantic_settings", "psutil", "platformdirs"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name.replace("_", "-"))
    if missing and wheels:
        target = Path(tempfile.mkdtemp(prefix="gpu-site-"))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "-q",
                "--no-index",
                "--find-links",
                str(wheels),
                "--target",
                str(target),
                *missing,
            ],
            check=True,
        )
        sys.path.insert(0, str(target))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--wheels", type=Path, default=None)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    ensure_deps(args.wheels)

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from internlocal.doctor import _gpus
    from internlocal.engines.base import GenerationParams
    from internlocal.engines.transformers_engine import TransformersEngine

    out: dict = {"torch": torch.__version__, "gpus": _gpus()}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp(prefix="smol-random-"))
    config = AutoConfig.from_pretrained(args.model_dir)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(work)
    for f in args.model_dir.iterdir():
        if f.name != "config.json":
            shutil.copy(f, work / f.name)
    del model

    engine = TransformersEngine(work, n_ctx=2048, device=device)
    engine._eos = set()  # random weights: never stop early, every run makes the same number of tokens
    messages = [{"role": "user", "content": "Write a long story about a lighthouse keeper."}]
    params = GenerationParams.greedy(max_tokens=args.tokens)
    engine.chat(messages, GenerationParams.greedy(max_tokens=8)).collect()  # warm-up
    ours = [engine.chat(messages, params).collect() for _ in range(args.reps)]
    out["internlocal_decode_tok_s"] = round(statistics.median(r.decode_tokens_per_s for r in ours), 1)
    out["internlocal_ttft_ms"] = round(statistics.median(r.ttft_s for r in ours) * 1000, 1)

    ids = engine.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = (ids["input_ids"] if hasattr(ids, "keys") else ids).to(engine.device)
    times = []
    for _ in range(args.reps + 1):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        engine.model.generate(ids, max_new_tokens=args.tokens, min_new_tokens=args.tokens, do_sample=False)
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    out["hf_generate_tok_s"] = round(args.tokens / statistics.median(times[1:]), 1)
    out["ratio_internlocal_vs_generate"] = round(out["internlocal_decode_tok_s"] / out["hf_generate_tok_s"], 2)

    pairs = [(f"Question {i}: what comes next in the story?", " The keeper lit the lamp.") for i in range(64)]
    engine.loglikelihood(pairs[:8])
    start = time.perf_counter()
    engine.loglikelihood(pairs)
    out["loglikelihood_requests_per_s"] = round(len(pairs) / (time.perf_counter() - start), 1)
    out["device"] = device
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
