"""Training datasets: the four row forms in four file types, bad rows, the masking preview, import into the catalog."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from internlocal.data.formats import load_examples
from internlocal.data.library import import_dataset, read_split
from internlocal.data.rendering import IGNORE, preview, render
from internlocal.errors import UserError

CHAT = [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": "Paris."}]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(hf_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(hf_model_dir)


def test_every_form_is_detected_and_normalized(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}
    write_jsonl(tmp_path / "openai.jsonl", [{"messages": expected["messages"]}])
    write_jsonl(
        tmp_path / "sharegpt.jsonl",
        [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}],
    )
    (tmp_path / "alpaca.json").write_text(json.dumps([{"instruction": "Hi", "input": "", "output": "Hello!"}]))
    with (tmp_path / "alpaca.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["instruction", "input", "output"], ["Hi", "", "Hello!"]])
    pq.write_table(
        pa.Table.from_pylist(
            [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}]
        ),
        tmp_path / "sharegpt.parquet",
    )
    for name, form in [
        ("openai.jsonl", "messages"),
        ("sharegpt.jsonl", "sharegpt"),
        ("alpaca.json", "alpaca"),
        ("alpaca.csv", "alpaca"),
        ("sharegpt.parquet", "sharegpt"),
    ]:
        used, examples = load_examples(tmp_path / name)
        assert (used, examples) == (form, [expected]), name
    write_jsonl(tmp_path / "text.jsonl", [{"text": "Once upon a time."}])
    assert load_examples(tmp_path / "text.jsonl") == ("text", [{"text": "Once upon a time."}])
    # alpaca input and history, sharegpt system, forced form
    used, [example] = load_examples(
        write_jsonl(
            tmp_path / "a2.jsonl",
            [
                {
                    "instruction": "Translate",
                    "input": "chat",
                    "output": "cat",
                    "system": "Be brief.",
                    "history": [["Hi", "Hello"]],
                }
            ],
        )
    )
    assert [m["role"] for m in example["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert example["messages"][3]["content"] == "Translate\n\nchat"


def test_bad_rows_are_named_by_line_and_nothing_is_imported(tmp_path, services):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"messages": CHAT})
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "only a question"}]})
        + "\n"
        + "{not json\n",
        encoding="utf-8",
    )
    with pytest.raises(UserError, match=r"bad.jsonl line 3: not valid JSON"):
        load_examples(bad)
    bad.write_text(
        json.dumps({"messages": CHAT})
        + "\n"
        + json.dumps({"messages": [{"role": "user", "content": "only a question"}]})
        + "\n"
        + json.dumps({"messages": [{"role": "robot", "content": "beep"}]})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(
        UserError,
        match=r"2 bad row\(s\) as messages: line 2: no assistant message with text: nothing to "
        r"train on; line 3: message 1 needs a role",
    ):
        import_dataset(services.catalog, services.settings.home, bad, name="bad")
    assert services.catalog.find_dataset("bad") is None and not (services.settings.home / "datasets" / "bad").exists()
    with pytest.raises(UserError, match="cannot tell the dataset form"):
        load_examples(write_jsonl(tmp_path / "odd.jsonl", [{"question": "x", "reply": "y"}]))
    with pytest.raises(UserError, match=r"unknown file type \.txt"):
        load_examples(tmp_path / "odd.txt") if (tmp_path / "odd.txt").write_text("x") else None


def test_masking_preview_marks_only_assistant_tokens(tokenizer):
    example = {
        "messages": [
            {"role": "user", "content": "What is the internlocal mascot?"},
            {"role": "assistant", "content": "Zorblax the otter."},
            {"role": "user", "content": "Thanks!"},
            {"role": "assistant", "content": "You're welcome."},
        ]
    }
    tokens = preview(tokenizer, example)
    trained = "".join(t for t, on in tokens if on)
    assert trained == "Zorblax the otter.<|im_end|>\nYou're welcome.<|im_end|>\n"
    untrained = "".join(t for t, on in tokens if not on)
    assert "What is the internlocal mascot?" in untrained and "Thanks!" in untrained and "Zorblax" not in untrained
    assert all(on for _, on in preview(tokenizer, example, train_on="all"))
    rendered = render(tokenizer, {"text": "Hello world"})
    assert rendered.labels == rendered.input_ids and rendered.input_ids[-1] == tokenizer.eos_token_id
    cut = render(tokenizer, example, max_len=8)
    assert cut.truncated and len(cut.input_ids) == 8 and all(label == IGNORE for label in cut.labels)


def test_import_splits_counts_tokens_and_keeps_the_catalog_consistent(tmp_path, services, tokenizer):
    rows = [
        {"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"Answer {i}."}]}
        for i in range(20)
    ]
    source = write_jsonl(tmp_path / "qa.jsonl", rows)
    dataset = import_dataset(
        services.catalog,
        services.settings.home,
        source,
        name="qa",
        validation=0.1,
        tokenizer=tokenizer,
        tokenizer_name="smol",
    )
    assert (dataset.train_rows, dataset.validation_rows, dataset.form) == (18, 2, "messages")
    train, held = read_split(Path(dataset.path), "train"), read_split(Path(dataset.path), "validation")
    assert (
        len(train) == 18 and len(held) == 2 and sorted(map(json.dumps, train + held)) == sorted(map(json.dumps, rows))
    )
    stats = dataset.stats
    assert stats["rows"] == 20 and 0 < stats["tokens_trained"] < stats["tokens_total"] and stats["tokenizer"] == "smol"
    assert stats["tokens_max"] >= stats["tokens_p95"] >= stats["tokens_p50"] > 0
    with pytest.raises(UserError, match="already in the catalog"):
        import_dataset(services.catalog, services.settings.home, source, name="qa")
    assert len(read_split(Path(dataset.path), "train")) == 18  # the first import is untouched
    empty = write_jsonl(
        tmp_path / "empty.jsonl",
        [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": " "}]}],
    )
    with pytest.raises(UserError, match="no assistant message with text"):
        import_dataset(services.catalog, services.settings.home, empty, name="empty", tokenizer=tokenizer)


def test_csv_cells_carry_conversations_as_json_and_a_bad_cell_is_named_by_line(tmp_path):
    with (tmp_path / "chats.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["messages"], [json.dumps(CHAT)]])
    assert load_examples(tmp_path / "chats.csv") == ("messages", [{"messages": CHAT}])
    with (tmp_path / "share.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows(
            [
                ["system", "conversations"],
                [
                    "Be brief.",
                    json.dumps(
                        [
                            {"from": "human", "value": "What is the capital of France?"},
                            {"from": "gpt", "value": "Paris."},
                        ]
                    ),
                ],
            ]
        )
    assert load_examples(tmp_path / "share.csv") == (
        "sharegpt",
        [{"messages": [{"role": "system", "content": "Be brief."}, *CHAT]}],
    )
    with (tmp_path / "bad.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["messages"], [json.dumps(CHAT)], ["user: hi / assistant: hello"]])
    with pytest.raises(
        UserError, match=r"bad.csv: 1 bad row\(s\) as messages: line 3: 'messages' is text that is not valid JSON"
    ):
        load_examples(tmp_path / "bad.csv")


def test_a_forced_form_overrides_detection(tmp_path, services, tokenizer):
    """Rows that look like Alpaca (instruction + output) also carry the text; forced to text, the text is what is
    kept."""
    rows = [
        {"instruction": f"Summarize note {i}.", "output": f"Note {i}.", "text": f"Note {i} is about otters."}
        for i in range(4)
    ]
    source = write_jsonl(tmp_path / "notes.jsonl", rows)
    assert load_examples(source)[0] == "alpaca"
    assert load_examples(source, "text") == ("text", [{"text": r["text"]} for r in rows])
    dataset = import_dataset(
        services.catalog,
        services.settings.home,
        source,
        name="notes",
        form="text",
        validation=0,
        tokenizer=tokenizer,
        tokenizer_name="smol",
    )
    assert dataset.form == "text"
    assert read_split(Path(dataset.path), "train") == [{"text": r["text"]} for r in rows]
    assert dataset.stats["tokens_trained"] == dataset.stats["tokens_total"]  # raw text: every token trained


def test_a_tokenizer_shipped_as_code_loads_only_when_the_recipe_trusts_it(tmp_path, services, hf_model_dir):
    """InternLM ships its tokenizer as Python next to the weights: refused with a sentence unless trusted."""
    import shutil

    from internlocal.catalog.schema import Model
    from internlocal.data.library import load_tokenizer

    folder = tmp_path / "custom"
    folder.mkdir()
    for file in hf_model_dir.glob("tokenizer*"):
        shutil.copy(file, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(
        tokenizer_class="ShoutTokenizer", auto_map={"AutoTokenizer": [None, "tokenization_shout.ShoutTokenizer"]}
    )
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    (folder / "tokenization_shout.py").write_text(
        "from transformers import PreTrainedTokenizerFast\n\n\n"
        "class ShoutTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    model = Model(name="custom", format="hf", path=str(folder))
    with pytest.raises(
        UserError, match="runs code shipped with the model; if you trust it, set trust_remote_code: true"
    ):
        load_tokenizer(services.catalog, model)
    tokenizer = load_tokenizer(services.catalog, model, trust_remote_code=True)
    assert type(tokenizer).__name__ == "ShoutTokenizer" and tokenizer("Paris")["input_ids"]


def test_cli_imports_with_the_default_model_previews_and_lists_recipes(internlocal_bin, cli_env):
    import json
    import subprocess

    from internlocal.train.recipe import recipes_dir

    def cli(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([internlocal_bin, *args], env=cli_env, capture_output=True, text=True, timeout=180)
        assert out.returncode == 0, out.stderr
        return out

    data = recipes_dir() / "data" / "internlocal_mascot.jsonl"
    imported = cli("data", "import", str(data), "--name", "mascot")  # no --model: the embedded chat model's tokenizer
    assert "dataset mascot:" in imported.stdout and "(smollm2-135m-instruct-q4_1)" in imported.stdout
    tokens = json.loads(cli("data", "preview", "mascot", "--json").stdout)
    trained = "".join(t["token"] for t in tokens if t["trained"])
    first = json.loads(data.read_text().splitlines()[0])["messages"][-1]["content"]
    assert (
        trained == first + "<|im_end|>\n"
    )  # the assistant's reply and its end (as the template closes a turn), no prompt
    recipes = {r["recipe"]: r for r in json.loads(cli("train", "list", "--json").stdout)}
    assert recipes["smollm2-135m_qlora_cpu"]["fits"] is True and recipes["smollm2-135m_qlora_cpu"]["estimate_bytes"] > 0
    assert recipes["internlm2_5-7b_qlora_gpu8"]["hardware"] == "gpu"
    shown = cli("train", "show", "smollm2-135m_qlora_cpu", "lr=1e-4").stdout
    assert "lr: 0.0001" in shown and "memory estimate (cpu)" in shown
