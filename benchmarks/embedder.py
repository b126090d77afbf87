"""The embedding model from a cold start, as every `internlocal kb search` pays it: ours (plain transformers for a
sentence-transformers folder of the usual shape) vs sentence-transformers itself, each in a fresh process that
imports, loads all-MiniLM-L6-v2 and embeds one query; alternated, median of --reps. Then throughput on the same
chunk texts in one process (best of 2), and the largest difference between the two sets of vectors.

    python benchmarks/embedder.py [--reps 5] [--chunks 2000]

Ratio = sentence-transformers' seconds ÷ ours (cold start), ours' chunks/s ÷ theirs (throughput).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

OURS = """
from internlocal.engines.loader import local_embedder
from internlocal.hub.embedded import EMBEDDING_MODEL
local_embedder(EMBEDDING_MODEL.locate()).embed(["when is the report due?"])
"""
THEIRS = """
from sentence_transformers import SentenceTransformer
from internlocal.hub.embedded import EMBEDDING_MODEL
model = SentenceTransformer(str(EMBEDDING_MODEL.locate()), device="cpu", local_files_only=True)
model.encode(["when is the report due?"])
"""


def cold(code: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--chunks", type=int, default=2000)
    args = parser.parse_args()
    from internlocal.logs import configure

    configure()  # the libraries' loading bars stay out of the report

    ours, theirs = [], []
    for _ in range(args.reps):
        ours.append(cold(OURS))
        theirs.append(cold(THEIRS))
    o, t = statistics.median(ours), statistics.median(theirs)
    print(f"cold start (import, load, one query): ours {o:.2f} s, sentence-transformers {t:.2f} s: ratio {t / o:.2f}x")

    from sentence_transformers import SentenceTransformer

    from internlocal.engines.loader import local_embedder
    from internlocal.hub.embedded import EMBEDDING_MODEL

    path = EMBEDDING_MODEL.locate()
    embedder = local_embedder(path)
    reference = SentenceTransformer(str(path), device="cpu", local_files_only=True)
    words = ["river", "garden", "lamp", "harbour", "winter", "copper", "signal", "meadow", "ledger", "orbit"]
    texts = [" ".join(words[(i * 7 + j) % len(words)] for j in range(20 + i % 120)) for i in range(args.chunks)]
    best: dict[str, float] = {}
    for _ in range(2):
        for name, run in (
            ("ours", lambda: embedder.embed(texts)),
            ("theirs", lambda: reference.encode(texts, normalize_embeddings=True)),
        ):
            started = time.perf_counter()
            run()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - started)
    ours_cps, theirs_cps = args.chunks / best["ours"], args.chunks / best["theirs"]
    mine, reference_vectors = embedder.embed(texts[:200]), reference.encode(texts[:200], normalize_embeddings=True)
    gap = max(
        abs(a - b) for row, ref in zip(mine, reference_vectors, strict=True) for a, b in zip(row, ref, strict=True)
    )
    print(
        f"throughput on {args.chunks} chunks: ours {ours_cps:.0f} chunks/s, sentence-transformers {theirs_cps:.0f} "
        f"chunks/s: ratio {ours_cps / theirs_cps:.2f}x; largest vector difference {gap:.1e}"
    )


if __name__ == "__main__":
    main()
