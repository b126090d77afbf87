"""Ollama's API on the same port, driven by Ollama's own Python client (``ollama`` from PyPI)."""

from __future__ import annotations

import ollama
import pytest
import requests

from tests.conftest import QUESTION
from tests.test_server import served

GREEDY = {"temperature": 0, "num_predict": 8}


@pytest.fixture(scope="module")
def server(tmp_path_factory, template_home):
    with served(tmp_path_factory, template_home, slots=2, max_queue=4, api_key="s3cret") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return ollama.Client(host=server.url, headers={"Authorization": "Bearer s3cret"})


def test_lists_shows_and_reports_what_is_loaded(server, client):
    listed = client.list()
    names = [m.model for m in listed.models]
    chat_name = server.engine.model_name
    assert chat_name in names and "all-minilm-l6-v2" in names
    mine = next(m for m in listed.models if m.model == chat_name)
    assert mine.details.format == "gguf" and mine.details.parameter_size == "135M" and mine.size > 50_000_000
    assert mine.details.quantization_level == "Q4_1"
    shown = client.show(chat_name)
    assert "tools" in shown.capabilities and "completion" in shown.capabilities
    assert "im_start" in shown.template and shown.modelinfo["general.architecture"] == "llama"
    assert shown.parameters.splitlines() == ["temperature 0.2", "top_p 0.9"]  # its recommended sampling
    running = client.ps()
    assert [m.model for m in running.models][:1] == [chat_name] and running.models[0].context_length == 1024
    assert requests.get(f"{server.url}/api/version", headers={"Authorization": "Bearer s3cret"}).json()["version"]


def test_chat_streamed_and_whole_answers_as_the_openai_route(server, client):
    ask = [{"role": "user", "content": QUESTION}]
    whole = client.chat(model=server.engine.model_name, messages=ask, options=GREEDY)
    assert "Paris" in whole.message.content and whole.done and whole.done_reason in ("stop", "length")
    assert whole.prompt_eval_count > 10 and whole.eval_count >= 1 and whole.total_duration > 0
    pieces = list(client.chat(model=server.engine.model_name, messages=ask, options=GREEDY, stream=True))
    assert len(pieces) > 2 and pieces[-1].done and not any(p.done for p in pieces[:-1])
    assert "".join(p.message.content for p in pieces) == whole.message.content
    same = server.client(api_key="s3cret").chat.completions.create(
        model="default", messages=ask, max_tokens=8, temperature=0
    )
    assert same.choices[0].message.content == whole.message.content


def test_generate_raw_and_templated(server, client):
    raw = client.generate(model=server.engine.model_name, prompt="The capital of France is", raw=True, options=GREEDY)
    assert "Paris" in raw.response and raw.done
    streamed = list(
        client.generate(
            model=server.engine.model_name, prompt="The capital of France is", raw=True, options=GREEDY, stream=True
        )
    )
    assert "".join(p.response for p in streamed) == raw.response
    templated = client.generate(model=server.engine.model_name, prompt=QUESTION, options=GREEDY)
    assert "Paris" in templated.response
    loaded = client.generate(model=server.engine.model_name, prompt="")
    assert loaded.done and loaded.done_reason == "load"
    capped = client.generate(model=server.engine.model_name, prompt="Tell me a story.", options={"num_predict": 3})
    assert capped.eval_count == 3 and capped.done_reason == "length"


def test_embed_matches_the_openai_route(server, client):
    got = client.embed(model="all-minilm-l6-v2", input=["a cat sat on the mat", "stock markets fell"])
    assert len(got.embeddings) == 2 and len(got.embeddings[0]) == 384 and got.prompt_eval_count > 4
    openai_side = server.client(api_key="s3cret").embeddings.create(
        model="all-minilm-l6-v2", input=["a cat sat on the mat"]
    )
    assert got.embeddings[0] == pytest.approx(openai_side.data[0].embedding, abs=1e-6)


def test_structured_output_and_options_refused_by_name(server, client):
    shaped = client.chat(
        model=server.engine.model_name,
        messages=[{"role": "user", "content": "Give the capital of France as JSON with a key city."}],
        format={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        options={"temperature": 0, "num_predict": 40},
    )
    import json

    assert isinstance(json.loads(shaped.message.content)["city"], str)
    for options, name in (({"mirostat": 2}, "mirostat"), ({"num_ctx": 100000}, "num_ctx")):
        with pytest.raises(ollama.ResponseError) as e:
            client.chat(model=server.engine.model_name, messages=[{"role": "user", "content": "hi"}], options=options)
        assert e.value.status_code == 400 and name in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 404 and "does not exist" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        ollama.Client(host=server.url).list()  # no key: Ollama's error shape, the same rule as /v1
    assert e.value.status_code == 401 and "API key" in e.value.error


def test_tool_calls_come_back_as_ollama_objects(server, client):
    def add(a: int, b: int) -> int:
        """Add two whole numbers.

        Args:
          a: the first number
          b: the second number
        """
        return a + b

    reply = client.chat(
        model=server.engine.model_name,
        messages=[{"role": "user", "content": "What is 2 + 3? Use the add tool."}],
        tools=[add],
        options={"temperature": 0, "num_predict": 64},
    )
    calls = reply.message.tool_calls or []
    assert calls, reply.message
    assert calls[0].function.name == "add" and isinstance(calls[0].function.arguments, dict)
