"""The agent: tools from hints and docstrings, the built-in tools, the sandbox, and the loop on the embedded model."""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest

from internlocal.agent import Agent, AgentStep, ToolError, tool
from internlocal.agent.builtin import (
    calculator,
    current_datetime,
    default_tools,
    evaluate,
    kb_search_tool,
    python_tool,
    read_file_tool,
)
from internlocal.agent.sandbox import run_python
from internlocal.engines.base import Generation, GenerationParams, GenerationResult

# -- @tool -----------------------------------------------------------------------------------------


@tool
def book_table(
    city: str,
    people: int,
    day: Literal["fri", "sat"] = "fri",
    price_cap: float | None = None,
    tags: list[str] | None = None,
    quiet: bool = False,
) -> dict:
    """Book a restaurant table.

    Finds a free table and books it.

    Args:
        city: The city to book in.
        people: How many people, counting
            the person booking.
        day: Which evening.
        price_cap: Most to pay per person.
        tags: Wishes such as "vegan".
        quiet: A quiet corner.

    Returns:
        The booking.
    """
    if people > 12:
        raise ToolError("tables hold at most 12 people")
    if city == "crash":
        raise RuntimeError("the booking service broke")
    return {"city": city, "people": people, "day": day}


def test_schema_from_hints_and_docstring():
    assert book_table.name == "book_table"
    assert book_table.description == "Book a restaurant table. Finds a free table and books it."
    params = book_table.parameters
    assert params["required"] == ["city", "people"]
    props = params["properties"]
    assert props["city"] == {"type": "string", "description": "The city to book in."}
    assert props["people"] == {"type": "integer", "description": "How many people, counting the person booking."}
    assert props["day"] == {"type": "string", "enum": ["fri", "sat"], "description": "Which evening.", "default": "fri"}
    assert props["price_cap"] == {"type": "number", "description": "Most to pay per person."}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "description": 'Wishes such as "vegan".'}
    assert props["quiet"] == {"type": "boolean", "description": "A quiet corner.", "default": False}
    spec = book_table.openai()
    assert spec == {
        "type": "function",
        "function": {"name": "book_table", "description": book_table.description, "parameters": params},
    }
    json.dumps(spec)  # what an engine or the server sends on must be plain JSON


def test_call_validates_and_never_raises():
    assert json.loads(book_table.call({"city": "Lyon", "people": "4"})) == {"city": "Lyon", "people": 4, "day": "fri"}
    assert json.loads(book_table.call('{"city": "Lyon", "people": 2, "day": "sat"}'))["day"] == "sat"
    for bad, expected in [
        ({"city": "Lyon"}, "people: field required"),
        ({"city": "Lyon", "people": "many"}, "people: input should be a valid integer"),
        ({"city": "Lyon", "people": 2, "day": "sun"}, "day: input should be 'fri' or 'sat'"),
        ({"city": "Lyon", "people": 2, "colour": "red"}, "colour: extra inputs are not permitted"),
        ("{not json", "not valid JSON"),
        ([1, 2], "must be a JSON object"),
    ]:
        text = book_table.call(bad)
        assert text.startswith("Error:") and expected in text, text
        assert "Traceback" not in text
    assert book_table.call({"city": "Lyon", "people": 20}) == "Error: tables hold at most 12 people"
    crashed = book_table.call({"city": "crash", "people": 2})
    assert crashed == "Error: book_table failed: RuntimeError: the booking service broke"


# -- calculator and date ---------------------------------------------------------------------------


def test_calculator_results():
    cases = {
        "37 * 43": "1591",
        "2 ** 10": "1024",
        "(1 + 2) * -3": "-9",
        "7 // 2": "3",
        "7 % 4": "3",
        "10 / 4": "2.5",
        "sqrt(16) + abs(-2)": "6",
        "round(pi, 3)": "3.142",
        "log(e)": "1",
        "2^8": "256",
        "37 × 43 =": "1591",
        "+5 - -5": "10",
        "exp(0) + cos(0) + sin(0) + tan(0)": "2",
    }
    for expression, expected in cases.items():
        assert calculator.call({"expression": expression}) == expected, expression


@pytest.mark.parametrize(
    "expression, message",
    [
        ("__import__('os')", "the function '__import__' is not allowed"),
        ("__import__('os').system('echo hi')", "__import__('os').system\" is not allowed"),
        ("(1).__class__", "attribute access is not allowed"),
        ("math.pi", "attribute access is not allowed"),
        ("open('/etc/passwd')", "the function 'open' is not allowed"),
        ("x + 1", "unknown name 'x'"),
        ("[1, 2]", "List is not allowed"),
        ("'a' * 3", "only numbers are allowed"),
        ("9**9**9", "too large"),
        ("10 ** 5000", "too large"),
        ("exp(1000)", "too large"),
        ("1/0", "division by zero"),
        ("5 % 0", "division by zero"),
        ("log(-1)", "math domain error"),
        ("1 +", "not an arithmetic expression"),
        ("lambda: 1", "Lambda is not allowed"),
    ],
)
def test_calculator_refusals(expression, message):
    text = calculator.call({"expression": expression})
    assert text.startswith("Error:") and message in text, text
    with pytest.raises(ToolError):
        evaluate(expression)


def test_current_datetime():
    text = current_datetime.call({})
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d \((Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day\)", text
    ), text


# -- read_file -------------------------------------------------------------------------------------


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    inside, outside = tmp_path / "notes", tmp_path / "private"
    (inside / "sub").mkdir(parents=True)
    outside.mkdir()
    (inside / "todo.md").write_text("buy milk\n巴黎 is Paris\n", encoding="utf-8")
    (inside / "sub" / "deep.txt").write_text("deep", encoding="utf-8")
    (inside / "big.txt").write_text("x" * 20_000, encoding="utf-8")
    (inside / "image.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    (outside / "secret.txt").write_text("the secret", encoding="utf-8")
    (inside / "link-out.txt").symlink_to(outside / "secret.txt")
    (inside / "dir-out").symlink_to(outside)
    (inside / "link-in.txt").symlink_to(inside / "todo.md")
    return inside, outside


def test_read_file_inside_roots(folders):
    inside, _ = folders
    read = read_file_tool([inside])
    assert read.call({"path": "todo.md"}) == "buy milk\n巴黎 is Paris\n"
    assert read.call({"path": "sub/deep.txt"}) == "deep"
    assert read.call({"path": "./sub/../todo.md"}).startswith("buy milk")
    assert read.call({"path": str(inside / "todo.md")}).startswith("buy milk")
    assert read.call({"path": "link-in.txt"}).startswith("buy milk")  # a link that stays inside is fine
    big = read.call({"path": "big.txt"})
    assert big.startswith("x" * 8000) and "x" * 8001 not in big and "[cut: showing the first 8000 characters" in big
    assert "is a folder" in read.call({"path": "sub"}) and "deep.txt" in read.call({"path": "sub"})
    assert read.call({"path": "nope.md"}).startswith("Error: there is no file 'nope.md'")


def test_read_file_refuses_escapes_and_binary(folders):
    inside, outside = folders
    read = read_file_tool([inside])
    for path in [
        "../private/secret.txt",
        "sub/../../private/secret.txt",
        str(outside / "secret.txt"),
        "/etc/passwd",
        "link-out.txt",
        "dir-out/secret.txt",
    ]:
        text = read.call({"path": path})
        assert text.startswith("Error:") and "outside the folders" in text, (path, text)
        assert "the secret" not in text
    assert "binary file" in read.call({"path": "image.png"})


# -- knowledge-base search -------------------------------------------------------------------------


@dataclass
class Passage:
    citation: str
    text: str


class WordIndex:
    """A tiny real retriever: passages ranked by cosine similarity of word counts, top k always returned
    (as a vector store returns its k nearest), empty only when the index is empty."""

    def __init__(self, passages: dict[str, str]):
        self.passages = [Passage(c, t) for c, t in passages.items()]

    @staticmethod
    def _words(text: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for w in re.findall(r"\w+", text.lower()):
            counts[w] = counts.get(w, 0) + 1
        return counts

    def search(self, query: str, k: int) -> list[Passage]:
        q = self._words(query)

        def score(p: Passage) -> float:
            d = self._words(p.text)
            dot = sum(n * d.get(w, 0) for w, n in q.items())
            norm = (sum(n * n for n in q.values()) * sum(n * n for n in d.values())) ** 0.5
            return dot / norm if norm else 0.0

        return sorted(self.passages, key=score, reverse=True)[:k]


NOTES = {
    "notes/paris.md:1-3": "Paris is the capital of France. The Eiffel Tower in Paris is 330 metres tall.",
    "notes/lyon.md:1-2": "Lyon is a French city known for its food and its silk industry.",
    "notes/falcon.md:4-6": "The Falcon project deadline is 14 March 2027. The project lead is Mei Chen.",
}


def test_kb_search_tool_numbers_passages_with_citations():
    kb = kb_search_tool(WordIndex(NOTES).search, k=2)
    text = kb.call({"query": "Falcon project deadline"})
    first, second = text.splitlines()
    assert (
        first == "[1] (notes/falcon.md:4-6) The Falcon project deadline is 14 March 2027. The project lead is Mei Chen."
    )
    assert second.startswith("[2] (")
    assert (
        kb_search_tool(WordIndex({}).search).call({"query": "anything"})
        == "Nothing in the documents matches 'anything'."
    )
    assert kb.parameters["required"] == ["query"]


# -- python sandbox --------------------------------------------------------------------------------


def test_python_prints_a_result():
    py = python_tool(timeout_s=10)
    assert py.call({"code": "print(sum(range(101)))"}) == "5050"
    assert py.call({"code": "x = 6\nx * 7"}) == "42"  # a last bare expression is shown, as in a notebook
    error = py.call({"code": "1/0"})
    assert error == "Error: ZeroDivisionError (line 1): division by zero"


def test_python_is_killed_after_its_time_limit():
    result = run_python("import time\nprint('started', flush=True)\ntime.sleep(60)", timeout_s=1.5, memory_mb=256)
    assert result.timed_out and result.returncode is not None and result.returncode < 0
    assert result.stdout == "started\n"
    busy = python_tool(timeout_s=1.5).call({"code": "while True:\n    pass"})
    assert busy == "Error: the code was stopped after its time limit of 1.5 s."


def test_python_memory_blow_up_fails_cleanly():
    result = run_python("data = bytearray(2 * 1024**3)\nprint('allocated')", timeout_s=10, memory_mb=256)
    assert result.killed_for_memory and not result.timed_out and "allocated" not in result.stdout
    assert (
        python_tool(memory_mb=256).call({"code": "x = [0] * 10**9"})
        == "Error: the code ran out of memory (limit 256 MB)."
    )


def test_python_has_no_network_and_cannot_start_processes():
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    port = server.getsockname()[1]
    server.settimeout(0.1)  # close() does not wake a blocked accept(): poll instead
    accepted: list[tuple] = []
    done = threading.Event()

    def accept() -> None:
        while not done.is_set():
            try:
                conn, addr = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(addr)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        probe = socket.create_connection(("127.0.0.1", port), timeout=5)  # the server really accepts connections
        probe.close()
        for _ in range(50):
            if accepted:
                break
            threading.Event().wait(0.05)
        assert len(accepted) == 1
        py = python_tool(timeout_s=10)
        attempts = [
            f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))\nprint('connected')",
            f"import socket\nsocket.create_connection(('127.0.0.1', {port}))\nprint('connected')",
            f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{port}/')\nprint('connected')",
            f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\nprint('connected')",
            "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.sendto(b'x', ('127.0.0.1', {port}))",
        ]
        for code in attempts:
            text = py.call({"code": code})
            assert "connected" not in text and "network access is not allowed" in text, text
        for code in [
            "import subprocess\nsubprocess.run(['true'])",
            "import os\nos.system('true')",
            "import os\nos.fork()",
            "import os\nos.execv('/bin/true', ['true'])",
            "import _posixsubprocess\n_posixsubprocess.fork_exec()",
        ]:
            text = py.call({"code": code})
            assert "starting processes is not allowed" in text, text
        threading.Event().wait(0.2)
        assert len(accepted) == 1, f"the sandbox reached the server: {accepted[1:]}"
    finally:
        done.set()
        thread.join(timeout=5)
        server.close()


def test_python_runs_in_a_scratch_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    py = python_tool()
    assert (
        py.call({"code": f"open('left.txt', 'w').write('x')\nimport os\nprint(os.getcwd() != {str(tmp_path)!r})"})
        == "True"
    )
    assert not (tmp_path / "left.txt").exists()
    assert "INTERNLOCAL_HOME" not in py.call({"code": "import os\nprint(sorted(os.environ))"})
    os.environ.get("PATH")  # the parent's environment is untouched


# -- the agent on the embedded model ---------------------------------------------------------------


def steps_of(agent: Agent, question: str) -> list[AgentStep]:
    return list(agent.run(question))


def test_agent_uses_the_calculator(engine):
    agent = Agent(engine, default_tools())
    steps = steps_of(agent, "What is 37 * 43?")
    calls = [s for s in steps if s.kind == "tool_call"]
    assert calls and calls[0].name == "calculator"
    assert evaluate(calls[0].arguments["expression"]) == 1591  # a valid expression for the question
    results = [s for s in steps if s.kind == "tool_result"]
    assert results[0].content == "1591"
    assert steps[-1].kind == "answer" and "1591" in steps[-1].content, steps


def test_agent_searches_the_knowledge_base(engine, minilm_path, tmp_path):
    """kb_search over a real knowledge-base index (MiniLM vectors, chromadb, FTS5) of notes the test writes."""
    from internlocal.engines.loader import local_embedder
    from internlocal.kb.index import Index

    notes = tmp_path / "notes"
    notes.mkdir()
    for citation, text in NOTES.items():
        (notes / citation.split("/")[1].split(":")[0]).write_text(text + "\n")
    index = Index(tmp_path / "index", local_embedder(minilm_path, model_name="all-minilm-l6-v2"))
    index.sync([notes])
    kb = kb_search_tool(index.search, k=4)
    agent = Agent(engine, [kb, calculator])  # the order `internlocal agent --kb` and agent chats use
    steps = steps_of(agent, "According to my notes, when is the Falcon project deadline?")
    calls = [s for s in steps if s.kind == "tool_call"]
    assert calls and calls[0].name == "kb_search" and isinstance(calls[0].arguments["query"], str)
    first_result = next(s for s in steps if s.kind == "tool_result")
    assert "(falcon.md:1) The Falcon project deadline is 14 March 2027" in first_result.content
    assert steps[-1].kind == "answer" and "14 March 2027" in steps[-1].content, steps
    index.close()


def test_an_agent_chat_shows_its_steps_and_stores_them_beside_the_answer(services):
    chats = services.chats
    chat = chats.new_chat(params=GenerationParams.greedy(max_tokens=96))
    chats.set_mode(chat.id, "agent")
    reply = chats.send(chat.id, "What is 37 * 43?")
    streamed = "".join(reply)
    assert streamed.startswith("→ calculator(") and "= 1591" in streamed
    assert "1591" in reply.message.content and "→" not in reply.message.content  # the answer alone is the text
    assert (
        reply.message.sources["agent_steps"][0].startswith("calculator(")
        and "= 1591" in reply.message.sources["agent_steps"][0]
    )


# -- step limit and repeated calls: a small scripted Engine (the real model cannot be steered there on purpose)


class ScriptedEngine:
    """An Engine-protocol object that replies from a script and records what it was asked."""

    model_name = "scripted"
    capabilities = frozenset()
    context_length = 4096

    def __init__(self, replies):
        self.replies = list(replies)
        self.requests: list[dict] = []

    def chat(self, messages, params=None, *, response_format=None, tools=None, tool_choice=None) -> Generation:
        self.requests.append({"messages": [dict(m) for m in messages], "tools": tools, "tool_choice": tool_choice})
        reply = self.replies.pop(0)
        result = GenerationResult(text=reply if isinstance(reply, str) else "")
        if not isinstance(reply, str):
            name, args = reply
            result.tool_calls = [
                {
                    "id": f"call_{len(self.requests)}",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(args)},
                }
            ]
            result.finish_reason = "tool_calls"

        def producer():
            if result.text:
                yield result.text
            return result

        return Generation(producer(), threading.Event())

    def close(self) -> None:
        pass


def test_step_limit_asks_for_a_final_answer_without_tools():
    engine = ScriptedEngine([("calculator", {"expression": f"{i} + 1"}) for i in range(3)] + ["It is 3."])
    steps = list(Agent(engine, [calculator], max_steps=3).run("Count."))
    assert [s.kind for s in steps] == ["tool_call", "tool_result"] * 3 + ["answer"]
    assert [s.content for s in steps if s.kind == "tool_result"] == ["1", "2", "3"]
    assert steps[-1].content == "It is 3."
    assert [r["tool_choice"] for r in engine.requests] == ["auto"] * 3 + [None]
    final = engine.requests[-1]
    assert final["tools"] is None  # no tools offered for the last request
    assert 'calculator(expression="2 + 1") returned: 3' in final["messages"][-1]["content"]
    # the tool-call history of the auto requests: assistant call, then the tool's result
    third = engine.requests[2]["messages"]
    assert third[-1] == {"role": "tool", "tool_call_id": "call_2", "name": "calculator", "content": "2"}
    assert third[-2]["tool_calls"][0]["function"]["name"] == "calculator"


def test_step_limit_stopped_when_no_final_answer():
    engine = ScriptedEngine([("current_datetime", {}), ""])
    steps = list(Agent(engine, [current_datetime], max_steps=1).run("Date?"))
    assert steps[-1].kind == "stopped" and "step limit (1 tool calls)" in steps[-1].content


def test_repeated_call_is_not_run_again():
    ran: list[str] = []

    @tool
    def lookup(word: str) -> str:
        """Look a word up.

        Args:
            word: The word.
        """
        ran.append(word)
        return f"{word}: a small bird"

    engine = ScriptedEngine([("lookup", {"word": "wren"}), ("lookup", {"word": "wren"}), "A wren is a small bird."])
    steps = list(Agent(engine, [lookup]).run("What is a wren?"))
    assert ran == ["wren"]  # executed once
    assert [s.kind for s in steps] == ["tool_call", "tool_result", "tool_call", "tool_result", "answer"]
    assert "You already called lookup" in steps[3].content
    assert steps[-1].content == "A wren is a small bird."
    assert engine.requests[-1]["tools"] is None


def test_unknown_tool_and_bad_arguments_go_back_to_the_model():
    engine = ScriptedEngine([("nope", {}), ("calculator", {"expr": "1"}), "done"])
    steps = list(Agent(engine, [calculator]).run("?"))
    results = [s.content for s in steps if s.kind == "tool_result"]
    assert results[0] == "Error: there is no tool named 'nope'; the tools are: calculator."
    assert results[1].startswith("Error: bad arguments for calculator: expression: field required")
    assert steps[-1] == AgentStep("answer", content="done")


def test_agent_step_json_and_cli_registration():
    step = AgentStep("tool_call", "calculator", {"expression": "1+1"}, call_id="c1")
    assert json.loads(json.dumps(step.to_dict())) == {
        "kind": "tool_call",
        "name": "calculator",
        "arguments": {"expression": "1+1"},
        "content": "",
        "call_id": "c1",
    }
    from typer.testing import CliRunner

    from internlocal.cli.main import app

    result = CliRunner().invoke(app, ["agent", "--help"])
    assert result.exit_code == 0 and "--allow-python" in result.output and "--kb" in result.output


def test_cli_agent_prints_json_steps(cli_env, internlocal_bin):
    import subprocess

    out = subprocess.run(
        [internlocal_bin, "agent", "What is 37 * 43?", "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    steps = [json.loads(line) for line in out.stdout.splitlines()]
    assert steps[0] == {
        "kind": "tool_call",
        "name": "calculator",
        "arguments": steps[0]["arguments"],
        "content": "",
        "call_id": steps[0]["call_id"],
    }
    assert steps[1]["kind"] == "tool_result" and steps[1]["content"] == "1591"
    assert steps[-1]["kind"] == "answer" and "1591" in steps[-1]["content"]


def test_greedy_default_params(engine):
    agent = Agent(engine, [calculator])
    assert agent.params == GenerationParams.greedy(max_tokens=256)
    assert "use calculator" in agent.system_prompt
