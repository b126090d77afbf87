"""Recommended sampling per model: from the registry, an HF folder's generation_config.json or a GGUF's keys;
recorded in the catalog and used wherever the user sets none (chat, CLI, server), never over what they set."""

from __future__ import annotations

import json

import pytest

from internlocal.engines.base import GenerationParams
from internlocal.hub.embedded import CHAT_MODEL


def test_every_registry_family_says_what_it_recommends_and_where_that_comes_from():
    from internlocal.hub.registry import load_registry

    registry = load_registry()
    for family in registry.families:
        assert family.sampling is not None and family.sampling.source, family.family
    assert registry.sampling("smollm2-135m-instruct").values() == {"temperature": 0.2, "top_p": 0.9}
    assert registry.sampling("qwen2.5-7b-instruct").values() == {
        "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repeat_penalty": 1.05
    }  # fmt: skip
    pulled = registry.choose("qwen2.5-0.5b-instruct").metadata["sampling"]  # a pull records it in the catalog
    assert pulled["temperature"] == 0.7 and "generation_config.json" in pulled["source"]


def test_the_embedded_model_is_catalogued_with_its_cards_sampling(services):
    model = services.catalog.get_model(CHAT_MODEL.name)
    assert model.sampling == {"temperature": 0.2, "top_p": 0.9}
    assert "model card" in model.metadata_dict["sampling"]["source"]


def test_hf_folders_and_gguf_keys_bring_their_own(tmp_path):
    from internlocal.hub.inspect import gguf_sampling, read_hf_dir
    from internlocal.hub.library import model_fields

    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    (folder / "generation_config.json").write_text(
        json.dumps({"do_sample": True, "temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.1, "eos_token_id": 2})
    )
    fields = model_fields(read_hf_dir(folder), path=folder, storage="reference", source="test", sha256=None)
    sampling = json.loads(fields["metadata_json"])["sampling"]
    assert sampling == {"temperature": 0.6, "top_p": 0.9, "repeat_penalty": 1.1, "source": "generation_config.json"}
    (folder / "generation_config.json").write_text(json.dumps({"do_sample": False, "temperature": 0.6}))
    assert "sampling" not in read_hf_dir(folder).metadata  # greedy by default: nothing to recommend
    assert gguf_sampling({"general.sampling.temp": 0.7, "general.sampling.top_k": 40}) == {
        "temperature": 0.7, "top_k": 40, "source": "GGUF general.sampling keys"
    }  # fmt: skip


def test_chats_use_it_for_what_they_do_not_set_and_keep_what_they_set(services):
    from internlocal.chat.service import chat_params

    model = services.catalog.get_model(CHAT_MODEL.name)
    chat = services.chats.new_chat()
    assert chat_params(chat, model).temperature == 0.2 and chat_params(chat, model).top_p == 0.9
    # a value equal to our own default is still the user's choice, not replaced by the recommendation
    services.chats.set_params(chat.id, GenerationParams.from_user(temperature=0.7))
    chat = services.catalog.get_chat(chat.id)
    assert chat_params(chat, model).temperature == 0.7 and chat_params(chat, model).top_p == 0.9
    # tests and evaluation that need determinism pass greedy settings explicitly, and get them
    services.chats.set_params(chat.id, GenerationParams.greedy(max_tokens=8))
    assert chat_params(services.catalog.get_chat(chat.id), model).temperature == 0.0


def test_the_server_uses_it_where_a_request_sets_nothing():
    from internlocal.server.generation import sampling
    from internlocal.server.openai_schema import ChatCompletionRequest
    from internlocal.server.state import ServerConfig

    config = ServerConfig(model_name="m")
    recommended = {"temperature": 0.2, "top_p": 0.9, "repeat_penalty": 1.05}
    ask = {"messages": [{"role": "user", "content": "hi"}]}
    unset = sampling(ChatCompletionRequest(**ask), config, recommended=recommended)
    assert (unset.temperature, unset.top_p, unset.repeat_penalty) == (0.2, 0.9, 1.05)
    mine = sampling(ChatCompletionRequest(**ask, temperature=1.0, repeat_penalty=1.0), config, recommended=recommended)
    assert (mine.temperature, mine.top_p, mine.repeat_penalty) == (1.0, 0.9, 1.0)
    plain = sampling(ChatCompletionRequest(**ask), config)
    assert (plain.temperature, plain.repeat_penalty) == (GenerationParams().temperature, 1.0)


@pytest.mark.parametrize("spec", ["smollm2-135m-instruct", "qwen2.5-0.5b-instruct:hf"])
def test_registry_choices_carry_it(spec):
    from internlocal.hub.registry import load_registry

    assert "sampling" in load_registry().choose(spec).metadata
