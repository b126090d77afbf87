"""Agreement with lm-evaluation-harness on the same local data and the same HF folder: our task format, and
lm-eval task files run unchanged through `internlocal eval run`."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from internlocal.evals.runner import RequestCache, evaluate
from internlocal.evals.tasks import BUILTIN_DIR, get_task

N = 12


@pytest.fixture(scope="module")
def lm_eval_run(hf_model_dir, tmp_path_factory):
    """lm-evaluation-harness (from PyPI) on the first N items of capitals_en as three task files pointed at local
    JSONL: (the folder of task files, lm-eval's result with its samples)."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import lm_eval
    from lm_eval.tasks import TaskManager

    folder = tmp_path_factory.mktemp("lm-eval-task")
    rows = (BUILTIN_DIR / "capitals_en.jsonl").read_text(encoding="utf-8").splitlines()[:N]
    (folder / "data.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    # cloze choices taken from fields, a description and few-shot examples drawn from the test split itself
    fields = []
    for line in rows:
        row = json.loads(line)
        fields.append(
            {"question": row["question"], **dict(zip("ABCD", row["choices"], strict=True)), "answer": row["answer"]}
        )
    (folder / "fields.jsonl").write_text("".join(json.dumps(r) + "\n" for r in fields), encoding="utf-8")
    (folder / "capitals_fields.yaml").write_text(
        f"""task: capitals_fields
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / "fields.jsonl"}
test_split: test
output_type: multiple_choice
description: "Capitals of the world.\\n\\n"
doc_to_text: "Question: {{{{question.strip()}}}}\\nAnswer:"
doc_to_choice: "{{{{[A, B, C, D]}}}}"
doc_to_target: "{{{{answer}}}}"
num_fewshot: 2
metric_list:
  - metric: acc
  - metric: acc_norm
""",
        encoding="utf-8",
    )
    qa = (BUILTIN_DIR / "capitals_en_qa.jsonl").read_text(encoding="utf-8").splitlines()[:N]
    (folder / "qa.jsonl").write_text("\n".join(qa) + "\n", encoding="utf-8")
    (folder / "capitals_gen.yaml").write_text(
        f"""task: capitals_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / "qa.jsonl"}
test_split: test
output_type: generate_until
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{answer}}}}"
generation_kwargs:
  until: ["\\n"]
  max_gen_toks: 12
  do_sample: false
filter_list:
  - name: first-word
    filter:
      - function: regex
        regex_pattern: "([A-Z][\\\\w-]+)"
      - function: take_first
metric_list:
  - metric: exact_match
    ignore_case: true
""",
        encoding="utf-8",
    )
    # no test split: lm-eval evaluates validation and, with no few-shot split named, leaves the question out of its
    # own examples; loglikelihood sends the target as written; loglikelihood_rolling scores doc_to_target
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    validation: {folder / 'fields.jsonl'}\n"
    common += "validation_split: validation\n"
    (folder / "capitals_val.yaml").write_text(
        common + "task: capitals_val\noutput_type: multiple_choice\nnum_fewshot: 2\n"
        "doc_to_text: 'Q: {{question}}\\nA:'\ndoc_to_choice: '{{[A, B, C, D]}}'\ndoc_to_target: answer\n",
        encoding="utf-8",
    )
    (folder / "capitals_ll.yaml").write_text(
        common + "task: capitals_ll\noutput_type: loglikelihood\ndoc_to_text: 'Q: {{question}}\\nA:'\n"
        "doc_to_target: \"{{' ' + A}}\"\nmetric_list:\n  - metric: acc\n  - metric: perplexity\n",
        encoding="utf-8",
    )
    (folder / "capitals_roll.yaml").write_text(
        common + "task: capitals_roll\noutput_type: loglikelihood_rolling\ndoc_to_text: ''\n"
        "doc_to_target: '{{question}} The answer is {{A}}.'\nmetric_list:\n  - metric: word_perplexity\n"
        "  - metric: byte_perplexity\n",
        encoding="utf-8",
    )
    (folder / "capitals_lme.yaml").write_text(
        f"""task: capitals_lme
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder / "data.jsonl"}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
  - metric: acc_norm
""",
        encoding="utf-8",
    )
    result = lm_eval.simple_evaluate(
        model="hf",
        model_args=f"pretrained={hf_model_dir},dtype=float32",
        tasks=["capitals_lme", "capitals_fields", "capitals_gen", "capitals_val", "capitals_ll", "capitals_roll"],
        task_manager=TaskManager(include_path=str(folder)),
        log_samples=True,
        batch_size=8,
        device="cpu",
    )
    return folder, result


@pytest.fixture(scope="module")
def lm_eval_samples(lm_eval_run):
    """capitals_lme's metrics and per-item log-likelihoods."""
    _, result = lm_eval_run
    samples = sorted(result["samples"]["capitals_lme"], key=lambda s: s["doc_id"])
    return result["results"]["capitals_lme"], [[r[0] for r in s["filtered_resps"]] for s in samples]


def test_per_item_loglikelihoods_and_accuracy_match_lm_eval(hf_model_dir, lm_eval_samples):
    from internlocal.engines.transformers_engine import TransformersEngine

    theirs_metrics, theirs = lm_eval_samples
    with TransformersEngine(hf_model_dir, n_ctx=2048) as engine:
        ours = evaluate(engine, get_task("capitals_en"), RequestCache(None, "agree"), limit=N)
    for item, expected in zip(ours.items, theirs, strict=True):
        assert item["scores"]["loglikelihoods"] == pytest.approx(expected, abs=1e-3)
    assert ours.metrics["acc"] == theirs_metrics["acc,none"]
    assert ours.metrics["acc_norm"] == theirs_metrics["acc_norm,none"]


def test_llama_cpp_backend_agrees_within_a_stated_tolerance(engine, lm_eval_samples):
    """The GGUF the HF folder came from, through llama.cpp. Stated tolerance: mean absolute difference
    of per-choice log-likelihoods under 0.6 nats, none over 1.5, and the same accuracy. (Measured on
    all 24 items: mean 0.45, max 1.03 — llama.cpp's Q4_1 kernels also quantize activations to 8 bits,
    and these prompts start without BOS, which makes the first positions sensitive to it.)"""
    theirs_metrics, theirs = lm_eval_samples
    ours = evaluate(engine, get_task("capitals_en"), RequestCache(None, "agree-gguf"), limit=N)
    diffs = [
        abs(a - b)
        for item, expected in zip(ours.items, theirs, strict=True)
        for a, b in zip(item["scores"]["loglikelihoods"], expected, strict=True)
    ]
    assert sum(diffs) / len(diffs) < 0.6 and max(diffs) < 1.5
    assert ours.metrics["acc"] == theirs_metrics["acc,none"]
    assert ours.metrics["acc_norm"] == theirs_metrics["acc_norm,none"]


def _samples(result: dict, task: str) -> list[dict]:
    return sorted(result["samples"][task], key=lambda s: s["doc_id"])


def test_lm_eval_task_files_run_unchanged_through_the_cli(hf_model_dir, lm_eval_run, internlocal_bin, cli_env):
    """The lm-eval YAMLs above, given to `internlocal eval run` as files: the same per-item log-likelihoods
    (multiple choice from fields, with a description and two few-shot examples), the same filtered answers
    of the regex filter, and the same acc, acc_norm and exact_match."""
    folder, theirs = lm_eval_run

    def cli(*args: str) -> str:
        out = subprocess.run([internlocal_bin, *args], env=cli_env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        return out.stdout

    cli("models", "import", str(hf_model_dir), "--name", "smollm2-hf")
    out = cli(
        "eval", "run", "smollm2-hf", str(folder / "capitals_fields.yaml"), str(folder / "capitals_gen.yaml"), "--json"
    )
    events = [json.loads(line) for line in out.splitlines()]
    runs = next(e["result"] for e in events if e["type"] == "result")["models"]["smollm2-hf"]

    mc = runs["capitals_fields"]
    assert mc["acc"] == theirs["results"]["capitals_fields"]["acc,none"]
    assert mc["acc_norm"] == theirs["results"]["capitals_fields"]["acc_norm,none"]
    items = json.loads(cli("eval", "show", str(mc["run"]), "--json"))
    expected = _samples(theirs, "capitals_fields")
    assert len(items) == len(expected) == N
    for item, sample in zip(items, expected, strict=True):
        assert item["prompt"] == sample["arguments"][0][0]  # description + the same two examples + the question
        assert item["scores"]["loglikelihoods"] == pytest.approx([r[0] for r in sample["filtered_resps"]], abs=1e-3)

    gen = runs["capitals_gen"]
    assert gen["exact_match,first-word"] == theirs["results"]["capitals_gen"]["exact_match,first-word"]
    items = json.loads(cli("eval", "show", str(gen["run"]), "--json"))
    for item, sample in zip(items, _samples(theirs, "capitals_gen"), strict=True):
        assert item["response"] == sample["resps"][0][0]
        assert item["scores"]["extracted"] == sample["filtered_resps"][0]
        assert item["scores"]["exact_match,first-word"] == sample["exact_match"]


def test_validation_split_loglikelihood_and_rolling_files_agree(hf_model_dir, lm_eval_run):
    """lm-eval's rules where its defaults are easy to get wrong: a file without a test split (few-shot examples
    from the validation docs, the question left out), loglikelihood's target sent as written, and
    loglikelihood_rolling scoring doc_to_target with lm-eval's word count."""
    from internlocal.engines.transformers_engine import TransformersEngine

    folder, theirs = lm_eval_run
    with TransformersEngine(hf_model_dir, n_ctx=2048) as engine:
        for name in ("capitals_val", "capitals_ll", "capitals_roll"):
            task = get_task(str(folder / f"{name}.yaml"))
            ours = evaluate(engine, task, RequestCache(None, name))
            expected = _samples(theirs, name)
            results = theirs["results"][name]
            if name == "capitals_roll":
                for metric in ("word_perplexity", "byte_perplexity"):
                    assert ours.metrics[metric] == pytest.approx(results[f"{metric},none"], rel=1e-4)
                continue
            for item, sample in zip(ours.items, expected, strict=True):
                assert item["prompt"] == sample["arguments"][0][0]
            if name == "capitals_val":
                lls = [r[0] for s in expected for r in s["filtered_resps"]]
                assert [ll for it in ours.items for ll in it["scores"]["loglikelihoods"]] == pytest.approx(
                    lls, abs=1e-3
                )
                assert ours.metrics["acc"] == results["acc,none"]
            else:
                assert [it["target"] for it in ours.items] == [s["arguments"][0][1] for s in expected]
                lls = [s["filtered_resps"][0][0] for s in expected]
                assert [it["scores"]["loglikelihood"] for it in ours.items] == pytest.approx(lls, abs=1e-3)
                assert ours.metrics["acc"] == results["acc,none"]
                assert ours.metrics["perplexity"] == pytest.approx(results["perplexity,none"], rel=1e-4)
