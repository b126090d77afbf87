"""The OpenAI-compatible server on 127.0.0.1, driven by the official `openai` client."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import openai
import pytest
import requests
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from internlocal.config import Settings
from tests.conftest import QUESTION

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Germany": "Berlin",
    "Spain": "Madrid",
    "England": "London",
    "Russia": "Moscow",
    "China": "Beijing",
}
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def wait_healthy(port: int, timeout: float = 60) -> None:
    """Until `internlocal serve` on ``port`` answers /health (a served model is loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            time.sleep(0.1)
    raise AssertionError(f"nothing healthy on port {port} after {timeout:.0f} s")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(app):
    """``app`` on a free loopback port for the block (its engines are the caller's to close)."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


class Running:
    def __init__(self, app, engine, base, port):
        import uvicorn

        self.engine, self.base, self.port, self.app = engine, base, port, app
        self.url = f"http://127.0.0.1:{port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def client(self, **kw) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=kw.pop("api_key", "unused"), max_retries=0, **kw)

    def stop(self) -> None:
        from internlocal.server.state import ServerState

        self.server.should_exit = True
        self.thread.join(10)
        ServerState.of(self.app).models.close()  # every model it loaded
        self.engine.close()
        self.base.close()


@contextmanager
def served(tmp_path_factory, template_home, **options):
    """The real server (``ServeOptions(**options)``) on a free loopback port over a copy of the prepared data
    directory; stopped and closed after the block."""
    import shutil

    from internlocal.bootstrap import bootstrap
    from internlocal.server.serve import ServeOptions, build

    home = tmp_path_factory.mktemp("serve-home")
    shutil.copytree(template_home, home, dirs_exist_ok=True)
    services = bootstrap(Settings(home=home, context_length=1024))
    engine, base, app = build(ServeOptions(**options), services)
    running = Running(app, engine, base, free_port())
    try:
        yield running
    finally:
        running.stop()
        services.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, template_home):
    with served(tmp_path_factory, template_home, slots=8, max_queue=4) as running:
        yield running


def test_sampling_settings_at_their_edges_are_served_and_the_server_keeps_serving(server):
    """Found by schemathesis: any repeat_penalty but 1.0 raised a TypeError in the batching thread (a changed
    binding signature), and a top_k or seed too big for C's int32/uint32 raised there too; the thread died and every
    later request waited forever. Each is served now, streamed or not, and the server answers afterwards."""
    url = f"{server.url}/v1/chat/completions"
    base = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 4}
    for extra in (
        {"repeat_penalty": 0.5},
        {"repeat_penalty": 1.3, "stream": True},
        {"temperature": 0.7, "top_k": 2**62},
        {"temperature": 0.7, "seed": -5},
        {"temperature": 0.7, "seed": 2**70, "stream": True},
    ):
        response = requests.post(url, json={**base, **extra}, timeout=60)
        assert response.status_code == 200, (extra, response.text)
        assert ("data: [DONE]" in response.text) if extra.get("stream") else response.json()["choices"], extra
    empty = requests.post(f"{server.url}/v1/completions", json={"prompt": "", "max_tokens": 4}, timeout=60)
    assert empty.status_code == 400 and "The prompt is empty" in empty.json()["error"]["message"]  # was a 500
    answer = requests.post(url, json={**base, "max_tokens": 8, "temperature": 0}, timeout=60).json()
    assert "Paris" in answer["choices"][0]["message"]["content"]


def test_models_health_and_chat(server):
    client = server.client()
    ids = [m.id for m in client.models.list().data]
    assert ids == ["smollm2-135m-instruct-q4_1", "all-minilm-l6-v2"]
    reply = client.chat.completions.create(
        model=ids[0], messages=[SYSTEM, {"role": "user", "content": QUESTION}], temperature=0
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.prompt_tokens > 10 and reply.usage.completion_tokens > 0
    assert requests.get(f"{server.url}/health").json()["status"] == "ok"


def test_single_slot_output_matches_the_engine(server):
    from internlocal.engines.base import GenerationParams

    messages = [SYSTEM, {"role": "user", "content": "Name three colours."}]
    direct = server.base.chat(messages, GenerationParams.greedy(max_tokens=40)).collect().text
    served = server.client().chat.completions.create(model="default", messages=messages, temperature=0, max_tokens=40)
    assert served.choices[0].message.content == direct


def test_streaming_with_usage(server):
    stream = server.client().chat.completions.create(
        model="smollm2-135m-instruct-q4_1",
        messages=[SYSTEM, {"role": "user", "content": QUESTION}],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 1
    assert chunks[-1].usage.completion_tokens > 0 and not chunks[-1].choices
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"


def test_stop_and_max_tokens(server):
    client = server.client()
    cut = client.chat.completions.create(
        model="default", messages=[SYSTEM, {"role": "user", "content": QUESTION}], temperature=0, stop=["Paris"]
    )
    assert "Paris" not in cut.choices[0].message.content
    short = client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": "Tell a story."}], max_tokens=3, seed=1
    )
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 3


def test_json_schema_output_parses(server):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
    }
    reply = server.client().chat.completions.create(
        model="default",
        messages=[SYSTEM, {"role": "user", "content": QUESTION}],
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
    )
    data = json.loads(reply.choices[0].message.content)
    assert set(data) == {"city", "country"}


def test_tool_call_round_trip(server):
    client = server.client()
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Current weather in a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
        }
    ]
    messages = [SYSTEM, {"role": "user", "content": "What is the weather in Paris?"}]
    first = client.chat.completions.create(
        model="default", messages=messages, tools=tools, tool_choice="required", temperature=0
    )
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert isinstance(arguments["city"], str)  # the grammar guarantees the schema
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 21 degrees."},
    ]
    second = client.chat.completions.create(model="default", messages=messages, tools=tools, temperature=0)
    final = second.choices[0]
    assert final.finish_reason in ("stop", "tool_calls")
    if final.finish_reason == "stop":
        assert final.message.content and not final.message.tool_calls


def test_completions_and_embeddings(server):
    client = server.client()
    done = client.completions.create(model="default", prompt="The capital of France is", max_tokens=4, temperature=0)
    assert "Paris" in done.choices[0].text
    vectors = client.embeddings.create(model="all-minilm-l6-v2", input=["Paris is in France.", "巴黎在法国。"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 384


def test_embeddings_usage_counts_the_models_tokens(server, minilm_path):
    """usage counts what the model reads: its own tokenizer's tokens, [CLS] and [SEP] included (OpenAI's usage
    counts the tokens fed to the model), never whitespace-separated words (the Chinese sentence is one "word")."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path))
    client = server.client()
    one = client.embeddings.create(model="all-minilm-l6-v2", input="巴黎在法国。")
    expected = len(tokenizer("巴黎在法国。", add_special_tokens=True)["input_ids"])
    assert one.usage.prompt_tokens == one.usage.total_tokens == expected > 1
    two = client.embeddings.create(model="all-minilm-l6-v2", input=["巴黎在法国。", "Paris is in France."])
    assert two.usage.prompt_tokens == expected + len(tokenizer("Paris is in France.")["input_ids"])

    from internlocal.engines.remote import RemoteEmbedder  # a remote embedder counts by the endpoint's usage

    remote = RemoteEmbedder(f"{server.url}/v1", "all-minilm-l6-v2")
    assert remote.count_tokens(["巴黎在法国。"]) == expected
    remote.embed(["巴黎在法国。", "Paris is in France."])
    assert remote.count_tokens(["巴黎在法国。", "Paris is in France."]) == two.usage.prompt_tokens


def test_eight_concurrent_clients_each_get_their_own_answer(server):
    client = server.client()

    def ask(country: str) -> tuple[str, str]:
        reply = client.chat.completions.create(
            model="default",
            temperature=0,
            messages=[SYSTEM, {"role": "user", "content": f"What is the capital of {country}? Answer in one word."}],
        )
        return country, reply.choices[0].message.content

    with ThreadPoolExecutor(8) as pool:
        answers = dict(pool.map(ask, CAPITALS))
    for country, capital in CAPITALS.items():
        assert capital in answers[country], (country, answers[country])
        others = [c for k, c in CAPITALS.items() if k != country]
        assert not any(o in answers[country] for o in others), (country, answers[country])


def test_bad_requests_get_openai_style_errors(server):
    client = server.client()
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="gpt-4", messages=[{"role": "user", "content": "hi"}])
    assert "does not exist here" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "word " * 2000}])
    assert "maximum context length is 1024" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}], temperature=7)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="default", messages=[{"role": "wizard", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}], max_tokens=100000)
    assert "limit" in e.value.body["message"]
    raw = requests.post(
        f"{server.url}/v1/chat/completions", data=b"{not json", headers={"content-type": "application/json"}
    )
    assert raw.status_code == 400 and raw.json()["error"]["message"] == "The request body is not valid JSON."
    raw = requests.post(f"{server.url}/v1/chat/completions", json={"messages": "hello"})
    assert raw.status_code == 400 and raw.json()["error"]["param"] == "messages"
    raw = requests.post(
        f"{server.url}/v1/chat/completions", data=b"x" * (33 << 20), headers={"content-type": "application/json"}
    )
    assert raw.status_code == 413


def test_client_disconnect_cancels_generation(server):
    before = server.engine.active
    with requests.post(
        f"{server.url}/v1/chat/completions",
        stream=True,
        timeout=30,
        json={
            "model": "default",
            "stream": True,
            "max_tokens": 800,
            "seed": 3,
            "messages": [{"role": "user", "content": "Write a very long story about a dragon."}],
        },
    ) as response:
        for line in response.iter_lines(decode_unicode=True):
            if line.startswith("data:") and '"content"' in line and '""' not in line:
                break  # one real token arrived; leave
    deadline = time.monotonic() + 10
    while server.engine.active > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.engine.active == before
    metrics = requests.get(f"{server.url}/metrics").text
    assert "internlocal_client_disconnects_total 1.0" in metrics


def test_full_queue_answers_503_with_retry_after(server):
    from internlocal.server.state import ServerState

    app = server.server.config.app
    gate = ServerState.of(app).admission
    saved = gate.in_flight
    gate.in_flight = gate.limit  # every slot and the queue taken
    try:
        raw = requests.post(f"{server.url}/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
    finally:
        gate.in_flight = saved
    assert raw.status_code == 503 and raw.headers["retry-after"] == "1"
    assert raw.json()["error"]["code"] == "queue_full"


def test_metrics_are_prometheus_text(server):
    server.client().completions.create(model="default", prompt="The capital of France is", max_tokens=4)
    text = requests.get(f"{server.url}/metrics").text
    for name in (
        "internlocal_requests_total",
        "internlocal_completion_tokens_total",
        "internlocal_queue_depth",
        "internlocal_time_to_first_token_seconds_count",
        "internlocal_decode_tokens_per_second",
    ):
        assert name in text
    # the scheduler's own profile: where each decode step's time went
    counters = dict(
        re.findall(r"^internlocal_scheduler_(\w+)_total ([0-9.e+-]+)$", text, flags=re.M),
    )
    assert set(counters) == {"steps", "batch_tokens", "step_seconds", "decode_seconds", "sample_seconds"}
    values = {k: float(v) for k, v in counters.items()}
    assert values["steps"] > 0 and values["batch_tokens"] >= values["steps"]
    assert 0 < values["decode_seconds"] < values["step_seconds"]


def test_network_bind_needs_an_api_key_and_port_in_use_is_clear(services, internlocal_bin, cli_env):
    from internlocal.errors import UserError
    from internlocal.server.serve import ServeOptions, build, check_port

    with pytest.raises(UserError, match="--api-key"):
        build(ServeOptions(host="0.0.0.0"), services)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserError, match="choose another port"):
            check_port("127.0.0.1", port)
        out = subprocess.run(
            [internlocal_bin, "serve", "--port", str(port)], env=cli_env, capture_output=True, text=True, timeout=60
        )
    assert out.returncode == 1 and "choose another port" in out.stderr and "Traceback" not in out.stderr


def test_api_key_is_enforced_and_ctrl_c_stops_cleanly(internlocal_bin, cli_env):
    import signal

    port = free_port()
    proc = subprocess.Popen(
        [
            internlocal_bin,
            "serve",
            "--port",
            str(port),
            "--api-key",
            "s3cret",
            "--slots",
            "2",
            "--prompt-cache-mb",
            "64",
        ],
        env=cli_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_healthy(port)
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="s3cret", max_retries=0)
        reply = client.chat.completions.create(
            model="default", temperature=0, messages=[SYSTEM, {"role": "user", "content": QUESTION}]
        )
        assert "Paris" in reply.choices[0].message.content
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(30)
    assert code in (0, 130)  # 130: uvicorn re-raises SIGINT after its graceful shutdown, the usual Ctrl-C status
    assert "Traceback" not in proc.stderr.read()
    with pytest.raises(requests.RequestException):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=1)


def test_a_remote_endpoint_chats_like_a_local_model(server, services):
    """The server registered as a remote model; the chat service streams from it (Chat screen path)."""
    from internlocal.engines.base import GenerationParams
    from internlocal.errors import UserError
    from internlocal.hub.library import add_remote

    model = add_remote(services.catalog, "remote-smol", server.url)
    assert (model.format, model.path, model.metadata_dict["remote_model"]) == (
        "remote",
        f"{server.url}/v1",
        "smollm2-135m-instruct-q4_1",
    )
    chat = services.chats.new_chat(model_name="remote-smol", params=GenerationParams.greedy(max_tokens=32))
    reply = services.chats.send(chat.id, QUESTION)
    pieces = list(reply)
    assert len(pieces) > 1 and "Paris" in "".join(pieces)
    assert reply.message.completion_tokens > 0 and reply.message.model_name == "remote-smol"
    with pytest.raises(UserError, match="does not serve"):
        add_remote(services.catalog, "wrong", server.url, model="gpt-4")
    with pytest.raises(UserError, match="Cannot reach"):
        add_remote(services.catalog, "down", f"http://127.0.0.1:{free_port()}")


def test_prompt_logprobs_let_a_remote_endpoint_score_like_the_local_engine(server):
    """echo + logprobs on /v1/completions; RemoteEngine turns them into the same log-likelihoods as in-process."""
    from internlocal.engines.remote import RemoteEngine

    pairs = [
        ("The capital of France is", " Paris"),
        ("The capital of France is", " Berlin"),
        ("Question: What is the capital of Japan?\nAnswer:", " Tokyo"),
    ]
    local = server.base.loglikelihood(pairs)
    remote = RemoteEngine(f"{server.url}/v1", "smollm2-135m-instruct-q4_1")
    try:
        got = remote.loglikelihood(pairs)
        assert [g.logprob for g in got] == pytest.approx([h.logprob for h in local], abs=1e-3)
        assert [(g.is_greedy, g.n_tokens) for g in got] == [(h.is_greedy, h.n_tokens) for h in local]
        assert got[0].logprob > got[1].logprob  # Paris over Berlin
        # this model adds no BOS, so the server scores every token after the first: a rolling score is
        # then log P(rest | first word), which the in-process engine computes by its own route
        rest = server.base.loglikelihood([("The", " quick brown fox jumps over the lazy dog.")])[0].logprob
        assert remote.loglikelihood_rolling(["The quick brown fox jumps over the lazy dog."])[0] == pytest.approx(
            rest, abs=1e-3
        )

        # a multiple-choice task through the endpoint scores as in-process, item by item
        from internlocal.evals.runner import RequestCache, evaluate
        from internlocal.evals.tasks import get_task

        task = get_task("capitals_en")
        there, here = (
            evaluate(e, task, RequestCache(None, name), limit=6) for e, name in ((remote, "r"), (server.base, "l"))
        )
        assert there.metrics == pytest.approx(here.metrics, abs=1e-9) and there.metrics["acc"] > 0.5
        # in-process, items reuse the KV cache of the prefix they share with the previous one, so tokens are
        # decoded in other batch shapes than the server's whole-prompt pass: llama.cpp's logits then differ
        # in the last digits (measured up to 0.034 nats on a 3-token option)
        for a, b in zip(there.items, here.items, strict=False):
            assert a["scores"]["loglikelihoods"] == pytest.approx(b["scores"]["loglikelihoods"], abs=0.05)

        # a generation task through the endpoint answers as in-process (greedy, through the chat template)
        qa = get_task("capitals_en_qa")
        there, here = (
            evaluate(e, qa, RequestCache(None, name), limit=4) for e, name in ((remote, "rq"), (server.base, "lq"))
        )
        assert [i["response"] for i in there.items] == [i["response"] for i in here.items]
        assert there.metrics == here.metrics and there.items[0]["scores"]["extracted"] == "Paris"
        # a question longer than the server's context is skipped with the server's reason; the rest is scored
        long = qa.model_copy(update={"doc_to_text": "{question} " + "word " * 1200})
        skipped = evaluate(remote, long, RequestCache(None, "rlong"), limit=1)
        assert skipped.skipped == 1 and "1024" in skipped.items[0]["scores"]["skipped"]
    finally:
        remote.close()

    raw = requests.post(
        f"{server.url}/v1/completions",
        json={"prompt": "Hello world", "echo": True, "logprobs": 2, "max_tokens": 1, "temperature": 0},
    ).json()
    lp = raw["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["text_offset"]) == raw["usage"]["total_tokens"]
    assert raw["choices"][0]["text"] == "Hello world" + lp["tokens"][-1]
    assert all(len(t) == 2 for t in lp["top_logprobs"] if t is not None)
    # without echo: the generated tokens' own; with echo and a longer answer: the prompt's, then the answer's
    generated = requests.post(
        f"{server.url}/v1/completions", json={"prompt": "Hi", "logprobs": 1, "max_tokens": 5, "temperature": 0}
    ).json()["choices"][0]
    assert "".join(generated["logprobs"]["tokens"]) == generated["text"]
    echoed = requests.post(
        f"{server.url}/v1/completions",
        json={"prompt": "Hello world", "echo": True, "logprobs": 1, "max_tokens": 5, "temperature": 0},
    ).json()["choices"][0]
    text, lp = echoed["text"], echoed["logprobs"]
    assert text.startswith("Hello world") and "".join(lp["tokens"]) == text
    assert all(text[offset:].startswith(token) for token, offset in zip(lp["tokens"], lp["text_offset"], strict=True))
    assert lp["token_logprobs"][0] is None and all(v is not None for v in lp["token_logprobs"][1:])
    assert requests.post(f"{server.url}/v1/completions", json={"prompt": "Hi", "max_tokens": 0}).status_code == 400


def test_an_endpoint_without_prompt_logprobs_is_reported_as_unsupported():
    """An OpenAI-compatible server that answers completions but not logprobs (e.g. Ollama): a clear Unsupported."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from internlocal.engines.remote import RemoteEngine
    from internlocal.errors import Unsupported

    class NoLogprobs(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            data = json.dumps(
                {"choices": [{"index": 0, "text": "x", "logprobs": None, "finish_reason": "length"}]}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), NoLogprobs)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    engine = RemoteEngine(f"http://127.0.0.1:{httpd.server_address[1]}/v1", "m")
    try:
        with pytest.raises(Unsupported, match="does not return prompt log-probabilities"):
            engine.loglikelihood([("The capital of France is", " Paris")])
    finally:
        engine.close()
        httpd.shutdown()


# -- one router on a bare app: each resource's handlers stand alone over a ServerState


def test_health_router_alone_reports_the_engines_queue(engine):
    from fastapi import FastAPI

    from internlocal.server.routes import health
    from internlocal.server.state import ServerConfig, ServerState

    app = FastAPI()
    ServerState.build(engine, ServerConfig(model_name="smol", slots=2)).attach(app)
    app.include_router(health.router)
    with serving(app) as url:
        assert requests.get(f"{url}/health").json() == {
            "status": "ok",
            "model": "smol",
            "slots": 2,
            "in_flight": 0,
            "queue_depth": 0,  # a plain llama.cpp engine queues nothing (EngineBase's declared default)
        }
        log = requests.get(f"{url}/internlocal/log").json()
        assert (log["model"], log["queue_depth"], log["recent"]) == ("smol", 0, [])
        assert "internlocal_queue_depth 0.0" in requests.get(f"{url}/metrics").text
        assert requests.get(f"{url}/v1/models").status_code == 404  # only the health router is mounted


def test_models_router_alone_behind_the_api_key(engine):
    from fastapi import FastAPI

    from internlocal.server import middleware
    from internlocal.server.routes import models
    from internlocal.server.state import ServerConfig, ServerState

    app = FastAPI()
    config = ServerConfig(model_name="smol", api_key="s3cret", embedding_model="minilm")
    ServerState.build(engine, config).attach(app)
    middleware.install(app)
    app.include_router(models.router)
    with serving(app) as url:
        listed = requests.get(f"{url}/v1/models", headers={"Authorization": "Bearer s3cret"}).json()
        assert [m["id"] for m in listed["data"]] == ["smol", "minilm"]
        for headers in ({}, {"Authorization": "Bearer s3cre"}, {"Authorization": "Bearer s3cret\xe9"}):
            refused = requests.get(f"{url}/v1/models", headers=headers)
            assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_completions_router_alone_refuses_scoring_an_engine_does_not_declare(server):
    """A remote engine (this module's server, as any OpenAI endpoint) completes but declares no prompt_logprobs."""
    from fastapi import FastAPI

    from internlocal.engines.base import Capability
    from internlocal.engines.remote import RemoteEngine
    from internlocal.server import middleware
    from internlocal.server.routes import completions
    from internlocal.server.state import ServerConfig, ServerState

    remote = RemoteEngine(f"{server.url}/v1", "smollm2-135m-instruct-q4_1")
    assert Capability.PROMPT_LOGPROBS not in remote.capabilities
    assert Capability.PROMPT_LOGPROBS in server.engine.capabilities
    app = FastAPI()
    ServerState.build(remote, ServerConfig(model_name="proxy")).attach(app)
    middleware.install(app)
    app.include_router(completions.router)
    try:
        with serving(app) as url:
            scored = requests.post(
                f"{url}/v1/completions", json={"prompt": "Hi", "echo": True, "logprobs": 1, "max_tokens": 1}
            )
            assert scored.status_code == 400
            assert scored.json()["error"]["message"] == "The remote OpenAI endpoint engine cannot score prompts."
            done = requests.post(
                f"{url}/v1/completions", json={"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}
            ).json()
            assert "Paris" in done["choices"][0]["text"] and done["model"] == "proxy"
    finally:
        remote.close()


FUZZ_KEYS = [
    "model", "messages", "prompt", "input", "max_tokens", "temperature", "top_p", "stop", "stream", "n", "seed",
    "logprobs", "tools", "tool_choice", "response_format", "stream_options", "role", "content", "encoding_format",
]  # fmt: skip
FUZZ_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False, width=32) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(FUZZ_KEYS), inner, max_size=4),
    max_leaves=10,
)


@pytest.mark.fuzz
@hsettings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]),
    body=st.dictionaries(st.sampled_from(FUZZ_KEYS), FUZZ_JSON, max_size=6) | FUZZ_JSON,
    raw=st.none() | st.binary(max_size=40),
)
def test_no_request_body_makes_the_server_answer_500(server, path, body, raw):
    """A client's mistake is a 4xx with an OpenAI-style error; a well-formed request is answered."""
    if isinstance(body, dict) and path != "/v1/embeddings":
        body["max_tokens"] = min(abs(body["max_tokens"]), 4) if isinstance(body.get("max_tokens"), int) else 2
    data = raw if raw is not None else json.dumps(body).encode()
    response = requests.post(
        f"{server.url}{path}", data=data, headers={"content-type": "application/json"}, timeout=120
    )
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert response.json()["error"]["message"].strip()
