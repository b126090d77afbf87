"""Knowledge-base speed and quality, three measurements in one run:

1. Ingestion: `Index.sync` over a generated notes folder (read, extract, chunk, embed, chromadb, SQLite,
   FTS5) vs calling sentence-transformers directly on the very same chunk texts (embedding alone,
   what a hand-written script would at least pay), alternated twice, best of each.
   Ratio = our chunks/s ÷ direct chunks/s.
2. Query latency, retrieval only (query embedding + chromadb HNSW + FTS5 BM25 + fusion + SQLite rows),
   p50/p95 over --queries queries at 10k and 100k chunks. The large indexes are filled with generated
   text and random unit vectors written straight into the stores (embedding 100k chunks on 2 cores
   would take the whole benchmark); the query path is the real one.
3. recall@5 / MRR of hybrid vs dense-only retrieval on the project's labelled set (tests/data/kb).

    python benchmarks/kb.py [--files 300] [--queries 200] [--sizes 10000 100000]

Targets (issue 6): ingestion >= 0.9x direct embedding; p50 <= 30 ms at 10k chunks.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORDS = [
    "river",
    "garden",
    "engine",
    "kettle",
    "router",
    "sensor",
    "battery",
    "invoice",
    "meeting",
    "recipe",
    "flour",
    "tomato",
    "bicycle",
    "chain",
    "thermostat",
    "ferry",
    "temple",
    "lantern",
    "library",
    "museum",
    "window",
    "pressure",
    "valve",
    "compost",
    "starter",
    "insurance",
    "policy",
    "holiday",
    "weekend",
    "printer",
    "cable",
    "monitor",
    "keyboard",
    "harbour",
    "bridge",
    "castle",
    "market",
    "bakery",
    "station",
    "ticket",
]


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(8, 16))]
    return " ".join(words).capitalize() + f" {rng.randint(1, 9999)}."


def write_notes(folder: Path, files: int, rng: random.Random) -> None:
    for n in range(files):
        sections = []
        for s in range(rng.randint(2, 4)):
            paragraphs = ["\n".join(sentence(rng) for _ in range(rng.randint(2, 5))) for _ in range(rng.randint(1, 3))]
            sections.append(f"## Section {s}\n\n" + "\n\n".join(paragraphs))
        (folder / f"note-{n:04d}.md").write_text(f"# Note {n}\n\n" + "\n\n".join(sections) + "\n")


def ingestion(embedder, reference, work: Path, files: int, reps: int = 2) -> dict:
    """Alternating runs (ours, direct, ours, direct …), each on a fresh index; the best of each."""
    from internlocal.kb.index import Index

    notes = work / "notes"
    notes.mkdir()
    write_notes(notes, files, random.Random(1))
    ours, direct, texts = [], [], []
    for rep in range(reps):
        index = Index(work / f"ingest-{rep}", embedder)
        started = time.perf_counter()
        index.sync([notes])
        ours.append(time.perf_counter() - started)
        texts = [
            (f"{r['heading']}\n{r['text']}" if r["heading"] else r["text"])
            for r in index.db.execute("SELECT heading, text FROM chunk ORDER BY rid")
        ]
        index.close()
        started = time.perf_counter()
        reference.encode(texts, normalize_embeddings=True, convert_to_numpy=True)
        direct.append(time.perf_counter() - started)
    return {
        "chunks": len(texts),
        "ours_s": min(ours),
        "direct_s": min(direct),
        "ours_cps": len(texts) / min(ours),
        "direct_cps": len(texts) / min(direct),
    }


def fill(index, size: int, dimension: int, rng: random.Random) -> None:
    """``size`` chunks of generated text with random unit vectors, written as a sync would write them."""
    import numpy as np

    from internlocal.kb.query import cjk_bigrams

    gen = np.random.default_rng(0)
    db = index.db
    db.execute(
        "INSERT INTO file (path, root, relpath, kind, status, chunks) VALUES ('/bench/x.md', '/bench', 'x.md', "
        "'markdown', 'indexed', ?)",
        (size,),
    )
    batch = 5000
    for start in range(0, size, batch):
        ids = [f"c{n:07d}" for n in range(start, min(size, start + batch))]
        vectors = gen.standard_normal((len(ids), dimension)).astype("float32")
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index.vectors.add(ids=ids, embeddings=vectors, metadatas=[{"kind": "markdown", "relpath": "x.md"}] * len(ids))
        texts = [" ".join(sentence(rng) for _ in range(3)) for _ in ids]
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO chunk (cid, file_id, ordinal, hash, heading, text, start_line, end_line) "
            "VALUES (?, 1, ?, ?, 'Section', ?, ?, ?)",
            [(cid, n, cid, text, n, n) for n, (cid, text) in enumerate(zip(ids, texts, strict=True), start=start)],
        )
        db.executemany(
            "INSERT INTO chunk_bigrams(rowid, grams) SELECT rid, ? FROM chunk WHERE cid = ?",
            [(g, cid) for cid, t in zip(ids, texts, strict=True) if (g := cjk_bigrams(t))],
        )
        db.execute("COMMIT")


def latency(embedder, work: Path, size: int, queries: int) -> dict:
    from internlocal.kb.index import Index

    rng = random.Random(size)
    index = Index(work / f"latency-{size}", embedder)
    started = time.perf_counter()
    fill(index, size, embedder.dimension, rng)
    built = time.perf_counter() - started
    questions = [
        f"How do I fix the {rng.choice(WORDS)} {rng.choice(WORDS)} {rng.randint(1, 9999)}?" for _ in range(queries)
    ]
    for q in questions[:5]:
        index.search(q, k=5)  # warm caches (HNSW index loaded, statements prepared)
    times = []
    for q in questions:
        started = time.perf_counter()
        index.search(q, k=5)
        times.append((time.perf_counter() - started) * 1000)
    embed_times = []
    for q in questions[:50]:
        started = time.perf_counter()
        embedder.embed([q])
        embed_times.append((time.perf_counter() - started) * 1000)
    index.close()
    times.sort()
    return {
        "chunks": size,
        "build_s": built,
        "p50_ms": statistics.median(times),
        "p95_ms": times[int(0.95 * (len(times) - 1))],
        "embed_p50_ms": statistics.median(embed_times),
    }


def quality(embedder, work: Path) -> dict:
    from internlocal.kb.evaluate import evaluate, load_questions
    from internlocal.kb.index import Index

    index = Index(work / "labelled", embedder)
    index.sync([REPO / "tests" / "data" / "kb" / "corpus"])
    questions = load_questions(REPO / "tests" / "data" / "kb" / "questions.jsonl")
    out = {}
    for mode in ("hybrid", "dense", "bm25"):
        r = evaluate(index, questions, threshold=0.35, mode=mode)
        out[mode] = {"recall@5": r["recall@5"], "mrr": r["mrr"], "ndcg@10": r["ndcg@10"]}
    out["refusal"] = {"fitted_threshold": r["fitted_threshold"], "fitted_accuracy": r["fitted_accuracy"]}
    index.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=300)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()

    from sentence_transformers import SentenceTransformer

    from internlocal.engines.loader import local_embedder
    from internlocal.hub.embedded import EMBEDDING_MODEL

    embedder = local_embedder(EMBEDDING_MODEL.locate(), model_name="all-minilm-l6-v2")
    embedder.embed(["warm up"])
    reference = SentenceTransformer(str(EMBEDDING_MODEL.locate()), device="cpu", local_files_only=True)
    reference.encode(["warm up"])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        ing = ingestion(embedder, reference, work, args.files)
        print(
            f"ingestion: {ing['chunks']} chunks from {args.files} files — internlocal sync {ing['ours_s']:.1f} s "
            f"({ing['ours_cps']:.0f} chunks/s), sentence-transformers alone {ing['direct_s']:.1f} s "
            f"({ing['direct_cps']:.0f} chunks/s): ratio {ing['ours_cps'] / ing['direct_cps']:.2f}x (target >= 0.9x)"
        )
        for size in args.sizes:
            lat = latency(embedder, work, size, args.queries)
            print(
                f"query latency at {size:,} chunks: p50 {lat['p50_ms']:.1f} ms, p95 {lat['p95_ms']:.1f} ms "
                f"(of which query embedding p50 {lat['embed_p50_ms']:.1f} ms; index filled in {lat['build_s']:.0f} s)"
                + ("  (target p50 <= 30 ms)" if size == 10_000 else "")
            )
        q = quality(embedder, work)
        for mode in ("hybrid", "dense", "bm25"):
            print(
                f"labelled set, {mode:6}: recall@5 {q[mode]['recall@5']:.3f}  MRR {q[mode]['mrr']:.3f}  "
                f"nDCG@10 {q[mode]['ndcg@10']:.3f}"
            )
        print(
            f"refusal: fitted threshold {q['refusal']['fitted_threshold']:.3f}, "
            f"accuracy {q['refusal']['fitted_accuracy']:.3f}"
        )


if __name__ == "__main__":
    main()
