"""Evaluation speed: `internlocal eval run` vs lm-evaluation-harness, same task, same model, same run.

The task is the built-in capitals_en repeated --copies times (different question numbering, so no
cache is hit), as local JSONL for both tools. Both use transformers on the same HF folder (the
embedded GGUF converted), float32, CPU; internlocal also runs its llama.cpp backend on the GGUF.
Each measurement is a fresh process end to end (imports, model load, scoring, results); internlocal
starts from an empty data directory so its request cache holds nothing. internlocal also runs lm-eval's own
task file for the same items (issue 20: their YAML as it is), to show that reading it costs nothing extra.

    python benchmarks/eval.py [--copies 8] [--reps 3]

Target (issue 7): >= 1.5x lm-evaluation-harness's items/s end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from common import make_hf_dir  # noqa: E402

BIN = Path(sys.executable).with_name("internlocal")


def make_task(work: Path, copies: int) -> tuple[Path, int]:
    rows = [
        json.loads(line) for line in (REPO / "internlocal/evals/builtin/capitals_en.jsonl").read_text().splitlines()
    ]
    data = work / "bench.jsonl"
    items = []
    for k in range(copies):
        for r in rows:
            items.append({**r, "question": f"({k + 1}) {r['question']}"})
    data.write_text("".join(json.dumps(i) + "\n" for i in items))
    (work / "bench_ours.yaml").write_text(
        "name: bench_capitals\nversion: '1'\noutput_type: multiple_choice\ndataset: bench.jsonl\n"
        'doc_to_text: "Question: {question}\\nAnswer:"\ndoc_to_choice: "{choices}"\ndoc_to_target: "{answer}"\n'
    )
    (work / "lme").mkdir(exist_ok=True)
    (work / "lme" / "bench_capitals.yaml").write_text(
        f"task: bench_capitals\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        'output_type: multiple_choice\ndoc_to_text: "Question: {{question}}\\nAnswer:"\ndoc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{answer}}"\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n'
    )
    return work / "bench_ours.yaml", len(items)


def timed(command: list[str], env: dict) -> float:
    start = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {result.stderr[-800:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="il-evalbench-"))
    hf = make_hf_dir(work)
    task_file, n = make_task(work, args.copies)
    base_env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")

    def ours(engine: str, task: Path = task_file) -> float:
        home = Path(tempfile.mkdtemp(prefix="il-evalhome-", dir=work))
        env = dict(base_env, INTERNLOCAL_HOME=str(home), INTERNLOCAL_ENGINE=engine)
        if engine == "transformers":
            subprocess.run(
                [str(BIN), "models", "import", str(hf), "--name", "smol-hf"], env=env, check=True, capture_output=True
            )
            model = "smol-hf"
        else:
            model = "smollm2-135m-instruct-q4_1"
            env["INTERNLOCAL_ENGINE"] = "auto"
        return timed([str(BIN), "eval", "run", model, str(task), "--json"], env)

    def theirs() -> float:
        return timed(
            [
                sys.executable,
                "-m",
                "lm_eval",
                "--model",
                "hf",
                "--model_args",
                f"pretrained={hf},dtype=float32",
                "--tasks",
                "bench_capitals",
                "--include_path",
                str(work / "lme"),
                "--batch_size",
                "8",
                "--device",
                "cpu",
            ],
            base_env,
        )

    results: dict[str, list[float]] = {
        "internlocal (transformers)": [],
        "internlocal (llama.cpp, GGUF)": [],
        "internlocal (transformers, lm-eval's YAML)": [],
        "lm-evaluation-harness (hf)": [],
    }
    for _ in range(args.reps):
        results["internlocal (transformers)"].append(ours("transformers"))
        results["internlocal (transformers, lm-eval's YAML)"].append(
            ours("transformers", work / "lme" / "bench_capitals.yaml")
        )
        results["internlocal (llama.cpp, GGUF)"].append(ours("llama.cpp"))
        results["lm-evaluation-harness (hf)"].append(theirs())
    shutil.rmtree(work, ignore_errors=True)
    print(f"{n} multiple-choice items (4 choices each), end to end per process, {args.reps} reps, median")
    med = {k: statistics.median(v) for k, v in results.items()}
    for name, seconds in med.items():
        print(f"{name:44} {seconds:7.2f} s  {n / seconds:7.1f} items/s")
    base = med["lm-evaluation-harness (hf)"]
    their_file = med["internlocal (transformers, lm-eval's YAML)"]
    print(
        f"ratio vs lm-evaluation-harness (items/s): transformers {base / med['internlocal (transformers)']:.2f}, "
        f"llama.cpp {base / med['internlocal (llama.cpp, GGUF)']:.2f}, "
        f"transformers on lm-eval's YAML {base / their_file:.2f}"
        "  (target >= 1.5)"
    )


if __name__ == "__main__":
    main()
