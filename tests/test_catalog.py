"""Catalog: migrations (fresh and from a committed v1 file), WAL, and the faults a user can hit."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlmodel import SQLModel

from internlocal.catalog import db
from internlocal.catalog.catalog import Catalog
from internlocal.catalog.migrations import LATEST_VERSION
from internlocal.catalog.schema import Model
from internlocal.config import Settings
from internlocal.errors import CatalogError, DataDirError, NotFound, UserError

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "catalog_v1.sqlite"


def _model(name: str, **kw) -> Model:
    return Model(name=name, format="gguf", path=f"/models/{name}.gguf", **kw)


def test_fresh_catalog_is_latest_schema_in_wal_mode(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    conn = sqlite3.connect(tmp_path / "c.sqlite")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert cat.previous_version == 0
    cat.close()


def test_sqlmodel_classes_match_migrated_tables(tmp_path):
    Catalog(tmp_path / "c.sqlite").close()
    conn = sqlite3.connect(tmp_path / "c.sqlite")
    for table in SQLModel.metadata.sorted_tables:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table.name})")}
        assert columns == {c.name for c in table.columns}, table.name


def test_upgrade_from_committed_v1_catalog_keeps_every_row(tmp_path):
    path = tmp_path / "catalog.sqlite"
    shutil.copy(FIXTURE_V1, path)
    cat = Catalog(path)
    assert cat.previous_version == 1
    assert (tmp_path / "catalog.sqlite.bak-v1").exists()

    models = {m.name: m for m in cat.list_models()}
    assert set(models) == {"my-model-q4_k_m", "my-model-hf"}
    gguf = models["my-model-q4_k_m"]
    assert (gguf.quantization, gguf.parameters, gguf.context_length) == ("Q4_K_M", 1889110016, 32768)
    assert gguf.metadata_dict == {"general.name": "InternLM2.5 1.8B"}
    assert models["my-model-hf"].storage == "store"

    [edge] = cat.parents(("model", gguf.id))
    assert (edge.parent_type, edge.parent_id, edge.operation) == ("model", models["my-model-hf"].id, "convert.gguf")

    [chat] = cat.list_chats()
    assert chat.title == "法国首都"
    messages = cat.messages(chat.id)
    assert [(m.role, m.content) for m in messages] == [("user", "法国的首都是哪里？"), ("assistant", "巴黎。")]
    assert messages[1].tokens_per_s == pytest.approx(80.1)

    # the new table works in the upgraded file
    assert cat.list_jobs() == []
    cat.close()
    # and opening again is a no-op
    again = Catalog(path)
    assert again.previous_version == LATEST_VERSION
    assert len(again.list_models()) == 2
    again.close()


def test_catalog_from_newer_version_is_refused_untouched(tmp_path):
    path = tmp_path / "c.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(CatalogError, match="newer internlocal"):
        Catalog(path)
    assert path.read_bytes() == before


def test_corrupt_catalog_gives_one_sentence_and_is_left_alone(tmp_path):
    path = tmp_path / "catalog.sqlite"
    path.write_bytes(b"this is not a database" * 200)
    before = path.read_bytes()
    with pytest.raises(CatalogError, match="corrupt") as info:
        Catalog(path)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before


def test_locked_catalog_gives_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "c.sqlite"
    cat = Catalog(path)
    cat.add_model(_model("kept"))
    cat.close()
    # another program holds an exclusive lock and an upgrade must wait for it
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA user_version = 1")  # forces the migration path, which needs the write lock
    conn.execute("BEGIN EXCLUSIVE")
    monkeypatch.setattr(db, "BUSY_TIMEOUT_S", 0.2)
    with pytest.raises(CatalogError, match="locked"):
        Catalog(path)
    conn.execute("ROLLBACK")
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION}")
    conn.close()
    assert [m.name for m in Catalog(path).list_models()] == ["kept"]


def test_unwritable_data_directory_is_one_clear_sentence(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    settings = Settings(home=blocker / "home")
    with pytest.raises(DataDirError, match="INTERNLOCAL_HOME"):
        settings.ensure_dirs()


def test_models_lookup_by_id_name_and_prefix(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    a = cat.add_model(_model("qwen2.5-0.5b-instruct-q4_k_m"))
    cat.add_model(_model("qwen2.5-1.5b-instruct-q4_k_m"))
    assert cat.get_model(a.id).name == a.name
    assert cat.get_model(str(a.id)).name == a.name
    assert cat.get_model("qwen2.5-0.5b").name == a.name
    assert cat.find_model("qwen2.5") is None  # ambiguous prefix
    with pytest.raises(NotFound, match="models list"):
        cat.get_model("nope")
    with pytest.raises(UserError, match="already in the catalog"):
        cat.add_model(_model("qwen2.5-0.5b-instruct-q4_k_m"))
    assert len(cat.list_models()) == 2


def test_lineage_chain(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    base = cat.add_model(_model("base"))
    merged = cat.add_model(_model("merged"))
    gguf = cat.add_model(_model("merged-q4"))
    cat.add_lineage(("model", base.id), ("run", 7), "finetune.qlora", {"recipe": "smollm2_135m_qlora_cpu"})
    cat.add_lineage(("run", 7), ("model", merged.id), "merge")
    cat.add_lineage(("model", merged.id), ("model", gguf.id), "quantize", {"type": "Q4_K_M"})
    assert [e.operation for e in cat.children(("model", base.id))] == ["finetune.qlora"]
    [edge] = cat.parents(("model", gguf.id))
    assert edge.parent_id == merged.id and '"Q4_K_M"' in edge.params_json
    assert cat.parents(("model", merged.id))[0].parent_type == "run"


def test_chats_and_messages_round_trip(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    first = cat.create_chat("first", "You are a helpful assistant.", "m", {"temperature": 0.1})
    second = cat.create_chat("second", "sys", "m")
    cat.add_message(first.id, "user", "hi")
    cat.add_message(first.id, "assistant", "hello", prompt_tokens=10, completion_tokens=2, finish_reason="stop")
    assert next(c.id for c in cat.list_chats()) == first.id  # most recently active first
    cat.delete_chat(first.id)
    assert [c.id for c in cat.list_chats()] == [second.id]
    assert cat.messages(first.id) == []
    with pytest.raises(NotFound):
        cat.add_message(first.id, "user", "to a deleted chat")


def test_concurrent_writers_from_threads(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite")
    chat = cat.create_chat("t", "s", None)
    errors = []

    def write(n: int) -> None:
        try:
            for i in range(25):
                cat.add_message(chat.id, "user", f"{n}-{i}")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(cat.messages(chat.id)) == 100


WRITER = """
import sys, time
from pathlib import Path
from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Job
cat = Catalog(Path(sys.argv[1]))
chat, seconds, n = int(sys.argv[2]), float(sys.argv[3]), 0
deadline = time.monotonic() + seconds
while time.monotonic() < deadline:
    job = cat.add_job(Job(kind="test", target="x:y", title=f"w{n}", status="queued", params_json="{}", events_path=""))
    cat.update_job(job.id, status="running")
    cat.add_message(chat, "user", f"message {n}")
    cat.list_jobs()
    n += 1
print(n)
"""


def test_processes_writing_at_once_never_see_database_is_locked(tmp_path):
    """The TUI, the CLI and job workers write the same catalog: several processes writing as fast as they can for a
    bounded time all succeed, and every write is there."""
    import subprocess
    import sys

    path = tmp_path / "c.sqlite"
    cat = Catalog(path)
    chat = cat.create_chat("shared", "s", None)
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(chat.id), "6"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    ours = 0
    for _ in range(100):  # this process writes meanwhile, as the TUI would
        cat.add_message(chat.id, "assistant", "from the window")
        ours += 1
    counts = []
    for writer in writers:
        out, err = writer.communicate(timeout=120)
        assert writer.returncode == 0, err[-2000:]
        counts.append(int(out))
    assert all(n > 0 for n in counts)
    assert len(cat.messages(chat.id)) == sum(counts) + ours
    assert len([j for j in cat.list_jobs(limit=10**6) if j.status == "running"]) == sum(counts)
    cat.close()
