"""Chat decode speed and time to first token: internlocal's engine vs raw llama-cpp-python.

Same GGUF (the embedded SmolLM2-135M Q4_1 unless --model), same messages, greedy, same threads
and context. llama-bench style: one warm-up, then --reps repetitions each (interleaved, so
machine noise hits both alike), median reported. The KV cache is cleared before every run so
each one processes the whole prompt (no prefix reuse between repetitions).

Both are timed the same way, from outside, on the pieces of text each streams (one per token):
- decode tokens/s: pieces after the first, over the time from the first to the last piece
- TTFT: from the call to the first piece of text (prompt processing + first token)

    python benchmarks/chat_decode.py [--reps 5] [--max-tokens 128] [--model PATH]

Targets (issue 2): decode ratio internlocal/raw >= 0.98, TTFT overhead <= 10 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from internlocal.engines.base import GenerationParams
from internlocal.engines.llamacpp import LlamaCppEngine, default_threads
from internlocal.hub.embedded import CHAT_MODEL

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "Write a detailed story about a lighthouse keeper who finds a message in a bottle."},
]


def run_internlocal(engine: LlamaCppEngine, max_tokens: int) -> tuple[float, float, int]:
    engine._llm.reset()
    start = time.perf_counter()
    stamps = [time.perf_counter() for _ in engine.chat(MESSAGES, GenerationParams.greedy(max_tokens=max_tokens))]
    return stamps[0] - start, (len(stamps) - 1) / (stamps[-1] - stamps[0]), len(stamps)


def run_raw(llm, max_tokens: int) -> tuple[float, float, int]:
    llm.reset()
    start = time.perf_counter()
    stamps = []
    for chunk in llm.create_chat_completion(
        MESSAGES, stream=True, max_tokens=max_tokens, temperature=0.0, top_k=1, repeat_penalty=1.0
    ):
        if chunk["choices"][0]["delta"].get("content"):
            stamps.append(time.perf_counter())
    ttft = stamps[0] - start
    return ttft, (len(stamps) - 1) / (stamps[-1] - stamps[0]), len(stamps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    path = args.model or CHAT_MODEL.locate()
    threads = default_threads()

    import llama_cpp

    ours = LlamaCppEngine(path, n_ctx=args.n_ctx, n_threads=threads)
    raw = llama_cpp.Llama(str(path), n_ctx=args.n_ctx, n_threads=threads, verbose=False)

    run_internlocal(ours, args.max_tokens)  # warm-up
    run_raw(raw, args.max_tokens)
    results: dict[str, list[tuple[float, float, int]]] = {"internlocal": [], "raw": []}
    for _ in range(args.reps):
        results["internlocal"].append(run_internlocal(ours, args.max_tokens))
        results["raw"].append(run_raw(raw, args.max_tokens))

    med = statistics.median
    summary = {}
    for name, runs in results.items():
        summary[name] = (
            med(r[0] for r in runs),
            med(r[1] for r in runs),
            med(r[2] for r in runs),
            statistics.pstdev(r[1] for r in runs),
        )
    print(
        f"model {Path(path).name}, {threads} threads, n_ctx {args.n_ctx}, "
        f"max_tokens {args.max_tokens}, {args.reps} reps (median)"
    )
    print(f"{'':22}{'TTFT ms':>10}{'decode tok/s':>15}{'± sd':>8}{'tokens':>8}")
    for name, (ttft, tps, n, sd) in summary.items():
        label = "internlocal engine" if name == "internlocal" else "raw llama-cpp-python"
        print(f"{label:22}{ttft * 1000:>10.1f}{tps:>15.1f}{sd:>8.1f}{n:>8.0f}")
    ratio = summary["internlocal"][1] / summary["raw"][1]
    overhead = (summary["internlocal"][0] - summary["raw"][0]) * 1000
    print(f"decode ratio internlocal/raw: {ratio:.3f} (target >= 0.98)")
    print(f"TTFT overhead: {overhead:+.1f} ms (target <= 10 ms)")
    ours.close()
    raw.close()


if __name__ == "__main__":
    main()
