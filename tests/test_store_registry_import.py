"""The store's consistency rules, the registry's schema, and importing files a user has."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest
import yaml

from internlocal.errors import ModelFileError, UserError
from internlocal.hub.library import import_model, remove_model
from internlocal.hub.registry import load_registry
from internlocal.hub.store import Manifest, ManifestFile, Store, check_model_name


def blob(store: Store, data: bytes, tmp: Path) -> ManifestFile:
    src = tmp / hashlib.sha1(data).hexdigest()
    src.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    store.add_blob(src, digest, move=True)
    return ManifestFile(path="f.bin", digest=f"sha256-{digest}", size=len(data))


def test_manifest_needs_its_blobs_and_removal_keeps_shared_ones(tmp_path):
    store = Store(tmp_path / "store")
    shared = blob(store, b"shared weights", tmp_path)
    own = blob(store, b"own weights", tmp_path)
    with pytest.raises(UserError, match="missing"):
        store.write_manifest(Manifest("ghost", "test", [ManifestFile("x.bin", "sha256-" + "0" * 64, 1)]))
    assert not store.manifest_path("ghost").exists()
    store.write_manifest(Manifest("a", "test", [ManifestFile("model.gguf", shared.digest, shared.size)]))
    store.write_manifest(
        Manifest(
            "b",
            "test",
            [ManifestFile("model.gguf", shared.digest, shared.size), ManifestFile("extra.bin", own.digest, own.size)],
        )
    )
    assert (store.model_dir("b") / "model.gguf").read_bytes() == b"shared weights"
    assert store.usage()["blobs_bytes"] == len(b"shared weights") + len(b"own weights")
    assert store.remove_manifest("b") == [own.digest]
    assert store.blob_path(shared.digest[7:]).exists() and not store.blob_path(own.digest[7:]).exists()
    # a crash between manifest removal and blob removal leaves only an orphan blob, which gc() takes
    orphan = blob(store, b"orphan", tmp_path)
    assert store.gc() == len(b"orphan") and not store.blob_path(orphan.digest[7:]).exists()
    assert store.blob_path(shared.digest[7:]).exists()


def test_model_names_are_checked():
    for bad in ("../x", "a/b", "", ".hidden", "x" * 200):
        with pytest.raises(UserError):
            check_model_name(bad)
    assert check_model_name("qwen2.5-7b-instruct:q4_k_m") == "qwen2.5-7b-instruct:q4_k_m"


def test_every_registry_file_validates_and_covers_the_families():
    registry = load_registry()
    names = set(registry.models)
    for required in (
        "internlm2_5-1_8b-chat",
        "internlm2_5-7b-chat",
        "internlm2_5-20b-chat",
        "internlm2_5-7b-chat-1m",
        "internlm3-8b-instruct",
        "qwen2.5-0.5b-instruct",
        "qwen2.5-7b-instruct",
        "llama-3.2-1b-instruct",
        "smollm2-135m-instruct",
        "smollm2-360m-instruct",
        "smollm2-1.7b-instruct",
    ):
        assert required in names
    for _, model in registry.models.values():
        assert model.default in model.tags
        assert model.memory_gb(model.default) is None or model.memory_gb(model.default) > 0
    internlm = registry.get("internlm2_5-7b-chat")
    assert (
        internlm.hf == "internlm/internlm2_5-7b-chat"
        and internlm.modelscope == "Shanghai_AI_Laboratory/internlm2_5-7b-chat"
    )
    assert [m.name for _, m in registry.search("internlm 1m")] == ["internlm2_5-7b-chat-1m"]


def test_the_registry_chooses_a_repository_and_files_without_fetching_anything():
    """A registry name is only turned into a choice (hub, repository, file pattern, metadata); the registry module
    imports no source module, so resolving and fetching stay in hub/sources.py."""
    import subprocess
    import sys

    registry = load_registry()
    gguf = registry.choose("internlm2_5-7b-chat:Q4_K_M", hub="modelscope")
    assert (gguf.hub, gguf.repo, gguf.pattern, gguf.default_name) == (
        "modelscope",
        "Shanghai_AI_Laboratory/internlm2_5-7b-chat-gguf",
        "internlm2_5-7b-chat-q4_k_m.gguf",
        "internlm2_5-7b-chat-q4_k_m",
    )
    assert gguf.metadata == {
        "registry": "internlm2_5-7b-chat",
        "tag": "q4_k_m",
        "license": registry.get("internlm2_5-7b-chat").license,
        "context_length": 32768,
        "sampling": {"temperature": 0.8, "top_p": 0.8, "source": registry.sampling("internlm2_5-7b-chat").source},
    }
    assert registry.choose("internlm2_5-7b-chat").pattern == gguf.pattern  # the default tag
    folder = registry.choose("internlm2_5-7b-chat:hf")
    assert (folder.hub, folder.repo, folder.pattern, folder.default_name) == (
        "hf",
        "internlm/internlm2_5-7b-chat",
        None,
        "internlm2_5-7b-chat",
    )
    with pytest.raises(UserError, match="has no tag 'q9'"):
        registry.choose("internlm2_5-7b-chat:q9")
    with pytest.raises(UserError, match="Unknown hub 'gitee'"):
        registry.choose("internlm2_5-7b-chat", hub="gitee")
    code = (
        "import sys, internlocal.hub.registry; print(sorted(m for m in sys.modules if m.startswith('internlocal.hub')))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "internlocal.hub.registry" in loaded and "internlocal.hub.sources" not in loaded


def test_invalid_registry_file_is_reported(tmp_path):
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump(
            {
                "family": "x",
                "description": "d",
                "models": [
                    {
                        "name": "Bad Name",
                        "description": "d",
                        "parameters_b": 1,
                        "context_length": 1,
                        "license": "l",
                        "hf": "a/b",
                    }
                ],
            }
        )
    )
    with pytest.raises(UserError, match=r"bad\.yaml is invalid"):
        load_registry(tmp_path)


def test_import_by_reference_and_by_copy(services, gguf_path, tmp_path):
    mine = tmp_path / "My-Model.Q4_1.gguf"
    shutil.copyfile(gguf_path, mine)
    store = Store(services.settings.store_dir)
    ref = import_model(services.catalog, store, mine)
    assert (ref.name, ref.storage, ref.path, ref.quantization) == ("my-model.q4_1", "reference", str(mine), "Q4_1")
    copied = import_model(services.catalog, store, mine, name="my-copy", copy=True)
    assert copied.storage == "store" and Path(copied.path).read_bytes() == mine.read_bytes()
    assert copied.sha256 == ref.sha256
    with pytest.raises(UserError, match="already in the catalog"):
        import_model(services.catalog, store, mine, name="my-copy")
    remove_model(services.catalog, store, ref.name)
    assert mine.exists()  # the user's own file is never deleted
    remove_model(services.catalog, store, "my-copy")
    assert list(store.blobs.iterdir()) == []


def test_import_refuses_what_is_not_a_model(services, tmp_path):
    store = Store(services.settings.store_dir)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    with pytest.raises(ModelFileError, match="neither a GGUF file nor"):
        import_model(services.catalog, store, notes)
    with pytest.raises(UserError, match="does not exist"):
        import_model(services.catalog, store, tmp_path / "missing.gguf")
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(ModelFileError, match=r"no config\.json"):
        import_model(services.catalog, store, folder)
    assert len(services.catalog.list_models()) == 2
