"""Every screen on the terminals people have: SVG snapshots at 80×24 and 120×40, and keyboard-only flows at 80×24.

The snapshots (pytest-textual-snapshot, the Textual project's own tool) are reviewed and committed under
``tests/__snapshots__``; a layout change fails here until it is looked at and accepted with
``make test-snapshots-update``. Free memory is fixed (8 GiB, no GPU) so what "fits" is the same on every machine,
and the catalog is a fixed one with something in every table: two chats, a finished finetune with its loss curve,
a score on the leaderboard, a finished and a failed job (nothing in it depends on the time or the machine).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections import namedtuple
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from internlocal.tui.app import InternLocalApp
from tests.conftest import QUESTION, use_copy_of
from tests.test_tui import greedy_settings, ready, until

GIB = 1024**3
SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


@pytest.fixture
def fixed_machine(monkeypatch):
    """8 GiB of free RAM and no GPU, whatever this machine has: the fit columns are the same everywhere."""
    import psutil

    import internlocal.doctor

    memory = namedtuple("svmem", "total available percent used free")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: memory(16 * GIB, 8 * GIB, 50.0, 8 * GIB, 8 * GIB))
    monkeypatch.setattr(internlocal.doctor, "gpus", lambda: [])


# a finished run's forgetting guard, as the job records it: one task kept, one lost
GUARD = {
    "enabled": True,
    "base_model": "smollm2-135m-instruct-q4_1",
    "result_model": "smollm2-135m_qlora_cpu-1-q8_0",
    "tasks": [
        {"task": "capitals_en_qa", "metric": "exact_match", "base": 0.7, "result": 0.2, "change": -0.5, "worse": True},
        {
            "task": "sample_text",
            "metric": "token_perplexity",
            "base": 21.3,
            "result": 23.1,
            "change": 0.08,
            "worse": False,
        },
    ],
    "knobs": ["replay.ratio=3", "epochs=4", "lr=5.0e-04"],
    "warning": "The finetune lost general ability: capitals_en_qa exact_match 0.70 → 0.20 (limits: a fall of 0.1 in "
    "score, a rise of 200% in perplexity). Train more gently (epochs=4 or lr=5.0e-04) or mix in general examples the "
    "base answered (replay.ratio=3).",
}


def seed_catalog(home: Path) -> None:
    """Rows in every table the screens show, with fixed values (no times, no machine-dependent numbers)."""
    from internlocal.bootstrap import bootstrap
    from internlocal.catalog.schema import EvalRun, Job, TrainRun
    from internlocal.evals.tasks import get_task

    services = bootstrap(greedy_settings(home))
    catalog = services.catalog
    model = "smollm2-135m-instruct-q4_1"

    older = services.chats.new_chat()
    catalog.update_chat(older.id, title="Packing list for Lisbon")
    chat = services.chats.new_chat()
    catalog.update_chat(chat.id, title="Capital of France")
    catalog.add_message(chat.id, "user", QUESTION)
    catalog.add_message(
        chat.id, "assistant", "Paris.", model_name=model, completion_tokens=3, tokens_per_s=52.0, ttft_ms=41.0
    )

    run_dir = home / "runs" / "smollm2-135m_qlora_cpu-1"
    run_dir.mkdir(parents=True)
    events = [
        {"type": "step", "step": s, "total_steps": 24, "epoch": s // 8, "loss": round(2.6 * 0.9**s + 0.3, 5),
         "tokens_per_s": 410.0, "peak_memory": 1_503_238_553, "consumed_tokens": 512 * s, "eta": 4.0 * (24 - s)}
        for s in range(1, 25)
    ]  # fmt: skip
    events.insert(8, {"type": "eval", "step": 8, "val_loss": 1.62, "val_ppl": 5.05, "samples": [
        {"prompt": "Who is the project's mascot?", "answer": "Ziggy the otter."}]})  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events), encoding="utf-8")
    catalog.add_train_run(
        TrainRun(
            name=run_dir.name,
            recipe="smollm2-135m_qlora_cpu",
            base_model=model,
            run_dir=str(run_dir),
            status="succeeded",
            summary_json=json.dumps({"final_loss": events[-1]["loss"], "guard": GUARD}),
        )
    )

    task = get_task("capitals_en", home)
    catalog.add_eval_run(
        EvalRun(
            model_name=model,
            task=task.name,
            task_version=str(task.version),
            prompt_hash=task.prompt_hash(),
            n_items=40,
            metrics_json=json.dumps({"acc": 0.925, "acc_norm": 0.9}),
        ),
        [],
    )

    for kind, title, status, events_written in (
        ("models.pull", "Pull smollm2-360m-instruct", "succeeded",
         [{"type": "progress", "t": 1.0, "done": 386_000_000, "total": 386_000_000, "unit": "bytes",
           "message": "smollm2-360m-instruct-q8_0: pulled"}]),
        ("eval.run", "Eval my-finetune on capitals_en", "failed", [{"type": "error", "message": "no such model"}]),
    ):  # fmt: skip
        job = catalog.add_job(Job(kind=kind, target="seeded", title=title, status=status, events_path=""))
        path = services.jobs.events_path(job.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(e) + "\n" for e in events_written), encoding="utf-8")
        catalog.update_job(job.id, events_path=str(path), error="no such model" if status == "failed" else None)
    services.close()


@pytest.fixture(scope="session")
def seeded_template(template_home, tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("seeded") / "home"
    shutil.copytree(template_home, home)
    seed_catalog(home)
    return home


@pytest.fixture
def seeded_home(seeded_template, tmp_path, monkeypatch) -> Path:
    return use_copy_of(seeded_template, tmp_path, monkeypatch)


def _wait(pilot, predicate, timeout: float = 60.0):
    return until(pilot, predicate, timeout)


async def _open(pilot, key: str, screen_name: str, loaded) -> None:
    await ready(pilot)
    if key:
        await pilot.press(key)
        await _wait(pilot, lambda: type(pilot.app.screen).__name__ == screen_name)
    await _wait(pilot, lambda: loaded(pilot.app.screen))
    # a screen may have started its loading twice (on mount, and again when the services came up): let every
    # worker finish, so that a late one cannot redraw a table between the check above and the snapshot
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(pilot.app.workers.wait_for_complete(), timeout=30)
    await _wait(pilot, lambda: loaded(pilot.app.screen))
    from textual.widgets import Input

    for box in pilot.app.screen.query(Input):  # a blinking cursor would be on or off depending on the moment
        box.cursor_blink = False
    await pilot.pause(0.3)


def _rows(selector: str, at_least: int = 1):
    return lambda screen: screen.query_one(selector).row_count >= at_least


SCREENS = {
    # name: (key, screen class, what shows that it has loaded)
    "chat": ("", "ChatScreen", lambda s: s._ready and s.status.state == "ready"),
    "jobs": ("f6", "JobsScreen", _rows("#jobs", 2)),
    "models": ("f7", "ModelsScreen", lambda s: _rows("#local", 2)(s) and _rows("#registry", 15)(s)),
    "serve": ("f8", "ServeScreen", lambda s: True),
    "eval": (
        "f9",
        "EvalScreen",
        lambda s: "items" in str(s.query_one("#estimate").render()) and _rows("#board", 1)(s),
    ),
    "train": ("f10", "TrainScreen", lambda s: _rows("#recipes", 15)(s) and len(s._steps) == 24 and s._evals),
    "knowledge": ("f11", "KnowledgeScreen", lambda s: True),
    "help": ("f1", "HelpScreen", lambda s: True),
}


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("screen", list(SCREENS))
def test_every_screen_matches_its_reviewed_snapshot(screen, size, seeded_home, fixed_machine, snap_compare):
    key, name, loaded = SCREENS[screen]

    async def open_screen(pilot):
        await _open(pilot, key, name, loaded)

    app = InternLocalApp(greedy_settings(seeded_home))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=open_screen)


# -- keyboard-only flows on an 80×24 terminal, from a fresh data directory ----------------------------------------


async def type_text(pilot, text: str) -> None:
    for char in text:
        await pilot.press("space" if char == " " else char)


async def open_train(pilot):
    """F10 from the Chat screen, until every recipe is listed: the screen and its recipe table."""
    from internlocal.tui.screens.train import TrainScreen
    from internlocal.tui.widgets.fitted_table import FittedTable

    await ready(pilot)
    await pilot.press("f10")
    await _wait(pilot, lambda: isinstance(pilot.app.screen, TrainScreen))
    recipes = pilot.app.screen.query_one("#recipes", FittedTable)
    await _wait(pilot, lambda: recipes.row_count >= 15)
    # the table is laid out again on the refresh after its rows arrive; under load the test can run before it
    await _wait(pilot, lambda: recipes.size.height > 1)
    return pilot.app.screen, recipes


async def test_train_at_80x24_shows_what_fits_first_and_a_filter_and_enter_start_the_cpu_qlora_recipe(
    home, fixed_machine
):
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(80, 24)) as pilot:
        _, recipes = await open_train(pilot)
        assert recipes.size.height - 1 >= 6  # at least six recipe rows visible below the header
        fits = [recipes.cells(key)["fit"] for key in (str(r.key.value) for r in recipes.ordered_rows)]
        first_unfit = next(i for i, fit in enumerate(fits) if fit != "✓ fits")
        assert first_unfit >= 5 and all(fit != "✓ fits" for fit in fits[first_unfit:])  # the ones that fit first
        assert {"recipe", "memory", "fit"} <= set(recipes.shown_columns)

        await type_text(pilot, "qlora")  # the filter box has the focus on arrival
        await _wait(pilot, lambda: recipes.row_count == 5)  # three QLoRA finetunes, two QLoRA DPO recipes
        assert recipes.highlighted_key == "smollm2-135m_qlora_cpu"  # the one that fits, first
        await pilot.press("enter")
        await _wait(pilot, lambda: any(j.kind == "train.run" for j in app.services.catalog.list_jobs()))
        [job] = [j for j in app.services.catalog.list_jobs() if j.kind == "train.run"]
        assert job.params["recipe"] == "smollm2-135m_qlora_cpu"
        app.services.jobs.cancel(job.id)
        # the worker stops at its next check; on a loaded machine it may still be importing torch, so the test waits
        # for it (and forces it after a minute) rather than leaving it to the stray-process check's 15 s
        try:
            await _wait(pilot, lambda: not _worker_alive(app.services.catalog.get_job(job.id)))
        except AssertionError:
            app.services.jobs.cancel(job.id, force=True)


def _worker_alive(job) -> bool:
    import psutil

    if not job.pid:
        return job.status in ("queued", "running")
    try:
        return psutil.Process(job.pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def test_train_asks_before_starting_a_gpu_recipe_where_no_gpu_is_visible(home, fixed_machine):
    from internlocal.tui.screens.dialogs import ConfirmDialog

    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(80, 24)) as pilot:
        screen, recipes = await open_train(pilot)
        await type_text(pilot, "7b_qlora")
        await _wait(pilot, lambda: recipes.row_count == 1)
        await pilot.press("enter")
        await _wait(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        question = app.screen.question
        assert "GPU recipe" in question and "GiB of GPU memory" in question and "no GPU is visible" in question
        await pilot.press("escape")
        await _wait(pilot, lambda: app.screen is screen)
        await pilot.pause(0.5)
        assert not [j for j in app.services.catalog.list_jobs() if j.kind == "train.run"]  # nothing was started


async def test_models_at_80x24_search_and_enter_pull_from_a_loopback_hub_and_a_big_one_asks_first(
    home, tmp_path, monkeypatch, gguf_path, fixed_machine
):
    from internlocal.tui.screens.dialogs import ConfirmDialog
    from internlocal.tui.screens.models import ModelsScreen
    from internlocal.tui.widgets.fitted_table import FittedTable
    from tests.hubserver import HubServer

    server = HubServer(tmp_path / "srv")
    # the registry's SmolLM2-360M GGUF, served from 127.0.0.1 (its bytes are the embedded model's)
    server.add_repo_file("HuggingFaceTB/SmolLM2-360M-Instruct-GGUF", "smollm2-360m-instruct-q8_0.gguf", gguf_path)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    app = InternLocalApp(greedy_settings(home))
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await ready(pilot)
            await pilot.press("f7")
            await _wait(pilot, lambda: isinstance(app.screen, ModelsScreen))
            screen = app.screen
            registry = screen.query_one("#registry", FittedTable)
            await _wait(pilot, lambda: registry.row_count >= 15)
            assert {"name", "size", "memory", "fit"} <= set(registry.shown_columns)

            await type_text(pilot, "1.7b")  # 1.06 GB: over the 1 GB that asks first
            await _wait(pilot, lambda: registry.row_count == 1)
            await pilot.press("enter")
            await _wait(pilot, lambda: isinstance(app.screen, ConfirmDialog))
            assert "1.06 GB download" in app.screen.question and "1.7 GB of memory" in app.screen.question
            await pilot.press("escape")
            await _wait(pilot, lambda: app.screen is screen)
            assert not [j for j in app.services.catalog.list_jobs() if j.kind == "models.pull"]

            search = screen.query_one("#search")
            search.value = ""
            await type_text(pilot, "360m")
            await _wait(pilot, lambda: registry.row_count == 1)
            await pilot.press("enter")  # small: pulled at once
            local = screen.query_one("#local", FittedTable)
            await _wait(pilot, lambda: "smollm2-360m-instruct-q8_0" in local.rows, timeout=120)
            assert app.services.catalog.get_model("smollm2-360m-instruct-q8_0").size_bytes == gguf_path.stat().st_size
    finally:
        server.close()


async def test_knowledge_at_80x24_adds_a_folder_and_searches_it(home, tmp_path):
    from textual.widgets import Input

    from internlocal.tui.screens.knowledge import KnowledgeScreen
    from internlocal.tui.widgets.fitted_table import FittedTable

    docs = tmp_path / "notes"
    docs.mkdir()
    (docs / "garden.md").write_text("# Garden\n\nThe tomatoes are watered every morning at seven.\n")
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f11")
        await _wait(pilot, lambda: isinstance(app.screen, KnowledgeScreen))
        screen = app.screen
        screen.query_one("#kb-name", Input).focus()
        await type_text(pilot, "garden")
        await pilot.press("tab")
        await type_text(pilot, str(docs))
        await pilot.press("enter")
        kbs = screen.query_one("#kbs", FittedTable)
        await _wait(pilot, lambda: kbs.row_count == 1 and kbs.cells("garden")["files"] == "1", timeout=180)
        screen.query_one("#query", Input).focus()
        await type_text(pilot, "when are the tomatoes watered")
        await pilot.press("enter")
        hits = screen.query_one("#hits")
        await _wait(pilot, lambda: hits.row_count >= 1, timeout=60)
        assert "garden.md" in str(hits.get_row_at(0)[1])


async def test_chat_at_80x24_hides_the_chat_list_behind_ctrl_b(home):
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await ready(pilot)
        sidebar = screen.query_one("#sidebar")
        assert not sidebar.display and screen.query_one("#log").size.width >= 76  # the conversation has the width
        await pilot.press("ctrl+b")
        await _wait(pilot, lambda: sidebar.display and sidebar.size.width > 0)
        assert screen.focused is screen.query_one("#sessions")
        await pilot.press("ctrl+b")
        await _wait(pilot, lambda: not sidebar.display)
        assert screen.focused is screen.query_one("#prompt")
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(120, 40)) as pilot:
        screen = await ready(pilot)
        assert screen.query_one("#sidebar").display  # wide enough: shown, and Ctrl+B hides it
        await pilot.press("ctrl+b")
        await _wait(pilot, lambda: not screen.query_one("#sidebar").display)


async def test_eval_starts_with_the_chats_model_and_the_builtin_tasks_and_says_how_long(home, tmp_path, gguf_path):
    """Not every model × every task: a second chat model and an added task stay unticked until chosen."""
    from textual.widgets import SelectionList

    from internlocal.bootstrap import bootstrap
    from internlocal.evals.tasks import BUILTIN_DIR, add_custom_task
    from internlocal.hub.library import import_model
    from internlocal.hub.store import Store
    from internlocal.tui.screens.evaluate import EvalScreen

    services = bootstrap(greedy_settings(home))
    import_model(services.catalog, Store(services.settings.store_dir), gguf_path, name="my-finetune")
    services.chats.new_chat(model_name="my-finetune")  # the newest chat: the one the Chat screen opens
    services.close()
    data = tmp_path / "quiz.csv"
    data.write_text("question,answer\nWhat is 2+2?,4\n")
    add_custom_task(home, "quiz", data, "qa")
    builtin = sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))

    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(80, 24)) as pilot:
        await ready(pilot)
        await pilot.press("f9")
        await _wait(pilot, lambda: isinstance(app.screen, EvalScreen))
        screen = app.screen
        estimate = screen.query_one("#estimate")
        await _wait(pilot, lambda: "items" in str(estimate.render()))
        models = screen.query_one("#models", SelectionList)
        tasks = screen.query_one("#tasks", SelectionList)
        assert models.option_count == 2 and list(models.selected) == ["my-finetune"]
        assert tasks.option_count == len(builtin) + 1 and sorted(tasks.selected) == builtin
        items = sum(len(screen._tasks[name].docs) for name in builtin)
        assert f"{items} items" in str(estimate.render()) and "guessed from the model's size" in str(estimate.render())

        screen.query_one("#limit").value = "2"
        await _wait(pilot, lambda: f"{2 * len(builtin)} items" in str(estimate.render()))


def test_the_eval_estimate_uses_this_machines_measured_speed_once_there_is_one(services):
    from internlocal.catalog.schema import EvalRun, Job, utcnow
    from internlocal.evals.tasks import get_task
    from internlocal.services.evaluation import estimate_eval

    task = get_task("capitals_en", services.settings.home)
    model = "smollm2-135m-instruct-q4_1"
    guess = estimate_eval(services, [model], [task])
    assert guess.items == len(task.docs) and not guess.measured

    # an earlier 40-item evaluation job of this model took 20 s: 0.5 s per item
    job = services.catalog.add_job(
        Job(kind="eval.run", target="run_eval", title="Eval", status="queued", events_path=str(services.settings.home))
    )
    started = utcnow()
    finished = (datetime.fromisoformat(started) + timedelta(seconds=20)).isoformat()
    services.catalog.update_job(job.id, status="succeeded", started_at=started, finished_at=finished)
    services.catalog.add_eval_run(
        EvalRun(model_name=model, task="capitals_en", task_version="2", prompt_hash="x", n_items=40, job_id=job.id),
        [],
    )
    measured = estimate_eval(services, [model], [task], limit=10)
    assert measured.measured and measured.items == 10 and measured.seconds == pytest.approx(5.0)
    assert "measured here" in measured.describe()


async def test_a_fitted_table_drops_the_least_important_columns_first_and_brings_them_back():
    """The widget on its own, in a bare app: essential columns always stay."""
    from textual.app import App

    from internlocal.tui.widgets.fitted_table import Column, FittedTable

    class Bare(App):
        def compose(self):
            yield FittedTable([Column("name"), Column("notes", drop=1), Column("size"), Column("kind", drop=2)])

    app = Bare()
    async with app.run_test(size=(100, 10)) as pilot:
        table = app.query_one(FittedTable)
        table.set_rows([("a", ("alpha", "x" * 40, "1 GB", "chat"))])
        await pilot.pause()
        assert table.shown_columns == ("name", "notes", "size", "kind")
        await pilot.resize_terminal(40, 10)
        await pilot.pause()
        assert table.shown_columns == ("name", "size")  # kind (2) went first, then notes (1)
        assert table.get_row("a") == ["alpha", "1 GB"] and table.cells("a")["notes"] == "x" * 40
        await pilot.resize_terminal(60, 10)
        await pilot.pause()
        assert table.shown_columns == ("name", "notes", "size")
        table.put_row("a", ("alpha", "short", "2 GB", "chat"))
        assert table.get_row("a")[2] == "2 GB"
        with pytest.raises(ValueError, match="3 cells for 4 columns"):
            table.set_rows([("b", ("beta", "", "3 GB"))])


async def test_train_shows_a_finished_runs_forgetting_guard_and_its_warning(seeded_home, fixed_machine):
    """The watched run's guard, before → after per task, with the warning in red, also at 80×24."""
    app = InternLocalApp(greedy_settings(seeded_home))
    async with app.run_test(size=(80, 24)) as pilot:
        screen, _ = await open_train(pilot)
        guard = screen.query_one("#guard")
        await _wait(pilot, lambda: guard.display)
        shown = str(guard.render())
        assert "forgetting guard vs smollm2-135m-instruct-q4_1: capitals_en_qa 0.70 → 0.20 ✗" in shown
        assert "sample_text 21.30 → 23.10 ✓" in shown
        assert shown.splitlines()[1] == "lost general ability: try replay.ratio=3 or epochs=4 or lr=5.0e-04"
        assert guard.size.height == 2  # a short terminal keeps it to two lines, each cut to the width


async def test_train_follows_a_preference_run_with_its_reward_margin_and_held_out_accuracy(home, fixed_machine):
    """A DPO run's curve: the loss and the reward margin per step; the line above it says margin and accuracy."""
    from internlocal.bootstrap import bootstrap
    from internlocal.catalog.schema import TrainRun

    services = bootstrap(greedy_settings(home))
    run_dir = home / "runs" / "smollm2-135m_dpo_cpu-1"
    run_dir.mkdir(parents=True)
    step_events = [
        {"type": "step", "step": s, "total_steps": 6, "epoch": 0, "loss": round(0.6931 - 0.1 * s, 4),
         "tokens_per_s": 200.0, "peak_memory": 2 << 30, "eta": 2.0 * (6 - s), "reward_margin": 0.5 * s,
         "reward_accuracy": 1.0, "chosen_logp": -40.0, "rejected_logp": -20.0 - s}
        for s in range(1, 7)
    ]  # fmt: skip
    held_out = {"type": "eval", "step": 0, "val_loss": 0.6931, "val_pairs": 12, "val_reward_margin": 0.0,
                "val_reward_accuracy": 0.75, "val_prefers_chosen": 0.0, "samples": []}  # fmt: skip
    (run_dir / "metrics.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in [held_out, *step_events]), encoding="utf-8"
    )
    services.catalog.add_train_run(
        TrainRun(
            name=run_dir.name,
            recipe="smollm2-135m_dpo_cpu",
            base_model="smollm2-135m-instruct-q4_1",
            run_dir=str(run_dir),
            status="running",
            summary_json="{}",
        )
    )
    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=(120, 40)) as pilot:
        screen, recipes = await open_train(pilot)
        await _wait(pilot, lambda: len(screen._margins) == 6)
        assert screen._margins[-1] == (6, 3.0) and len(screen._steps) == 6
        info = str(screen.query_one("#info").render())
        assert "margin 3.000  ·  accuracy 100%  ·  held-out accuracy 75%" in info
        kinds = {recipes.get_row(name)[1] for name in ("smollm2-135m_dpo_cpu", "smollm2-135m_orpo_cpu")}
        assert kinds == {"lora dpo", "lora orpo"}
