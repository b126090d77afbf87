"""Every OpenAI field the server accepts is honoured (a measurable effect) or refused by name; one auth rule.

Driven by the official ``openai`` client against the real server (batched llama.cpp on the embedded model).
"""

from __future__ import annotations

import math

import openai
import pytest
import requests

from tests.conftest import QUESTION
from tests.test_server import served, serving

ASK = [{"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def server(tmp_path_factory, template_home):
    with served(tmp_path_factory, template_home, slots=4, max_queue=4) as running:
        yield running


def greedy(client, **extra):
    return client.chat.completions.create(model="default", messages=ASK, max_tokens=8, temperature=0, **extra)


def test_logit_bias_of_minus_100_on_the_greedy_token_changes_the_answer(server):
    client = server.client()
    plain = greedy(client, logprobs=True)
    assert "Paris" in plain.choices[0].message.content
    first = plain.choices[0].logprobs.content[0].token
    banned = requests.post(f"{server.url}/tokenize", json={"content": first}).json()["tokens"]
    assert len(banned) == 1
    biased = greedy(client, logit_bias={str(banned[0]): -100})
    assert not biased.choices[0].message.content.startswith(first)
    lyon = requests.post(f"{server.url}/tokenize", json={"content": "Lyon"}).json()["tokens"][0]
    piece = requests.post(f"{server.url}/detokenize", json={"tokens": [lyon]}).json()["content"]
    forced = greedy(client, logit_bias={str(lyon): 100})  # +100 forces the token at every step
    assert forced.choices[0].message.content == piece * 8


def test_logprobs_are_the_models_own_log_likelihood_of_the_tokens(server):
    """Completions: the generated tokens' log-probabilities sum to what the engine's log-likelihood gives the
    same text after the same prompt (within 1e-3); chat: each token's top alternative ranks first greedily."""
    client = server.client()
    prompt = "The capital of France is"
    done = client.completions.create(model="default", prompt=prompt, max_tokens=6, temperature=0, logprobs=3)
    choice = done.choices[0]
    lp = choice.logprobs
    assert "".join(lp.tokens) == choice.text and len(lp.tokens) == done.usage.completion_tokens
    assert lp.text_offset[0] == 0 and all(len(top) == 3 for top in lp.top_logprobs)
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert max(top.values()) == pytest.approx(logprob, abs=1e-6) and top[token] == pytest.approx(logprob)
    [own] = server.base.loglikelihood([(prompt, choice.text)])
    assert own.n_tokens == len(lp.tokens) and own.is_greedy
    assert sum(lp.token_logprobs) == pytest.approx(own.logprob, abs=1e-3)

    chat = greedy(client, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert "".join(e.token for e in content) == chat.choices[0].message.content
    assert all(e.top_logprobs[0].token == e.token and len(e.top_logprobs) == 2 for e in content)
    assert all(bytes(e.bytes).decode() == e.token and e.logprob <= 0 for e in content)
    streamed = client.chat.completions.create(
        model="default", messages=ASK, max_tokens=8, temperature=0, logprobs=True, stream=True
    )
    entries = [
        e
        for chunk in streamed
        if chunk.choices and chunk.choices[0].logprobs
        for e in chunk.choices[0].logprobs.content
    ]
    assert [e.token for e in entries] == [e.token for e in content]
    assert [e.logprob for e in entries] == pytest.approx([e.logprob for e in content], abs=1e-4)


def test_penalties_change_a_repetitive_answer(server):
    client = server.client()
    ask = [{"role": "user", "content": "Write the word cat five times."}]

    def answer(**extra):
        reply = client.chat.completions.create(
            model="default",
            messages=ask,
            max_tokens=24,
            temperature=0,
            extra_body={"stop_on_repetition": False},
            **extra,
        )
        return reply.choices[0].message.content

    plain = answer()
    assert answer(frequency_penalty=2.0) != plain
    assert answer(presence_penalty=2.0) != plain
    assert answer(frequency_penalty=0.0, presence_penalty=0.0) == plain  # zero is no penalty


def test_min_p_of_one_keeps_only_the_likeliest_token(server):
    """At min_p 1 only tokens as likely as the best survive: sampling at temperature 1.5 gives the greedy answer."""
    client = server.client()
    plain = greedy(client).choices[0].message.content
    for seed in (1, 2, 3):
        hot = client.chat.completions.create(
            model="default", messages=ASK, max_tokens=8, temperature=1.5, seed=seed, extra_body={"min_p": 1.0}
        )
        assert hot.choices[0].message.content == plain


def test_n_choices_decode_in_parallel_slots(server):
    client = server.client()
    reply = client.chat.completions.create(model="default", messages=ASK, max_tokens=8, temperature=1.2, seed=7, n=3)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    texts = [c.message.content for c in reply.choices]
    assert len(set(texts)) >= 2  # each choice has its own seed
    assert reply.usage.completion_tokens > 8  # summed over the choices; the prompt counted once
    again = client.chat.completions.create(model="default", messages=ASK, max_tokens=8, temperature=1.2, seed=7, n=3)
    assert [c.message.content for c in again.choices] == texts  # the same request, the same choices
    stream = client.chat.completions.create(
        model="default", messages=ASK, max_tokens=8, temperature=1.2, seed=7, n=3, stream=True
    )
    pieces: dict[int, str] = {0: "", 1: "", 2: ""}
    finished = set()
    for chunk in stream:
        for c in chunk.choices:
            pieces[c.index] += c.delta.content or ""
            if c.finish_reason:
                finished.add(c.index)
    assert [pieces[i] for i in range(3)] == texts and finished == {0, 1, 2}
    done = client.completions.create(
        model="default", prompt="The capital of France is", max_tokens=4, n=2, temperature=0
    )
    assert [c.index for c in done.choices] == [0, 1] and done.choices[0].text == done.choices[1].text


def test_fields_that_cannot_be_honoured_are_refused_by_name(server):
    client = server.client()
    cases = [
        (dict(modalities=["text", "audio"]), "modalities"),
        (dict(prediction={"type": "content", "content": "Paris"}), "prediction"),
        (dict(top_logprobs=2), "top_logprobs"),  # needs logprobs=true
        (dict(logit_bias={"999999": 5}), "logit_bias"),  # not in the vocabulary
        (dict(logit_bias={"cat": 5}), "logit_bias"),
        (dict(n=64), "n"),
        (dict(service_tier="flex"), "service_tier"),
    ]
    for extra, field in cases:
        with pytest.raises(openai.BadRequestError) as e:
            greedy(client, **extra)
        assert e.value.body["param"] == field, (extra, e.value.body)
        assert field in e.value.body["message"] or e.value.body["param"] == field
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="default", prompt="Hi", max_tokens=2, suffix=" there")
    assert e.value.body["param"] == "suffix" and "'suffix' is not supported" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="default", prompt="Hi", max_tokens=2, best_of=3)
    assert e.value.body["param"] == "best_of"
    ok = greedy(client, user="someone", metadata={"k": "v"}, store=False)  # bookkeeping fields change nothing
    assert "Paris" in ok.choices[0].message.content


def test_models_by_id_and_tokenize_round_trip(server):
    client = server.client()
    name = client.models.list().data[0].id
    assert client.models.retrieve(name).id == name
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
    tokens = requests.post(f"{server.url}/tokenize", json={"content": "Hello, world"}).json()["tokens"]
    assert tokens == server.base.tokenize("Hello, world")
    with_bos = requests.post(f"{server.url}/tokenize", json={"content": "Hi", "add_special": True}).json()["tokens"]
    assert with_bos == server.base.tokenize("Hi", add_special=True)
    pieces = requests.post(f"{server.url}/tokenize", json={"content": "Hello", "with_pieces": True}).json()["tokens"]
    assert "".join(p["piece"] for p in pieces) == "Hello"
    back = requests.post(f"{server.url}/detokenize", json={"tokens": tokens}).json()
    assert back == {"content": "Hello, world"}
    bad = requests.post(f"{server.url}/detokenize", json={"tokens": [10**9]})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


def test_a_looping_answer_ends_with_the_reason_and_evaluation_can_turn_it_off(server):
    client = server.client()
    ask = [{"role": "user", "content": "Write the word cat five times."}]
    stopped = client.chat.completions.create(model="default", messages=ask, max_tokens=300, temperature=0)
    choice = stopped.choices[0]
    assert choice.finish_reason == "stop" and choice.model_extra["stop_reason"] == "repetition"
    assert stopped.usage.completion_tokens < 150
    full = client.chat.completions.create(
        model="default", messages=ask, max_tokens=300, temperature=0, extra_body={"stop_on_repetition": False}
    )
    assert full.choices[0].finish_reason == "length" and full.choices[0].message.content.startswith(
        choice.message.content
    )
    streamed = client.chat.completions.create(model="default", messages=ask, max_tokens=300, temperature=0, stream=True)
    chunks = list(streamed)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == choice.message.content
    assert (
        chunks[-1].choices[0].finish_reason == "stop"
        and chunks[-1].choices[0].model_extra["stop_reason"] == "repetition"
    )


def test_one_key_guards_every_route_but_health(engine):
    """With a key: OpenAI's routes, /metrics, the TUI's log and /tokenize all need it, compared in constant time;
    /health answers load balancers without it. Every answer carries a request id (the client's, when sane). CORS
    is off unless origins are configured."""
    from fastapi import FastAPI

    from internlocal.server import middleware
    from internlocal.server.routes import health, models, tokens
    from internlocal.server.state import ServerConfig, ServerState

    def app_with(**config):
        app = FastAPI()
        ServerState.build(engine, ServerConfig(model_name="smol", **config)).attach(app)
        middleware.install(app)
        for router in (health.router, models.router, tokens.router):
            app.include_router(router)
        return app

    key = {"Authorization": "Bearer s3cret"}
    with serving(app_with(api_key="s3cret")) as url:
        assert requests.get(f"{url}/health").status_code == 200
        for method, path, body in (
            ("get", "/v1/models", None),
            ("get", "/v1/models/smol", None),
            ("get", "/metrics", None),
            ("get", "/internlocal/log", None),
            ("post", "/tokenize", {"content": "hi"}),
            ("post", "/detokenize", {"tokens": [1]}),
            ("get", "/no/such/route", None),
        ):
            refused = requests.request(method, f"{url}{path}", json=body)
            assert refused.status_code == 401, path
            assert refused.json()["error"]["code"] == "invalid_api_key"
            allowed = requests.request(method, f"{url}{path}", json=body, headers=key)
            assert allowed.status_code == (404 if path == "/no/such/route" else 200), path
        mine = requests.get(f"{url}/v1/models", headers={**key, "X-Request-ID": "trace-42"})
        assert mine.headers["x-request-id"] == "trace-42"
        made = requests.get(f"{url}/v1/models", headers={**key, "X-Request-ID": "bad id\twith spaces"})
        assert made.headers["x-request-id"].startswith("req-")
        log = requests.get(f"{url}/internlocal/log", headers=key).json()
        assert {"trace-42", made.headers["x-request-id"]} <= {r["id"] for r in log["recent"]}
        preflight = requests.options(
            f"{url}/v1/models",
            headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert "access-control-allow-origin" not in preflight.headers  # CORS off: the page cannot read answers
    with serving(app_with(cors_origins=["http://localhost:3000"])) as url:
        preflight = requests.options(
            f"{url}/v1/models",
            headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = requests.get(f"{url}/v1/models", headers={"Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_the_logprob_of_a_greedy_token_is_a_probability(server):
    """Sanity on the numbers: exp(logprob) of the chosen tokens are probabilities and the top ones sum to <= 1."""
    client = server.client()
    reply = greedy(client, logprobs=True, top_logprobs=5)
    for entry in reply.choices[0].logprobs.content:
        total = sum(math.exp(t.logprob) for t in entry.top_logprobs)
        assert 0 < math.exp(entry.logprob) <= 1 and total <= 1 + 1e-6
