"""The Textual app driven by its pilot: chat with streaming, persistence across restarts, editing chats."""

from __future__ import annotations

import asyncio
import time

from textual.widgets import Input, ListView, Markdown

from internlocal.config import Settings
from internlocal.tui.app import InternLocalApp
from internlocal.tui.screens.chat import ChatScreen, SessionItem
from internlocal.tui.screens.dialogs import ChatSettingsDialog, ConfirmDialog, TextPromptDialog
from internlocal.tui.widgets.messages import MessageView
from tests.conftest import QUESTION

SIZE = (120, 40)


async def until(pilot, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        await pilot.pause(0.05)
    raise AssertionError("the UI did not get there in time")


def chat_screen(app) -> ChatScreen:
    screen = app.screen
    assert isinstance(screen, ChatScreen)
    return screen


def text_of(view: MessageView) -> str:
    """The view's Markdown source, or "" while it is not composed yet (queries would find nothing)."""
    from textual.css.query import NoMatches

    try:
        return view.markdown.source
    except NoMatches:
        return ""


def messages(app) -> list[tuple[str, str]]:
    return [(v.role, text_of(v)) for v in chat_screen(app).query(MessageView)]


def greedy_settings(home) -> Settings:
    return Settings(home=home, context_length=2048)


def pace_replies(chats, delay: float = 0.05) -> list[str]:
    """Make the chat service's real replies pause between pieces, so a test can watch the view grow."""
    pieces_seen: list[str] = []
    real_send = chats.send

    def paced_send(chat_id, text, **kwargs):
        reply = real_send(chat_id, text, **kwargs)
        real = reply.generation

        class Paced:
            result = property(lambda self: real.result)
            cancel = real.cancel

            def __iter__(self):
                for piece in real:
                    pieces_seen.append(piece)
                    yield piece
                    time.sleep(delay)

        reply.generation = Paced()
        return reply

    chats.send = paced_send
    return pieces_seen


async def ready(pilot) -> ChatScreen:
    await until(pilot, lambda: pilot.app.services is not None and chat_screen(pilot.app)._ready)
    return chat_screen(pilot.app)


async def make_greedy(pilot, screen: ChatScreen) -> None:
    from internlocal.engines.base import GenerationParams

    screen.services.chats.set_params(screen.chat_id, GenerationParams.greedy(max_tokens=32))


async def test_send_stream_and_find_it_after_restart(home):
    app = InternLocalApp(greedy_settings(home))
    streamed_sizes = []
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await make_greedy(pilot, screen)
        prompt = screen.query_one("#prompt", Input)
        assert prompt.has_focus
        await pilot.press(*QUESTION)
        pieces_seen = pace_replies(screen.services.chats)
        await pilot.press("enter")

        def observe():
            views = list(screen.query(MessageView))
            if len(views) == 2:
                streamed_sizes.append(len(text_of(views[1])))
            return (
                len(views) == 2
                and not screen.generating
                and screen.status.state == "ready"
                and all(text_of(v) for v in views)
            )

        await until(pilot, observe)
        assert messages(app)[0] == ("user", QUESTION)
        role, answer = messages(app)[1]
        assert role == "assistant" and "Paris" in answer
        assert len(pieces_seen) > 1 and "".join(pieces_seen) == answer
        assert len(set(streamed_sizes)) > 1  # the reply grew in steps while streaming
        assert "tok/s" in str(screen.status.render())
        title = screen.query_one("#sessions", ListView).children[0]
        assert isinstance(title, SessionItem)

    restarted = InternLocalApp(greedy_settings(home))
    async with restarted.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        await until(pilot, lambda: len(messages(restarted)) == 2 and all(text for _, text in messages(restarted)))
        assert messages(restarted)[0] == ("user", QUESTION)
        assert "Paris" in messages(restarted)[1][1]
        items = screen.query_one("#sessions", ListView).children
        assert [i.chat_id for i in items] == [screen.chat_id]


async def test_escape_stops_the_reply_and_keeps_it(home):
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        from internlocal.engines.base import GenerationParams

        screen.services.chats.set_params(screen.chat_id, GenerationParams(max_tokens=1500, seed=1))
        screen.query_one("#prompt", Input).value = "Write a very long story about a dragon and a baker."
        await pilot.press("enter")
        await until(pilot, lambda: len(messages(app)) == 2 and len(messages(app)[1][1]) > 20)
        await pilot.press("escape")
        await until(pilot, lambda: not screen.generating)
        stored = screen.services.catalog.messages(screen.chat_id)
        assert stored[-1].finish_reason == "cancelled"
        assert stored[-1].completion_tokens < 1500
        assert "stopped" in str(screen.query(MessageView).last().query_one(".stats").render())


async def test_new_rename_delete_and_settings(home):
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        first = screen.chat_id
        await pilot.press("ctrl+n")
        await until(pilot, lambda: screen.chat_id != first)
        second = screen.chat_id
        assert len(screen.query_one("#sessions", ListView).children) == 2

        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, TextPromptDialog))
        app.screen.query_one(Input).value = "物理笔记"
        await pilot.press("enter")
        await until(pilot, lambda: screen.services.catalog.get_chat(second).title == "物理笔记")

        await pilot.press("f4")
        await until(pilot, lambda: isinstance(app.screen, ChatSettingsDialog))
        dialog = app.screen
        # a new chat samples as the model's authors recommend (SmolLM2's card: 0.2 / 0.9), and says so
        assert dialog.query_one("#temperature", Input).value == "0.2"
        assert dialog.query_one("#top_p", Input).value == "0.9"
        recommended = str(dialog.query_one("#recommended").render())
        assert "Recommended for smollm2-135m-instruct-q4_1: temperature 0.2 · top p 0.9" in recommended
        dialog.query_one("#temperature", Input).value = "7"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, ChatSettingsDialog)  # refused: stays open with the reason
        assert "temperature" in str(dialog.query_one("#error").render())
        dialog.query_one("#temperature", Input).value = "0.3"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen))
        from internlocal.chat.service import chat_params

        assert chat_params(screen.services.catalog.get_chat(second)).temperature == 0.3

        await pilot.press("ctrl+d")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.click("#yes")
        await until(pilot, lambda: screen.chat_id == first)
        assert [c.id for c in screen.services.catalog.list_chats()] == [first]


async def test_help_palette_and_jobs_screen(home):
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f1")
        await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
        assert "Ctrl+N" in app.screen.query_one(Markdown).source
        await pilot.press("escape")
        await pilot.press("f6")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        await pilot.press("v")  # start the built-in verify job from the TUI
        from textual.widgets import DataTable

        table = app.screen.query_one(DataTable)
        await until(pilot, lambda: table.row_count == 1 and "succeeded" in str(table.get_row_at(0)), timeout=120)
        assert "100" in str(table.get_row_at(0))
        await pilot.press("f5")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen))


async def test_jobs_screen_asks_a_job_to_stop_then_stops_it_by_force(home, tmp_path, monkeypatch):
    import os
    from pathlib import Path

    from textual.widgets import DataTable

    from tests import jobs_for_tests

    monkeypatch.setenv(
        "PYTHONPATH", str(Path(__file__).resolve().parents[1]) + os.pathsep + os.environ.get("PYTHONPATH", "")
    )
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        pid_file = tmp_path / "child.pid"
        job = app.services.jobs.submit(
            jobs_for_tests.never_checks, {"pid_file": str(pid_file)}, kind="test.stuck", title="stuck"
        )
        await until(pilot, lambda: pid_file.exists() and bool(pid_file.read_text()), timeout=60)
        await pilot.press("f6")
        await until(pilot, lambda: type(app.screen).__name__ == "JobsScreen")
        table = app.screen.query_one(DataTable)
        await until(pilot, lambda: table.row_count == 1 and "running" in str(table.get_row_at(0)))
        await pilot.press("c")
        await until(pilot, lambda: any("press c again" in str(n.message) for n in app._notifications))
        assert app.services.catalog.get_job(job.id).status == "running"
        await pilot.press("c")
        await until(pilot, lambda: "cancelled" in str(table.get_row_at(0)), timeout=30)
        assert app.services.catalog.get_job(job.id).status == "cancelled"


async def test_corrupt_catalog_shows_the_reason_instead_of_crashing(home):
    for suffix in ("-wal", "-shm"):
        (home / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    (home / "catalog.sqlite").write_bytes(b"garbage" * 100)
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.startup_error is not None)
        assert "corrupt" in app.startup_error
        await until(
            pilot,
            lambda: any(v.role == "error" and "corrupt" in text_of(v) for v in chat_screen(app).query(MessageView)),
        )
        assert chat_screen(app).query_one("#prompt", Input).disabled
    assert (home / "catalog.sqlite").read_bytes() == b"garbage" * 100


async def test_quit_mid_reply_keeps_the_conversation(home):
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        from internlocal.engines.base import GenerationParams

        screen.services.chats.set_params(screen.chat_id, GenerationParams(max_tokens=1500, seed=2))
        screen.query_one("#prompt", Input).value = "Tell me a long story."
        await pilot.press("enter")
        await until(pilot, lambda: len(messages(app)) == 2 and len(messages(app)[1][1]) > 10)
        chat_id = screen.chat_id
        await pilot.press("ctrl+q")
    await asyncio.sleep(0.5)
    from internlocal.catalog.catalog import Catalog

    stored = Catalog(home / "catalog.sqlite").messages(chat_id)
    assert stored[0].content == "Tell me a long story."
    assert stored[-1].role == "assistant" and stored[-1].finish_reason == "cancelled" and stored[-1].content


async def test_no_chat_model_at_all_is_explained(tmp_path, monkeypatch):
    """An installation without the embedded chat model: the reason is shown, nothing crashes."""
    from internlocal.hub import embedded

    monkeypatch.setattr(embedded.EmbeddedModel, "locate", lambda self: None)
    app = InternLocalApp(Settings(home=tmp_path / "empty-home"))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: any(v.role == "error" and text_of(v) for v in chat_screen(app).query(MessageView)))
        error = next(v for v in chat_screen(app).query(MessageView) if v.role == "error")
        assert "No chat model" in error.markdown.source
        assert chat_screen(app).query_one("#prompt", Input).disabled


async def test_view_follows_the_reply_only_while_at_the_bottom(home):
    from internlocal.catalog.catalog import Catalog
    from internlocal.engines.base import GenerationParams
    from internlocal.tui.widgets.messages import ChatLog

    cat = Catalog(home / "catalog.sqlite")
    chat = cat.create_chat("long", "You are a helpful assistant.", "smollm2-135m-instruct-q4_1")
    for i in range(15):
        cat.add_message(chat.id, "user", f"question {i}")
        cat.add_message(chat.id, "assistant", f"answer {i}\n\nwith a second paragraph", finish_reason="stop")
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        screen = await ready(pilot)
        assert screen.chat_id == chat.id
        log = screen.query_one(ChatLog)
        await until(pilot, lambda: log.max_scroll_y > 0 and log.scroll_y == log.max_scroll_y)
        # long replies on purpose: sampled, and not ended for repeating themselves
        long_replies = GenerationParams(temperature=0.7, top_p=0.95, max_tokens=60, seed=7, stop_on_repetition=False)
        screen.services.chats.set_params(chat.id, long_replies)
        pace_replies(screen.services.chats, delay=0.02)

        # at the bottom: the view follows the reply
        screen.query_one("#prompt", Input).value = "Tell me a story about a cat."
        await pilot.press("enter")
        await until(pilot, lambda: not screen.generating and screen.status.state == "ready")
        await pilot.pause(0.2)
        assert log.scroll_y == log.max_scroll_y

        # scrolled up to read: the view stays put while the reply grows
        screen.query_one("#prompt", Input).value = "Tell me another story."
        await pilot.press("enter")
        await until(pilot, lambda: screen.generating and len(messages(app)[-1][1]) > 0)
        log.scroll_home(animate=False)
        await pilot.pause(0.1)
        grown_from = log.max_scroll_y
        await until(pilot, lambda: not screen.generating and screen.status.state == "ready")
        await pilot.pause(0.2)
        assert log.max_scroll_y > grown_from
        assert log.scroll_y == 0


async def test_models_screen_pull_cancel_resume_delete(home, tmp_path, monkeypatch, gguf_path):
    from textual.widgets import DataTable, ProgressBar

    from tests.hubserver import HubServer

    server = HubServer(tmp_path / "srv")
    server.add_repo_file("acme/tiny-GGUF", "tiny-q4_1.gguf", gguf_path)
    server.faults["delay_s"] = 0.004  # slow enough to cancel mid-file
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    size = gguf_path.stat().st_size
    app = InternLocalApp(greedy_settings(home))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await ready(pilot)
            await pilot.press("f7")
            await until(pilot, lambda: type(app.screen).__name__ == "ModelsScreen")
            screen = app.screen
            registry = screen.query_one("#registry", DataTable)
            assert registry.row_count >= 15
            screen.query_one("#search", Input).value = "internlm3"
            await until(pilot, lambda: registry.row_count == 1)

            screen.query_one("#pull", Input).value = "hf:acme/tiny-GGUF:*.gguf"
            screen.query_one("#pull", Input).focus()
            await pilot.press("enter")
            bar = screen.query_one("#pull-bar", ProgressBar)
            await until(pilot, lambda: bar.total == size and 0 < bar.progress < size / 2)
            first_progress = bar.progress
            await until(pilot, lambda: bar.progress > first_progress)  # it moves
            await pilot.press("x")
            await until(pilot, lambda: "cancelled" in str(screen.query_one("#pull-info").render()))
            sent_at_cancel = server.total_sent()
            server.faults.pop("delay_s")
            await pilot.press("r")
            local = screen.query_one("#local", DataTable)
            await until(pilot, lambda: "tiny-q4_1" in local.rows, timeout=60)
            assert server.total_sent() - sent_at_cancel < size  # resumed, not restarted
            assert "succeeded" in str(screen.query_one("#pull-info").render())

            local.move_cursor(row=local.get_row_index("tiny-q4_1"))
            local.focus()
            await pilot.press("ctrl+d")
            await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            await pilot.click("#yes")
            await until(pilot, lambda: "tiny-q4_1" not in local.rows)
            assert not app.services.catalog.has_model("tiny-q4_1")
    finally:
        server.close()


async def test_serve_screen_starts_serves_logs_and_stops(home):
    import socket

    import openai
    from textual.widgets import DataTable

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f8")
        await until(pilot, lambda: type(app.screen).__name__ == "ServeScreen")
        screen = app.screen
        screen.query_one("#port", Input).value = str(port)
        screen.query_one("#slots", Input).value = "2"
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "serving" in str(screen.query_one("#state").render()), timeout=90)
        assert f"127.0.0.1:{port}/v1" in str(screen.query_one("#state").render())
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="default",
            temperature=0,
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": QUESTION},
            ],
        )
        assert "Paris" in reply.choices[0].message.content
        log = screen.query_one("#log", DataTable)
        await until(pilot, lambda: log.row_count >= 1, timeout=30)
        assert "/v1/chat/completions" in str(log.get_row_at(log.row_count - 1))
        totals = screen.query_one("#totals")
        assert "loaded: smollm2-135m-instruct-q4_1 (kept)" in str(totals.render())  # what the server holds
        process = screen.process
        await pilot.press("ctrl+s")
        await until(pilot, lambda: "stopped" in str(screen.query_one("#state").render()), timeout=30)
        assert process.poll() is not None


async def test_eval_screen_runs_and_shows_the_leaderboard(home):
    from textual.widgets import DataTable, SelectionList

    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f9")
        await until(pilot, lambda: type(app.screen).__name__ == "EvalScreen")
        screen = app.screen
        models, tasks = screen.query_one("#models", SelectionList), screen.query_one("#tasks", SelectionList)
        await until(pilot, lambda: tasks.option_count > 0)
        assert models.selected == ["smollm2-135m-instruct-q4_1"]  # the default chat model is ticked
        tasks.deselect_all()
        tasks.select("capitals_en")
        screen.query_one("#limit", Input).value = "4"
        await pilot.press("ctrl+r")
        board = screen.query_one("#board", DataTable)
        await until(pilot, lambda: board.row_count == 1, timeout=120)
        task, metric, score = map(str, board.get_row_at(0))
        assert (task, metric) == ("capitals_en [first 4]", "acc") and float(score.split()[0]) > 0.5
        board.focus()
        board.move_cursor(row=0, column=2)
        await pilot.press("enter")
        items = screen.query_one("#items", DataTable)
        await until(pilot, lambda: items.row_count == 4)
        assert [items.get_row_at(i)[1] for i in range(4)] == ["Paris", "Tokyo", "Rome", "Berlin"]
        await pilot.press("ctrl+e")
        [md] = (home / "exports").glob("leaderboard-*.md")
        assert md.read_text().splitlines()[2].startswith("| capitals_en [first 4] | acc | 1.0000")
        assert md.with_suffix(".csv").is_file() and md.with_suffix(".json").is_file()


async def test_train_screen_starts_a_recipe_draws_the_curve_stops_resumes_and_previews(home, hf_model_dir):
    """One keystroke on a recipe starts the job; the curve follows metrics.jsonl; x stops, r resumes, p previews."""
    from textual.widgets import DataTable

    from internlocal.bootstrap import bootstrap
    from internlocal.hub.library import import_model
    from internlocal.hub.store import Store
    from internlocal.tui.screens.train import MaskPreview

    # the embedded GGUF's Hugging Face conversion, as `models convert` records it (spares the job 20 s)
    services = bootstrap(greedy_settings(home))
    gguf = services.catalog.get_model("smollm2-135m-instruct-q4_1")
    converted = import_model(
        services.catalog, Store(services.settings.store_dir), hf_model_dir, name="smollm2-135m-instruct-hf"
    )
    services.catalog.add_lineage(("model", gguf.id), ("model", converted.id), "convert.gguf_to_hf", {})
    services.close()

    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await pilot.press("f10")
        await until(pilot, lambda: type(app.screen).__name__ == "TrainScreen")
        screen = app.screen
        recipes = screen.query_one("#recipes", DataTable)
        await until(pilot, lambda: recipes.row_count >= 7)
        assert "✓ fits" in recipes.get_row("smollm2-135m_qlora_cpu")
        assert recipes.get_row("internlm2_5-7b_qlora_gpu8")[4].startswith("?")  # no GPU here: no verdict

        recipes.move_cursor(row=recipes.get_row_index("smollm2-135m_qlora_cpu"))
        recipes.focus()
        await pilot.press("p")
        await until(pilot, lambda: isinstance(app.screen, MaskPreview), timeout=60)
        assert any(t for _, t in app.screen.tokens) and not all(t for _, t in app.screen.tokens)
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)

        await pilot.press("enter")  # one keystroke: the run starts
        await until(pilot, lambda: len(screen._steps) >= 2, timeout=180)
        run = screen.watched
        assert run is not None and screen.query_one("#bar").total == 24
        assert "tok/s" in str(screen.query_one("#info").render()) and "estimated" in str(
            screen.query_one("#info").render()
        )
        await pilot.press("x")
        await until(pilot, lambda: app.services.catalog.get_train_run(run.id).status == "stopped", timeout=120)
        stopped_at = max(s for s, _ in screen._steps)
        assert list((home / "runs" / run.name / "checkpoints").glob(f"step-{stopped_at}"))
        await pilot.press("r")
        await until(pilot, lambda: max(s for s, _ in screen._steps) > stopped_at, timeout=180)
        steps = [s for s, _ in screen._steps]
        assert steps == list(range(1, len(steps) + 1))  # one continuous curve across the stop
        await pilot.press("x")
        await until(pilot, lambda: app.services.catalog.get_train_run(run.id).status == "stopped", timeout=120)


async def test_train_preview_of_a_pretraining_or_undownloaded_recipe_notifies_and_the_app_stays(home):
    """p on a recipe without a chat dataset at hand says why there is nothing to preview; it never ends the app."""
    from textual.widgets import DataTable

    from internlocal.tui.screens.train import TrainScreen

    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(160, 48)) as pilot:
        await ready(pilot)
        await pilot.press("f10")
        await until(pilot, lambda: isinstance(app.screen, TrainScreen))
        screen = app.screen
        recipes = screen.query_one("#recipes", DataTable)
        await until(pilot, lambda: recipes.row_count >= 7)
        recipes.focus()

        def notified(text: str) -> bool:
            return any(text in n.message for n in app._notifications)

        recipes.move_cursor(row=recipes.get_row_index("smollm2-135m_cpt_cpu"))
        await pilot.press("p")
        await until(pilot, lambda: notified("the preview shows the masking of chat datasets only"))
        recipes.move_cursor(row=recipes.get_row_index("internlm2_5-7b_full_multigpu"))  # an hf: dataset, not fetched
        await pilot.press("p")
        await until(pilot, lambda: notified("hf:HuggingFaceH4/no_robots:data/train-*.parquet is not downloaded yet"))
        assert app.is_running and app.screen is screen


async def test_knowledge_screen_indexes_a_folder_searches_and_opens_a_chat_that_cites(home, tmp_path):
    """F11: name + folder + Enter creates and indexes; a search lists passages with sources; Ctrl+T opens a
    chat answering from the knowledge base, its reply listing the sources it was given."""
    from textual.widgets import DataTable, Static

    from internlocal.engines.base import GenerationParams
    from internlocal.tui.screens.knowledge import KnowledgeScreen

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "paris.md").write_text("# Paris\n\n## Landmarks\n\nThe Eiffel Tower was completed in 1889.\n")
    (docs / "rome.txt").write_text("Rome is the capital of Italy.\n")
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(140, 44)) as pilot:
        await ready(pilot)
        await pilot.press("f11")
        await until(pilot, lambda: isinstance(app.screen, KnowledgeScreen))
        screen = app.screen
        screen.query_one("#kb-name", Input).value = "trips"
        screen.query_one("#folder", Input).value = str(docs)
        screen.query_one("#folder", Input).focus()
        await pilot.press("enter")
        kbs = screen.query_one("#kbs", DataTable)
        await until(pilot, lambda: kbs.row_count == 1 and kbs.get_row("trips")[1] == "2", timeout=180)
        assert "chunks embedded" in str(screen.query_one("#info", Static).render())

        screen.query_one("#query", Input).value = "When was the Eiffel Tower completed?"
        screen.query_one("#query", Input).focus()
        await pilot.press("enter")
        hits = screen.query_one("#hits", DataTable)
        await until(pilot, lambda: hits.row_count >= 1, timeout=60)
        assert hits.get_row_at(0)[1] == "paris.md:5"

        # a file added and synced by the job (another process) is found by the next search in this one
        (docs / "lisbon.md").write_text("# Lisbon\n\nTram 28 runs through the Alfama district.\n")
        kbs.focus()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: kbs.get_row("trips")[1] == "3", timeout=180)
        screen.query_one("#query", Input).value = "Which tram runs through Alfama?"
        screen.query_one("#query", Input).focus()
        await pilot.press("enter")
        await until(pilot, lambda: hits.row_count >= 1 and hits.get_row_at(0)[1] == "lisbon.md:3", timeout=60)

        kbs.focus()
        await pilot.press("ctrl+t")
        await until(pilot, lambda: isinstance(app.screen, ChatScreen))
        chat = chat_screen(app)
        chat_row = app.services.catalog.get_chat(chat.chat_id)
        assert (chat_row.mode, chat_row.kb_name) == ("kb", "trips") and "kb trips" in str(chat.status.render())
        app.services.chats.set_params(chat.chat_id, GenerationParams.greedy(max_tokens=40))
        prompt = chat.query_one("#prompt", Input)
        prompt.value = "When was the Eiffel Tower completed?"
        prompt.focus()
        await pilot.press("enter")
        await until(
            pilot, lambda: len(messages(app)) == 2 and not chat.generating and chat.status.state == "ready", timeout=120
        )
        assert "1889" in messages(app)[1][1]
        reply_view = list(chat.query(MessageView))[1]
        assert "[1] paris.md:5" in reply_view._stats


def test_the_first_paint_imports_no_catalog_no_model_runtime_and_no_unopened_screen():
    """What `internlocal` imports before its first frame: the console script, the app and the Chat screen.
    The catalog (sqlmodel/SQLAlchemy), the model runtimes and every other screen load later (start-up
    regressed to a 0.84 s first paint when a screen's widget imported the catalog schema)."""
    import json
    import subprocess
    import sys

    probe = (
        "import json, sys\n"
        "import internlocal.cli.entry\n"
        "from internlocal.tui.app import InternLocalApp\n"
        "app = InternLocalApp()\n"
        "first = InternLocalApp.MODES[InternLocalApp.DEFAULT_MODE]()\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    loaded = set(
        json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout)
    )
    heavy = {
        "sqlmodel",
        "sqlalchemy",
        "torch",
        "transformers",
        "chromadb",
        "sentence_transformers",
        "peft",
        "llama_cpp",
    }
    assert not {m.split(".")[0] for m in loaded} & heavy
    assert not [m for m in loaded if m.startswith("internlocal.catalog")]
    screens = {m.rsplit(".", 1)[1] for m in loaded if m.startswith("internlocal.tui.screens.")}
    assert screens <= {"base", "chat"}, screens  # dialogs and the other screens load when first opened
