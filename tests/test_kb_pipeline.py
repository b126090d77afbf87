"""The knowledge assistant's pipeline around retrieval (HuixiangDou's): extractive answers with citations, the
question filter, the relevance gate, the answer check, grounding, and feedback that reaches the tuning.

The scripted model (a real OpenAI-compatible server on 127.0.0.1) gives the verdicts and replies the embedded
135M model cannot give on demand (a passage judged irrelevant, "I don't know"); each of those paths also runs
once on the embedded model.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from internlocal.engines.base import GenerationParams
from internlocal.engines.remote import RemoteEngine
from internlocal.kb.answer import (
    REFUSAL,
    UNGROUNDED_LEAD,
    AnswerPipeline,
    answer,
    fit_threshold,
    is_chit_chat,
    says_it_does_not_know,
)
from internlocal.kb.evaluate import load_questions
from tests.scripted_openai import scripted_model

DATA = Path(__file__).parent / "data" / "kb"
SHORT = GenerationParams.greedy(max_tokens=48)
ROUTER = "What is the router's default administration address?"


@pytest.fixture(scope="module")
def corpus_index(tmp_path_factory, minilm_path):
    """The project's knowledge-base test set, indexed once for the module."""
    from internlocal.engines.loader import local_embedder
    from internlocal.kb.index import Index

    embedder = local_embedder(minilm_path, model_name="all-minilm-l6-v2")
    index = Index(tmp_path_factory.mktemp("kb") / "index", embedder)
    index.sync([DATA / "corpus"])
    yield index
    index.close()


class Searches:
    """The index, counting searches (to show that small talk skips retrieval)."""

    def __init__(self, index):
        self.index, self.calls = index, 0

    def search(self, *args, **kwargs):
        self.calls += 1
        return self.index.search(*args, **kwargs)

    def embed(self, texts):
        return self.index.embed(texts)


def test_extractive_answers_cite_the_right_file_for_every_answerable_question(corpus_index, engine):
    quoting = AnswerPipeline(answers="extractive")
    questions = load_questions(DATA / "questions.jsonl")
    assert sum(1 for q in questions if q["sources"]) == 34 and sum(1 for q in questions if not q["sources"]) == 8
    for item in questions:
        result = answer(engine, corpus_index, item["question"], threshold=0.35, pipeline=quoting).collect()
        if not item["sources"]:
            assert result.refused and result.text == REFUSAL and not result.quotes, item
            continue
        assert not result.refused and result.quotes, item
        best = result.quotes[0]
        source = result.sources[best["n"] - 1]
        assert source["relpath"] in item["sources"], (item, result.quotes)
        # the quote is the document's own sentence, cited [n] with the sentence's own file:line
        assert best["citation"].startswith(source["relpath"] + ":")
        assert f"> {best['text']} [{best['n']}] ({best['citation']})" in result.text
        path, line = best["citation"].rsplit(":", 1)
        lines = (DATA / "corpus" / path).read_text(encoding="utf-8").splitlines()
        assert best["text"].split()[0] in lines[int(line) - 1]
        assert all(s["cited"] == (s["n"] in {q["n"] for q in result.quotes}) for s in result.sources)
        assert result.decisions["answer"] == "quoted: the passages' best sentences"


def test_small_talk_is_answered_without_retrieval(corpus_index, engine):
    for text in ("Hello!", "hi there", "Thanks a lot!", "Good morning", "你好！", "谢谢", "How are you?"):
        assert is_chit_chat(text), text
    for text in (
        "How do I factory reset the AX-9?",
        "Hello, what does error E-4127 mean?",
        "thanks for the fish recipe?",
    ):
        assert not is_chit_chat(text), text
    counted = Searches(corpus_index)
    hello = answer(engine, counted, "Hello!", threshold=0.35, params=SHORT).collect()
    assert counted.calls == 0 and hello.sources == [] and not hello.refused and hello.text.strip()
    assert hello.decisions == {"filter": "small talk: answered without the documents"}
    question = answer(engine, counted, ROUTER, threshold=0.35, params=SHORT).collect()
    assert counted.calls == 1 and question.decisions["filter"] == "a question: searched the documents"
    off = answer(engine, counted, "Hello!", threshold=0.35, params=SHORT, pipeline=AnswerPipeline(chit_chat=False))
    assert counted.calls == 2 and off.collect().refused  # without the filter, "Hello!" is a question to refuse


def test_a_passage_judged_irrelevant_is_dropped_and_none_left_is_a_refusal(corpus_index):
    gate = AnswerPipeline(relevance_gate=True)
    with scripted_model() as model:
        engine = RemoteEngine(model.url, "scripted")
        for verdict in ('{"relevant": true}', '{"relevant": false}', '{"relevant": false}', '{"relevant": false}'):
            model.reply(verdict)
        model.reply("The default administration address is 192.168.50.1 [1].")
        kept = answer(engine, corpus_index, ROUTER, threshold=0.35, pipeline=gate).collect()
        judged = kept.decisions["relevance"]
        assert [v["relevant"] for v in judged] == [True, False, False, False]
        assert [s["citation"] for s in kept.sources] == [judged[0]["citation"]] and len(kept.hits) == 1
        assert kept.text == "The default administration address is 192.168.50.1 [1]." and kept.sources[0]["cited"]
        assert kept.decisions["answer"] == "generated, citing [1]"
        # the verdicts were asked for as schema-constrained JSON, one request per passage, the passage in it
        assert all(r["response_format"]["type"] == "json_schema" for r in model.requests[:4])
        assert "192.168.50.1" in model.requests[0]["messages"][0]["content"]
        assert "Passages:" in model.requests[4]["messages"][-1]["content"]

        model.replies.clear()
        model.reply('{"relevant": false}')
        none_left = answer(engine, corpus_index, ROUTER, threshold=0.35, pipeline=gate).collect()
        assert none_left.refused and none_left.text == REFUSAL and none_left.sources == []
        assert none_left.decisions["relevance_gate"] == "refused: the model judged every passage irrelevant"


def test_an_answer_that_only_says_it_does_not_know_is_withheld(corpus_index):
    for text in ("I don't know.", "I'm not sure.", "The passages do not say.", "不知道。", ""):
        assert says_it_does_not_know(text, 4), text
    assert not says_it_does_not_know("The address is 192.168.50.1 [1].", 4)
    with scripted_model() as model:
        engine = RemoteEngine(model.url, "scripted")
        model.reply("I don't know.")
        withheld = answer(engine, corpus_index, ROUTER, threshold=0.35).collect()
        assert withheld.refused and withheld.text == REFUSAL and withheld.replaced == "I don't know."
        assert withheld.decisions["answer_check"] == "withheld: the reply only said it did not know"
        assert withheld.record()["replaced_answer"] == "I don't know." and withheld.sources == []
        unchecked = answer(
            engine,
            corpus_index,
            ROUTER,
            threshold=0.35,
            pipeline=AnswerPipeline(answer_check=False, answers="generate"),
        ).collect()
        assert unchecked.text == "I don't know." and not unchecked.refused  # the check off: shown as it came


def test_a_generated_answer_citing_nothing_is_replaced_by_quotes(corpus_index):
    with scripted_model() as model:
        engine = RemoteEngine(model.url, "scripted")
        model.reply("Routers are useful devices that many people own.")
        replaced = answer(engine, corpus_index, ROUTER, threshold=0.35).collect()
        assert replaced.text.startswith(UNGROUNDED_LEAD + "\n\n> The default administration address is 192.168.50.1")
        assert replaced.replaced == "Routers are useful devices that many people own."
        assert replaced.quotes[0]["citation"] == "devices/router.txt:3"
        assert replaced.sources[replaced.quotes[0]["n"] - 1]["cited"]
        model.replies.clear()
        model.reply("It is 192.168.50.1 [1].")
        grounded = answer(engine, corpus_index, ROUTER, threshold=0.35).collect()
        assert grounded.text == "It is 192.168.50.1 [1]." and grounded.replaced is None


def test_the_whole_pipeline_runs_on_the_embedded_model(corpus_index, engine):
    """Every step on, on the real 135M model: its verdicts and answer are its own, but every decision is made,
    stored and consistent with what is shown."""
    every = AnswerPipeline(relevance_gate=True, answer_check=True, answers="auto")
    result = answer(engine, corpus_index, ROUTER, threshold=0.35, params=SHORT, pipeline=every).collect()
    record = result.record()
    assert record["pipeline"]["filter"] == "a question: searched the documents"
    assert len(record["pipeline"]["relevance"]) == 4
    assert all(isinstance(v["relevant"], bool) for v in record["pipeline"]["relevance"])
    if result.refused:
        assert result.text == REFUSAL
    elif result.quotes:
        assert result.text.startswith(UNGROUNDED_LEAD) and result.replaced is not None
    else:
        assert any(s["cited"] for s in result.sources) and "generated, citing" in record["pipeline"]["answer"]


def test_bad_answers_reach_the_threshold_tuning(home, settings, tmp_path, internlocal_bin, cli_env):
    from internlocal.bootstrap import bootstrap
    from internlocal.errors import UserError
    from internlocal.kb import library

    corpus = tmp_path / "corpus"
    shutil.copytree(DATA / "corpus", corpus)
    services = bootstrap(settings)
    library.create_kb(settings, services.catalog, "home-notes", [str(corpus)])
    library.sync_kb(services.catalog, "home-notes")
    chats = services.chats
    chat = chats.new_chat(params=SHORT)
    with pytest.raises(UserError, match="no knowledge-base answer"):
        chats.judge_answer(chat.id, "bad")
    chats.set_mode(chat.id, "kb", "home-notes")
    # the documents do not say: answered anyway (the evidence passed the default threshold), and marked bad
    "".join(chats.send(chat.id, "What colour is the thermostat?"))
    judged = chats.judge_answer(chat.id, "bad")
    assert judged.role == "assistant" and judged.sources["refused"] is False
    # a refusal the user says should have been an answer (a threshold set too high refuses everything)
    chats.catalog.update_kb("home-notes", threshold=0.99)
    "".join(chats.send(chat.id, "How high should the thermostat be mounted?"))
    refusal = chats.judge_answer(chat.id, "bad")
    assert refusal.sources["refused"] is True
    feedback = services.catalog.list_feedback("home-notes")
    assert [(f.question, f.verdict, f.refused, f.message_id) for f in feedback] == [
        ("What colour is the thermostat?", "bad", False, judged.id),
        ("How high should the thermostat be mounted?", "bad", True, refusal.id),
    ]
    with pytest.raises(UserError, match="bad or good"):
        from internlocal.catalog.schema import AnswerFeedback

        services.catalog.add_feedback(AnswerFeedback(kb_name="home-notes", question="q", answer="a", verdict="meh"))
    assert len(services.catalog.list_feedback("home-notes")) == 2  # the refused verdict stored nothing
    services.close()

    answerable = tmp_path / "answerable.jsonl"
    rows = [q for q in load_questions(DATA / "questions.jsonl") if q["sources"]]
    answerable.write_text("".join(json.dumps(q) + "\n" for q in rows if "mounted" not in q["question"]))

    def kb_eval(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run(
            [internlocal_bin, "kb", "eval", "home-notes", *args, "--json"],
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert (done.returncode == 0) == ok, done.stderr
        return done

    # the verdicts are the only questions to refuse: without them answerable questions alone could not be fitted
    result = json.loads(kb_eval(str(answerable), "--tune").stdout)
    assert result["from_feedback"] == 2 and result["unanswerable"] == 1 and result["answerable"] == 34
    rows_by_question = {r["question"]: r for r in result["per_question"]}
    assert rows_by_question["What colour is the thermostat?"]["expect"] == "refuse"
    assert rows_by_question["How high should the thermostat be mounted?"]["expect"] == "answer"
    assert result["recall@5"] == 1.0  # the verdicts have no labelled files: recall is the file's questions only
    # the fit is over the file's answerable questions plus both verdicts, each on its side
    answer_side = [
        r["evidence"]
        for r in result["per_question"]
        if r.get("expect") == "answer" or (r["sources"] and "expect" not in r)
    ]
    refuse_side = [r["evidence"] for r in result["per_question"] if r.get("expect") == "refuse"]
    assert len(answer_side) == 34 and refuse_side == [rows_by_question["What colour is the thermostat?"]["evidence"]]
    assert (result["fitted_threshold"], result["fitted_accuracy"]) == fit_threshold(answer_side, refuse_side)
    check = bootstrap(settings)
    assert check.catalog.get_kb("home-notes").threshold == result["fitted_threshold"]
    check.close()


def router_kb(settings, tmp_path: Path) -> None:
    """A knowledge base "router" over the test set's router guide alone, created and synced."""
    from internlocal.bootstrap import bootstrap
    from internlocal.kb import library

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "router.txt").write_text((DATA / "corpus" / "devices" / "router.txt").read_text(encoding="utf-8"))
    services = bootstrap(settings)
    library.create_kb(settings, services.catalog, "router", [str(docs)])
    library.sync_kb(services.catalog, "router")
    services.close()


def test_cli_pipeline_settings_are_stored_and_bad_values_refused(home, settings, tmp_path, internlocal_bin, cli_env):
    router_kb(settings, tmp_path)

    def kb(*args: str, ok: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([internlocal_bin, "kb", *args], env=cli_env, capture_output=True, text=True, timeout=300)
        assert (done.returncode == 0) == ok, done.stderr
        return done

    assert json.loads(kb("pipeline", "router", "--json").stdout) == AnswerPipeline().model_dump()
    kb("pipeline", "router", "--answers", "extractive", "--no-chit-chat")
    shown = kb("pipeline", "router").stdout
    assert "answers         extractive" in shown and "chit-chat       off" in shown
    bad = kb("pipeline", "router", "--answers", "poetry", ok=False)
    assert "Pipeline setting answers" in bad.stderr and "poetry" in bad.stderr
    kept = json.loads(kb("pipeline", "router", "--json").stdout)
    assert kept["answers"] == "extractive"  # the refused value changed nothing
    asked = kb("ask", "router", "How do I reset the router to factory settings?").stdout
    assert "press the pinhole button" in asked and "(devices/router.txt:" not in asked and "(router.txt:6)" in asked
    assert "(answer: quoted: the passages' best sentences)" in asked


async def test_the_chat_screen_shows_the_decisions_and_takes_a_bad_answer_verdict(home, settings, tmp_path):
    from internlocal.tui.app import InternLocalApp
    from internlocal.tui.widgets.messages import MessageView
    from tests.test_tui import greedy_settings, ready, until

    router_kb(settings, tmp_path)

    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(110, 36)) as pilot:
        screen = await ready(pilot)
        screen.action_bad_answer()  # nothing to judge yet: said, nothing stored
        await pilot.pause(0.1)
        assert screen.services.catalog.list_feedback("router") == []
        screen.services.chats.set_params(screen.chat_id, SHORT)
        await screen._set_mode("kb", "router")
        screen.query_one("#prompt").value = ROUTER
        await pilot.press("enter")
        catalog = screen.services.catalog
        await until(pilot, lambda: not screen.generating and len(catalog.messages(screen.chat_id)) == 2)
        await until(pilot, lambda: "answer: " in list(screen.query(MessageView))[-1]._stats)
        view = list(screen.query(MessageView))[-1]
        shown = view._stats
        assert "filter: a question: searched the documents" in shown and "threshold: passed" in shown
        assert "answer: " in shown and "[1] router.txt:" in shown
        await pilot.press("ctrl+p")
        await pilot.pause(0.3)
        for char in "Bad answer":
            await pilot.press("space" if char == " " else char)
        await pilot.pause(0.5)
        await pilot.press("enter")
        await until(pilot, lambda: len(screen.services.catalog.list_feedback("router")) == 1)
        [feedback] = screen.services.catalog.list_feedback("router")
        assert (feedback.question, feedback.verdict) == (ROUTER, "bad")
        assert feedback.message_id == catalog.messages(screen.chat_id)[-1].id

        screen.action_quote_answers()  # the user asks for quotes: the knowledge base's pipeline says so
        assert catalog.get_kb("router").pipeline == {"answers": "extractive"}
        screen.query_one("#prompt").value = "How do I reset the router to factory settings?"
        await pilot.press("enter")
        await until(pilot, lambda: not screen.generating and len(catalog.messages(screen.chat_id)) == 4)
        quoted = catalog.messages(screen.chat_id)[-1]
        assert quoted.content.startswith("From your documents:\n\n> To reset the router to factory settings")
        assert quoted.sources["pipeline"]["answer"] == "quoted: the passages' best sentences"
        screen.action_quote_answers()
        assert catalog.get_kb("router").pipeline == {}
