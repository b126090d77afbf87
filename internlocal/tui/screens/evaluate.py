"""Eval screen: run tasks on a model as a job, the leaderboard (tasks × models), per-item drill-down."""

from __future__ import annotations

import contextlib
import json
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, DataTable, Footer, Input, Label, ProgressBar, SelectionList, Static

from internlocal.errors import UserError
from internlocal.tui.screens.base import AppScreen
from internlocal.tui.widgets.job_watch import JobWatcher


class EvalScreen(AppScreen):
    DEFAULT_CSS = """
    EvalScreen .heading { text-style: bold; padding: 0 1; background: $panel; }
    EvalScreen #pickers { width: 40; }
    EvalScreen #pickers SelectionList { height: 1fr; border: round $primary; }
    EvalScreen #limit-row { height: 3; }
    EvalScreen #limit-row Label { padding: 1 1 0 1; }
    EvalScreen #limit { width: 10; }
    EvalScreen #status { height: 2; padding: 0 1; }
    EvalScreen #board { height: 1fr; }
    EvalScreen #items { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run", "Run evaluation", priority=True),
        Binding("ctrl+e", "export", "Export leaderboard", priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.watcher = JobWatcher()

    def compose(self) -> ComposeResult:
        yield Static(
            "Evaluate  —  tick models and tasks, Ctrl+R runs them; Enter on a score shows the model's answers",
            classes="heading",
        )
        with Horizontal():
            with Vertical(id="pickers"):
                models = SelectionList[str](id="models")
                models.border_title = "models"
                yield models
                tasks = SelectionList[str](id="tasks")
                tasks.border_title = "tasks"
                yield tasks
                with Horizontal(id="limit-row"):
                    yield Label("first")
                    yield Input("", id="limit", restrict=r"[0-9]*", placeholder="all")
                    yield Label("items")
                    yield Button("Run", id="run", variant="success")
            with Vertical():
                with Vertical(id="status"):
                    yield ProgressBar(id="bar", show_eta=True)
                yield DataTable(id="board", cursor_type="cell", zebra_stripes=True)
                yield DataTable(id="items", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        items = self.query_one("#items", DataTable)
        for column in ("#", "target", "answer", "score"):
            items.add_column(column, key=column)
        self.query_one("#bar", ProgressBar).display = False
        self.set_interval(0.5, self.poll)

    def on_screen_resume(self) -> None:
        self.refresh_pickers()
        self.refresh_board()

    def refresh_pickers(self) -> None:
        """Catalog chat models (the default ticked at first) and every task; ticks are kept across refreshes."""
        from internlocal.evals.tasks import all_tasks

        if self.services is None:
            return
        models = self.query_one("#models", SelectionList)
        chosen = set(models.selected)
        if not chosen:
            with contextlib.suppress(UserError):  # no chat model yet: nothing ticked
                chosen = {self.ready_services.chats.default_model().name}
        models.clear_options()
        models.add_options(
            [(m.name, m.name, m.name in chosen) for m in self.ready_services.catalog.list_models(kind="chat")]
        )
        tasks = self.query_one("#tasks", SelectionList)
        chosen = set(tasks.selected) or {"capitals_en", "capitals_zh", "capitals_en_qa", "sample_text"}
        tasks.clear_options()
        try:
            found = all_tasks(self.ready_services.settings.home)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        tasks.add_options(
            [(f"{t.name}  ({t.output_type.replace('_', ' ')})", t.name, t.name in chosen) for t in found.values()]
        )

    # -- leaderboard -------------------------------------------------------------------------------

    def refresh_board(self) -> None:
        from internlocal.evals.leaderboard import build_from_catalog, format_score, format_value, group_label

        if self.services is None:
            return
        leaderboard = build_from_catalog(self.ready_services.catalog, self.ready_services.settings.home)
        board = self.query_one("#board", DataTable)
        board.clear(columns=True)
        board.add_column("task", key="task")
        board.add_column("metric", key="metric")
        for m in leaderboard.models:
            board.add_column(m, key=m)
        self._rows = {}
        for number, row in enumerate(leaderboard.rows):
            key = f"row-{number}"
            self._rows[key] = row
            # Text, not str: a str cell is read as markup and "[first 8]" would vanish as a tag
            board.add_row(
                Text(row.label),
                Text(row.metric),
                *(Text(format_score(row.scores.get(m), "-")) for m in leaderboard.models),
                key=key,
            )
        for number, group in enumerate(leaderboard.groups):
            board.add_row(
                Text(group_label(group), style="bold"),
                Text(group.metric),
                *(Text(format_value(group.values[m], "-"), style="bold") for m in leaderboard.models),
                key=f"group-{number}",
            )

    def action_export(self) -> None:
        """The leaderboard as Markdown, CSV and JSON files in <home>/exports (the same as `eval results --format`)."""
        from datetime import datetime

        from internlocal.evals.leaderboard import build_from_catalog

        if self.services is None:
            return
        leaderboard = build_from_catalog(self.ready_services.catalog, self.ready_services.settings.home)
        if not leaderboard.rows:
            self.notify("Nothing to export yet: run an evaluation first.", severity="warning")
            return
        folder = self.ready_services.settings.home / "exports"
        stem = folder / f"leaderboard-{datetime.now():%Y%m%d-%H%M%S}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for suffix, text in (
                (".md", leaderboard.to_markdown()),
                (".csv", leaderboard.to_csv()),
                (".json", leaderboard.to_json()),
            ):
                stem.with_suffix(suffix).write_text(text, encoding="utf-8")
        except OSError as exc:
            self.notify(f"Could not write the export: {exc}", severity="error")
            return
        self.notify(f"Leaderboard saved as {stem}.md / .csv / .json")

    @on(DataTable.CellSelected, "#board")
    def show_items(self, event: DataTable.CellSelected) -> None:
        row = getattr(self, "_rows", {}).get(str(event.cell_key.row_key.value))
        score = row.scores.get(str(event.cell_key.column_key.value)) if row else None
        table = self.query_one("#items", DataTable)
        table.clear()
        if score is None:
            return
        for item in self.ready_services.catalog.eval_items(score.run):
            scores = json.loads(item.scores_json)
            value = scores.get("acc", scores.get("exact_match", scores.get("loglikelihood")))
            answer = (
                item.response
                if item.response is not None
                else (f"skipped: {scores['skipped']}" if "skipped" in scores else "")
            )
            table.add_row(
                str(item.idx), (item.target or "")[:40], answer[:60], f"{value:.3g}" if value is not None else "-"
            )

    # -- runs --------------------------------------------------------------------------------------

    @on(Button.Pressed, "#run")
    def pressed(self) -> None:
        self.action_run()

    def action_run(self) -> None:
        from internlocal.services.evaluation import start_eval

        if self.services is None:
            return
        models = list(self.query_one("#models", SelectionList).selected)
        tasks = list(self.query_one("#tasks", SelectionList).selected)
        limit = self.query_one("#limit", Input).value.strip()
        if not models or not tasks:
            self.notify("Tick at least one model and one task.", severity="warning")
            return
        try:
            job = start_eval(self.ready_services, models, tasks, limit=int(limit) if limit else None)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        self.watcher.watch(job.id)
        self.query_one("#bar", ProgressBar).display = True
        self.notify(f"Evaluating {', '.join(models)} on {len(tasks)} task(s) (job {job.id})")

    def poll(self) -> None:
        state = self.watcher.update(self.services)
        if state is None:
            return
        job, p, ended = state
        if p.total:
            self.query_one("#bar", ProgressBar).update(total=p.total, progress=p.done)
        if ended:
            self.refresh_board()
            if job.status == "succeeded":
                self.notify("Evaluation finished")
            else:
                self.notify(job.error or job.status, severity="error", timeout=10)
