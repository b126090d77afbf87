"""Many models, one server: any catalog model a request names is loaded, kept within a memory budget, and
unloaded least-recently-used first or when its keep_alive has passed (Ollama's semantics)."""

from __future__ import annotations

import shutil
import time

import ollama
import pytest

from internlocal.config import Settings
from internlocal.engines.base import GenerationParams
from internlocal.hub.embedded import CHAT_MODEL
from tests.conftest import QUESTION
from tests.test_server import Running, free_port

ASK = [{"role": "user", "content": QUESTION}]


def quantized(services, qtype: str):
    from internlocal.hub.convert import quantize_gguf

    job = services.jobs.submit(quantize_gguf, {"model": CHAT_MODEL.name, "qtype": qtype}, kind="models.convert",
                               title="quantize")  # fmt: skip
    job = services.jobs.wait(job.id, timeout=600)
    assert job.status == "succeeded", job.error
    return services.catalog.get_model(job.result["model"])


@pytest.fixture(scope="module")
def pool(tmp_path_factory, template_home):
    """A server over a catalog with three chat models (the embedded Q4_1 and two requantizations of it, so each
    answers a little differently) and a memory budget that holds two of them."""
    from internlocal.bootstrap import bootstrap
    from internlocal.engines.llamacpp import memory_estimate
    from internlocal.hub.inspect import read_gguf
    from internlocal.server.serve import ServeOptions, build

    home = tmp_path_factory.mktemp("pool-home")
    shutil.copytree(template_home, home, dirs_exist_ok=True)
    services = bootstrap(Settings(home=home, context_length=1024))
    rows = [services.catalog.get_model(CHAT_MODEL.name), quantized(services, "Q8_0"), quantized(services, "Q4_0")]
    sizes = [memory_estimate(read_gguf(row.path), 1024 * 2) for row in rows]
    budget_mb = (sizes[0] + sizes[1]) // 2**20 + 8  # the first two fit together; any third needs one out
    assert sizes[2] + sizes[1] <= budget_mb * 2**20 and sum(sizes) > budget_mb * 2**20
    engine, base, app = build(ServeOptions(slots=2, models_memory_mb=budget_mb, keep_alive="5m"), services)
    running = Running(app, engine, base, free_port())
    try:
        yield running, [row.name for row in rows], rows
    finally:
        running.stop()
        services.close()


def alone(row) -> str:
    """What a model answers on its own, in-process."""
    from internlocal.engines.llamacpp import LlamaCppEngine

    # as the server loads it: flash attention on, so scores do not depend on how tokens are batched
    with LlamaCppEngine(row.path, n_ctx=1024, chat_template=row.chat_template, flash_attention=True) as engine:
        return engine.chat(ASK, GenerationParams.greedy(max_tokens=12)).collect().text


def loaded(server) -> list[str]:
    return [m.model for m in ollama.Client(host=server.url).ps().models]


def test_models_asked_alternately_answer_as_alone_and_the_budget_unloads_the_least_recent(pool):
    server, (first, q8, q4), rows = pool
    client = server.client()
    listed = [m.id for m in client.models.list().data]
    assert listed[0] == first and {q8, q4} <= set(listed)  # every catalog model can be asked for
    assert loaded(server) == [first]
    expected = {row.name: alone(row) for row in rows}
    assert len(set(expected.values())) >= 2  # the quantizations do differ
    for name in (first, q8, first, q8):
        reply = client.chat.completions.create(model=name, messages=ASK, max_tokens=12, temperature=0)
        assert reply.model == name and reply.choices[0].message.content == expected[name], name
    assert loaded(server) == [q8, first]  # most recently used first

    from internlocal.server.state import ServerState

    models = ServerState.of(server.app).models
    first_engine = models.engine
    third = client.chat.completions.create(model=q4, messages=ASK, max_tokens=12, temperature=0)
    assert third.choices[0].message.content == expected[q4]
    assert loaded(server) == [q4, q8]  # the budget holds two: the least recently used went
    assert first_engine._closing  # and its memory is freed (the engine closed once idle)
    again = client.chat.completions.create(model=first, messages=ASK, max_tokens=12, temperature=0)
    assert again.choices[0].message.content == expected[first]  # loaded again on demand
    assert loaded(server) == [first, q4]


def test_keep_alive_zero_unloads_after_the_request_and_a_duration_is_shown(pool):
    server, (_first, q8, _q4), _rows = pool
    client = ollama.Client(host=server.url)
    client.chat(model=q8, messages=ASK, options={"temperature": 0, "num_predict": 4}, keep_alive="10m")
    entry = next(m for m in client.ps().models if m.model == q8)
    assert 9 * 60 < entry.expires_at.timestamp() - time.time() <= 10 * 60
    client.chat(model=q8, messages=ASK, options={"temperature": 0, "num_predict": 4}, keep_alive=0)
    deadline = time.monotonic() + 10
    while q8 in loaded(server) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert q8 not in loaded(server)
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model=q8, messages=ASK, keep_alive="soon")
    assert e.value.status_code == 400 and "keep_alive" in e.value.error
    with pytest.raises(ollama.ResponseError) as e:
        client.chat(model="all-minilm-l6-v2", messages=ASK)
    assert e.value.status_code == 400 and "embedding model" in e.value.error
