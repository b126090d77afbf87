"""Answers that do not loop: the repetition stop on every path (engines, chat, agent, knowledge base, server)."""

from __future__ import annotations

import json
import subprocess

import pytest

from internlocal.engines.base import REPETITION_NOTE, GenerationParams, RepetitionGuard
from internlocal.kb.answer import UNGROUNDED_LEAD
from tests.scripted_openai import scripted_model

LOOPING_SENTENCE = "The answer is 12345678. "


def looped(text: str, guard: RepetitionGuard | None = None) -> int | None:
    """The character count at which the watch fires when ``text`` streams in word by word, or None."""
    watch = (guard or RepetitionGuard()).watch()
    seen = 0
    for word in text.split(" "):
        piece = word + " "
        seen += len(piece)
        if watch.feed(piece):
            return seen
    return None


def test_an_exact_loop_is_caught_at_its_third_copy():
    at = looped(LOOPING_SENTENCE * 12)
    assert at == 3 * len(LOOPING_SENTENCE)


def test_a_sentence_that_keeps_coming_back_with_other_text_between_is_caught():
    """A sampled loop: the same sentence, with a few others varying between its copies."""
    between = ["Let me know if you need more.", "Let me know!", "Let me know if you need more.", "Good luck."]
    varied = " ".join(f"I hope this answer helps you today. {b}" for b in between * 3)
    at = looped(varied)
    fourth = varied.index("Good luck.")  # the fourth copy ends where "Good luck." starts
    assert at is not None and fourth <= at < fourth + 10


def test_an_answer_listing_passages_under_one_heading_is_not_a_loop():
    """Seen on the embedded model in `kb ask`: one heading before each passage, something new under each."""
    text = "".join(
        f"The passage you requested is:\n\n[{i}] (shutil.txt:{i}0-{i}9)\nfunction number {i} copies a tree.\n\n"
        for i in range(1, 7)
    )
    assert looped(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "| a | b | c |\n|---|---|---|\n| 1 | 2 | 3 |\n| 4 | 5 | 6 |\n",  # a table rule is periodic on purpose
        "ha ha ha ha ha ha ha ha ha ha",  # short spans are left alone
        "1. Preheat the oven. 2. Mix the flour and the sugar. 3. Add the eggs. 4. Bake for twenty minutes.",
        "=" * 80,
    ],
)
def test_ordinary_text_is_not_taken_for_a_loop(text):
    assert looped(text) is None


def test_thresholds_are_settings():
    strict = RepetitionGuard(min_span=16, repeats=2)
    assert looped(LOOPING_SENTENCE * 3, strict) == 2 * len(LOOPING_SENTENCE)
    assert looped(LOOPING_SENTENCE * 2, RepetitionGuard(repeats=3, sentence_repeats=99)) is None


def test_a_scripted_endpoint_that_repeats_on_purpose_is_stopped_early():
    """The remote engine reads a stream that would repeat 200 times; it ends after the third copy and says why,
    and stops reading (the endpoint sends little more than that)."""
    from internlocal.engines.remote import RemoteEngine

    with scripted_model() as model:
        model.reply(*([LOOPING_SENTENCE] * 200))
        model.delay_s = 0.01
        engine = RemoteEngine(model.url, "scripted")
        try:
            generation = engine.chat([{"role": "user", "content": "What is 1234 * 5678?"}], GenerationParams())
            text = "".join(generation)
            result = generation.result
            assert result.finish_reason == "repetition"
            assert result.text == text == LOOPING_SENTENCE * 3
            assert model.sent_pieces < 20
            off = engine.chat([{"role": "user", "content": "again"}], GenerationParams(stop_on_repetition=False))
            assert off.collect().text == LOOPING_SENTENCE * 200 and off.result.finish_reason == "stop"
        finally:
            engine.close()


def test_the_embedded_model_looping_is_stopped(engine):
    """Greedy, the embedded model asked for a word five times writes it until the token limit."""
    messages = [{"role": "user", "content": "Write the word cat five times."}]
    stopped = engine.chat(messages, GenerationParams.greedy(max_tokens=300)).collect()
    unguarded = engine.chat(messages, GenerationParams.greedy(max_tokens=300, stop_on_repetition=False)).collect()
    assert unguarded.finish_reason == "length"  # without the stop it runs to the limit
    assert stopped.finish_reason == "repetition"
    assert stopped.completion_tokens < unguarded.completion_tokens / 2
    assert unguarded.text.startswith(stopped.text)  # the same answer, ended early


def test_cli_agent_and_chat_say_why_they_stopped(cli_env, internlocal_bin):
    agent = subprocess.run(
        [internlocal_bin, "agent", "What is 1234 * 5678?", "--json"],  # the case, as a new user tried it
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert agent.returncode == 0, agent.stderr
    answer = json.loads(agent.stdout.splitlines()[-1])
    assert answer["kind"] == "answer" and answer["finish_reason"] == "repetition"
    chat = subprocess.run(
        [
            internlocal_bin,
            "chat",
            "Write the word cat five times.",
            "--temperature",
            "0",
            "--repeat-penalty",
            "1",
            "--max-tokens",
            "300",
        ],
        env=cli_env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert chat.returncode == 0, chat.stderr
    assert f"({REPETITION_NOTE})" in chat.stderr


def test_kb_ask_that_looped_on_documentation_ends_early_and_says_why(cli_env, internlocal_bin, tmp_path):
    """The issue's case: Python's own documentation (pydoc's text of five modules), and a question whose right
    passages are retrieved; the embedded model then repeats a passage. The answer ends early, marked."""
    import pydoc

    docs = tmp_path / "pydocs"
    docs.mkdir()
    for name in ("tempfile", "shutil", "os.path", "pathlib", "contextlib"):
        text = pydoc.render_doc(name, "Help on %s:", renderer=pydoc.plaintext)  # as `python -m pydoc` prints
        (docs / f"{name}.txt").write_text(text, encoding="utf-8")

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([internlocal_bin, "kb", *args], env=cli_env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        return done

    run("create", "pydocs", str(docs))
    question = "How can I create a temporary directory that is cleaned up automatically when a with-block ends?"
    answer = json.loads(run("ask", "pydocs", question, "--json", "--answers", "generate").stdout)
    assert answer["finish_reason"] == "repetition"
    assert answer["kb_sources"][0]["relpath"] == "tempfile.txt"
    shown = run("ask", "pydocs", question, "--answers", "generate").stdout
    assert f"({REPETITION_NOTE})" in shown
    # by default (issue 21) the looping answer, which cites nothing, is not shown as if it were grounded: the
    # passages' best sentences are, each quoted with its citation; the stored decision says what happened
    quoted = json.loads(run("ask", "pydocs", question, "--json").stdout)
    assert quoted["answer"].startswith(UNGROUNDED_LEAD) and quoted["replaced_answer"]
    assert quoted["quotes"] and all(q["citation"].startswith("tempfile.txt:") for q in quoted["quotes"])
    assert "temporary directory" in quoted["quotes"][0]["text"]
    assert "repeating itself" in quoted["pipeline"]["answer"] and "replaced" in quoted["pipeline"]["answer"]
    plain = run("ask", "pydocs", question).stdout
    assert f"({REPETITION_NOTE})" not in plain and "(tempfile.txt:" in plain
