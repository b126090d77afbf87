"""Every parser survives every input: property-based fuzzing (hypothesis) of what a user's files and a client's
requests reach. A bad input is refused or skipped with a sentence (``UserError``, ``Unreadable``), never a crash.

`make test` runs a bounded number of examples per parser (the "ci" profile, tests/conftest.py); `make test-fuzz`
runs the same properties with many more (the "fuzz" profile).
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from internlocal.errors import UserError
from internlocal.kb.chunking import chunk_blocks
from internlocal.kb.extract import Unreadable, extract
from tests.test_kb import make_pdf

pytestmark = pytest.mark.fuzz

KEYS = [
    "messages", "role", "content", "conversations", "from", "value", "instruction", "input", "output", "text",
    "system", "history", "name", "tools",
]  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5)
    ),
    max_leaves=15,
)


def _docx_bytes() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Keys", level=1)
    document.add_paragraph("The spare key is under the blue flowerpot.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


SAMPLES = {
    ".pdf": make_pdf(["The spare key is under the blue flowerpot.", "Page two."]),
    ".docx": _docx_bytes(),
    ".html": b"<html><body><h1>Keys</h1><p>The spare key is under the <b>blue</b> flowerpot.</p></body></html>",
    ".md": b"# Keys\n\n```\n# not a heading\n```\n\nThe spare key is under the blue flowerpot.\n",
    ".py": b"def key():\n    return 'flowerpot'\n",
    ".txt": "Schlüssel 钥匙 ключ\n\nunder the flowerpot\n".encode(),
}
MUTATIONS = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=10)


def mutate(data: bytes, changes: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for position, value in changes:
        out[position % len(out)] = value
    return bytes(out[:cut] if cut is not None else out)


def read_document(suffix: str, data: bytes) -> None:
    """Extract and chunk as a sync does: blocks, or ``Unreadable`` with a reason."""
    try:
        blocks = extract(Path(f"file{suffix}"), data)
    except Unreadable as exc:
        assert str(exc).strip()
        return
    chunk_blocks(blocks, 300, 50, code=suffix == ".py")


@given(suffix=st.sampled_from(sorted(SAMPLES)), changes=MUTATIONS, cut=st.none() | st.integers(0, 4000))
def test_document_extractors_read_or_refuse_damaged_files(suffix, changes, cut):
    read_document(suffix, mutate(SAMPLES[suffix], changes, cut))


@given(
    suffix=st.sampled_from([".txt", ".md", ".html", ".py"]),
    text=st.text(max_size=300),
    encoding=st.sampled_from(["utf-8", "utf-16", "utf-8-sig", "gbk", "shift_jis", "latin-1", "cp1251"]),
)
def test_text_in_odd_encodings_is_read_or_refused(suffix, text, encoding):
    read_document(suffix, text.encode(encoding, errors="ignore"))


@given(suffix=st.sampled_from(sorted(SAMPLES)), data=st.binary(max_size=2000))
def test_arbitrary_bytes_under_any_document_name(suffix, data):
    read_document(suffix, data)


def _dataset_file(folder: Path, suffix: str, rows: list[Any]) -> Path:
    path = folder / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".csv":
        import csv

        keys = sorted({k for r in rows if isinstance(r, dict) for k in r})
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(keys)
            for r in rows:
                writer.writerow([json.dumps(r.get(k)) if isinstance(r, dict) else json.dumps(r) for k in keys])
    return path


@given(suffix=st.sampled_from([".jsonl", ".json", ".csv"]), rows=st.lists(JSON, min_size=0, max_size=5))
def test_dataset_loaders_load_or_refuse_any_rows(suffix, rows):
    from internlocal.data.formats import load_examples

    with tempfile.TemporaryDirectory() as folder:
        try:
            _, examples = load_examples(_dataset_file(Path(folder), suffix, rows))
        except UserError as exc:
            assert str(exc).strip()
            return
        assert examples and all(("messages" in e) != ("text" in e) for e in examples)


@given(suffix=st.sampled_from([".jsonl", ".json", ".csv", ".parquet"]), data=st.binary(max_size=1000))
def test_dataset_loaders_refuse_bytes_that_are_not_their_format(suffix, data):
    from internlocal.data.formats import load_examples

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(data)
        try:
            load_examples(path)
        except UserError as exc:
            assert str(exc).strip()


def load_or_refuse(document: Any, name: str, load) -> None:
    """``document`` (text, or YAML made from a value) as the file ``name`` in a fresh folder: ``load(path)`` reads
    it or refuses with a sentence."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_text(document if isinstance(document, str) else yaml.safe_dump(document))
        try:
            load(path)
        except UserError as exc:
            assert str(exc).strip()


RECIPE_KEYS = ["base", "dataset", "method", "epochs", "lr", "lora", "export", "guard", "replay", "seq_len", "gpus"]


@given(
    document=st.dictionaries(st.sampled_from(RECIPE_KEYS) | st.text(max_size=8), JSON, max_size=6)
    | JSON
    | st.text(max_size=200)
)
def test_recipe_files_load_or_refuse(document):
    from internlocal.train.recipe import load_recipe

    load_or_refuse(document, "mine.yaml", lambda path: load_recipe(str(path)))


TASK_KEYS = ["name", "dataset", "output_type", "doc_to_text", "doc_to_target", "doc_to_choice", "metric_list", "kind"]


@given(
    document=st.dictionaries(st.sampled_from(TASK_KEYS) | st.text(max_size=8), JSON, max_size=6)
    | JSON
    | st.text(max_size=200)
)
def test_task_files_load_or_refuse(document):
    from internlocal.evals.tasks import load_task

    load_or_refuse(document, "task.yaml", load_task)


@given(
    document=st.dictionaries(st.sampled_from(["family", "models", "name", "hf", "gguf", "files", "license"]), JSON)
    | JSON
    | st.text(max_size=200)
)
def test_model_registry_files_load_or_refuse(document):
    from internlocal.hub.registry import load_registry

    load_or_refuse(document, "family.yaml", lambda path: load_registry(path.parent))


@pytest.fixture(scope="module")
def gguf_header(gguf_path) -> bytes:
    with gguf_path.open("rb") as fh:
        return fh.read(3 << 20)  # the header and the vocabulary: what read_gguf parses


@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.data_too_large])
@given(changes=MUTATIONS, cut=st.none() | st.integers(0, 3 << 20))
def test_the_gguf_header_parser_reads_or_refuses_damaged_files(gguf_header, changes, cut):
    from internlocal.errors import ModelFileError
    from internlocal.hub.inspect import read_gguf

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.gguf"
        path.write_bytes(mutate(gguf_header, changes, cut))
        try:
            read_gguf(path)
        except ModelFileError as exc:
            assert str(exc).strip()


MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"]) | st.text(max_size=8)},
    optional={"content": st.text(max_size=60) | st.none()},
)


@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=st.lists(MESSAGE, max_size=5))
def test_chat_templates_render_or_refuse_any_conversation(engine, messages):
    try:
        text = engine.render_chat(messages)
    except UserError as exc:
        assert str(exc).strip()
        return
    assert isinstance(text, str)
