"""Eval screen: run tasks on a model as a job, the leaderboard (tasks × models), per-item drill-down.

It opens with the chat's current model and the built-in sample tasks ticked, and says how many items the
ticked choice is and about how long it takes before Ctrl+R runs it. NeedleBench runs show as a depth × length heat
map: Enter on their score, Ctrl+G for the newest one; Ctrl+N starts one on the ticked model (the default grid)."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Checkbox, DataTable, Input, Label, ProgressBar, SelectionList, Static

from internlocal.errors import UserError
from internlocal.i18n import N_, _
from internlocal.jobs import job_status_label
from internlocal.tui.screens.base import AppScreen
from internlocal.tui.widgets.footer import Footer
from internlocal.tui.widgets.job_watch import JobWatcher

# a task's output type (an identifier in its YAML) → what the task list shows, translated with _() when drawn
OUTPUT_TYPE_LABELS = {
    "multiple_choice": N_("multiple choice"),
    "generate_until": N_("generate until"),
    "perplexity": N_("perplexity"),
    "loglikelihood": N_("loglikelihood"),
}


class EvalScreen(AppScreen):
    DEFAULT_CSS = """
    EvalScreen #pickers { width: 40; }
    EvalScreen #pickers SelectionList { height: 1fr; border: round $primary; }
    EvalScreen #estimate { height: 1; padding: 0 1; color: $text-muted; text-wrap: nowrap; text-overflow: ellipsis; }
    EvalScreen.-narrow #pickers { width: 32; }
    EvalScreen.-narrow #run { min-width: 5; width: auto; }
    EvalScreen #limit-row { height: 3; }
    EvalScreen #limit-row Label { padding: 1 1 0 1; }
    EvalScreen #limit { width: 10; }
    EvalScreen #circular { border: none; padding: 0 1; height: 1; background: transparent; }
    EvalScreen #status { height: 2; padding: 0 1; }
    EvalScreen #board { height: 1fr; }
    EvalScreen #items { height: 1fr; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "run", N_("Run evaluation"), priority=True),
        Binding("ctrl+e", "export", N_("Export"), priority=True),
        Binding("ctrl+n", "needlebench", N_("NeedleBench"), priority=True),
        Binding("ctrl+g", "needle_map", N_("Heat map"), priority=True),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.watcher = JobWatcher()
        self._tasks: dict = {}  # name → Task, as last listed
        self._needle_job: int | None = None  # the NeedleBench job being watched: its heat map opens when it ends
        self._expanded: set[tuple] = set()  # leaderboard rows opened into their categories and subjects

    def compose(self) -> ComposeResult:
        yield Static(
            _("Evaluate  —  tick models and tasks, Ctrl+R runs them; Enter on a score shows the model's answers"),
            classes="heading",
        )
        with Horizontal():
            with Vertical(id="pickers"):
                models = SelectionList[str](id="models")
                models.border_title = _("models")
                yield models
                tasks = SelectionList[str](id="tasks")
                tasks.border_title = _("tasks")
                yield tasks
                with Horizontal(id="limit-row"):
                    yield Label(_("first"))
                    yield Input("", id="limit", restrict=r"[0-9]*", placeholder=_("all"))
                    yield Label(_("items"))
                    yield Button(_("Run"), id="run", variant="success")
                yield Checkbox(
                    _("CircularEval"),
                    id="circular",
                    tooltip=_("Ask each lettered question once per rotation of its options"),
                )
            with Vertical():
                yield Static("", id="estimate")
                with Vertical(id="status"):
                    yield ProgressBar(id="bar", show_eta=True)
                yield DataTable(id="board", cursor_type="cell", zebra_stripes=True)
                yield DataTable(id="items", cursor_type="row", zebra_stripes=True)
        yield Footer()

    def on_mount(self) -> None:
        items = self.query_one("#items", DataTable)
        for key, label in (("#", "#"), ("target", _("target")), ("answer", _("answer")), ("score", _("score"))):
            items.add_column(label, key=key)
        self.query_one("#bar", ProgressBar).display = False
        self.set_interval(0.5, self.poll)

    def on_screen_resume(self) -> None:
        self.refresh_pickers()
        self.refresh_board()

    def refresh_pickers(self) -> None:
        """Catalog chat models and every task; at first the current chat's model and the built-in sample tasks
        are ticked (never everything: that is every finetune × every benchmark). Ticks are kept across refreshes."""
        from internlocal.evals.tasks import BUILTIN_DIR, all_tasks

        if self.services is None:
            return
        models = self.query_one("#models", SelectionList)
        chosen = set(models.selected)
        if not chosen:
            with contextlib.suppress(UserError):  # no chat model yet: nothing ticked
                chosen = {self._current_chat_model()}
        models.clear_options()
        models.add_options(
            [(m.name, m.name, m.name in chosen) for m in self.ready_services.catalog.list_models(kind="chat")]
        )
        tasks = self.query_one("#tasks", SelectionList)
        try:
            found = all_tasks(self.ready_services.settings.home)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        self._tasks = found
        builtin = {t.name for t in found.values() if t.source_path and Path(t.source_path).parent == BUILTIN_DIR}
        chosen = set(tasks.selected) or builtin
        tasks.clear_options()
        tasks.add_options(
            [(f"{t.name}  ({_output_type(t.output_type)})", t.name, t.name in chosen) for t in found.values()]
        )
        self.show_estimate()

    def _current_chat_model(self) -> str:
        """The model of the chat the Chat screen opens (the newest), or the default chat model."""
        chats = self.ready_services.catalog.list_chats()
        if chats:
            return self.ready_services.chats.model_for(chats[0]).name
        return self.ready_services.chats.default_model().name

    @on(SelectionList.SelectedChanged)
    @on(Input.Changed, "#limit")
    @on(Checkbox.Changed, "#circular")
    def show_estimate(self) -> None:
        from internlocal.services.evaluation import estimate_eval

        if self.services is None:
            return
        models = list(self.query_one("#models", SelectionList).selected)
        tasks = [self._tasks[n] for n in self.query_one("#tasks", SelectionList).selected if n in self._tasks]
        limit = self.query_one("#limit", Input).value.strip()
        text = _("Tick a model and a task.")
        if models and tasks:
            try:
                circular = self.query_one("#circular", Checkbox).value
                estimate = estimate_eval(
                    self.ready_services, models, tasks, limit=int(limit) if limit else None, circular=circular
                )
                text = estimate.describe()
            except UserError as exc:
                text = str(exc)
        self.query_one("#estimate", Static).update(text)

    # -- leaderboard -------------------------------------------------------------------------------

    def refresh_board(self) -> None:
        from internlocal.evals.leaderboard import build_from_catalog, format_score, format_value, group_label

        if self.services is None:
            return
        leaderboard = build_from_catalog(self.ready_services.catalog, self.ready_services.settings.home)
        board = self.query_one("#board", DataTable)
        board.clear(columns=True)
        board.add_column(_("task"), key="task")
        board.add_column(_("metric"), key="metric")
        for m in leaderboard.models:
            board.add_column(m, key=m)
        self._rows = {}
        for number, row in enumerate(leaderboard.rows):
            key = f"row-{number}"
            self._rows[key] = row
            details = row.details()
            open_ = self._row_id(row) in self._expanded
            marker = ("▾ " if open_ else "▸ ") if details else ""
            # Text, not str: a str cell is read as markup and "[first 8]" would vanish as a tag
            board.add_row(
                Text(marker + row.label),
                Text(row.metric),
                *(Text(format_score(row.scores.get(m), "-")) for m in leaderboard.models),
                key=key,
            )
            for k, (label, values) in enumerate(details if open_ else []):
                board.add_row(
                    Text("    " + label, style="dim"),
                    Text(row.metric, style="dim"),
                    *(Text(format_value(values.get(m), "-"), style="dim") for m in leaderboard.models),
                    key=f"detail-{number}-{k}",
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
            self.notify(_("Nothing to export yet: run an evaluation first."), severity="warning")
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
            self.notify(_("Could not write the export: {error}").format(error=exc), severity="error")
            return
        self.notify(_("Leaderboard saved as {path}.md / .csv / .json").format(path=stem))

    @staticmethod
    def _row_id(row) -> tuple:
        return (row.task, row.metric, row.variant)

    @on(DataTable.CellSelected, "#board")
    def show_items(self, event: DataTable.CellSelected) -> None:
        from internlocal.evals.needlebench import is_needlebench

        key = str(event.cell_key.row_key.value)
        row = getattr(self, "_rows", {}).get(key)
        if row is not None and str(event.cell_key.column_key.value) == "task" and row.details():
            # Enter on the task's name opens or closes its categories and subjects
            self._expanded ^= {self._row_id(row)}
            self.refresh_board()
            board = self.query_one("#board", DataTable)
            board.move_cursor(row=board.get_row_index(key), column=0)
            return
        score = row.scores.get(str(event.cell_key.column_key.value)) if row else None
        table = self.query_one("#items", DataTable)
        table.clear()
        if score is None or row is None:
            return
        if is_needlebench(row.task):
            self.open_needle_map(score.run)
        for item in self.ready_services.catalog.eval_items(score.run):
            scores = json.loads(item.scores_json)
            value = scores.get("acc", scores.get("exact_match", scores.get("loglikelihood", scores.get("score"))))
            answer = (
                item.response
                if item.response is not None
                else (_("skipped: {reason}").format(reason=scores["skipped"]) if "skipped" in scores else "")
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
            self.notify(_("Tick at least one model and one task."), severity="warning")
            return
        try:
            job = start_eval(
                self.ready_services,
                models,
                tasks,
                limit=int(limit) if limit else None,
                circular=self.query_one("#circular", Checkbox).value,
            )
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        self.watcher.watch(job.id)
        self.query_one("#bar", ProgressBar).display = True
        self.notify(
            _("Evaluating {models} on {count} task(s) (job {job_id})").format(
                models=", ".join(models), count=len(tasks), job_id=job.id
            )
        )

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
                self.notify(_("Evaluation finished"))
                if job.id == self._needle_job:
                    self.open_needle_map((job.result or {}).get("run"))
            else:
                self.notify(job.error or job_status_label(job.status), severity="error", timeout=10)

    # -- NeedleBench -------------------------------------------------------------------------------

    def action_needlebench(self) -> None:
        """NeedleBench (single needle, English, the default grid clipped to the context) on the ticked model."""
        from internlocal.services.needlebench import start_needlebench

        if self.services is None:
            return
        models = list(self.query_one("#models", SelectionList).selected)
        if not models:
            self.notify(_("Tick a model for NeedleBench."), severity="warning")
            return
        try:
            job = start_needlebench(self.ready_services, models[0])
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        self._needle_job = job.id
        self.watcher.watch(job.id)
        self.query_one("#bar", ProgressBar).display = True
        if len(models) > 1:
            message = _("NeedleBench on {model} (job {job_id}) (one model at a time: {others} other ticked)")
        else:
            message = _("NeedleBench on {model} (job {job_id})")
        self.notify(message.format(model=models[0], job_id=job.id, others=len(models) - 1))

    def action_needle_map(self) -> None:
        """The heat map of the newest NeedleBench run."""
        self.open_needle_map(None)

    def open_needle_map(self, run_id: int | None) -> None:
        from internlocal.services.needlebench import needlebench_map

        if self.services is None:
            return
        try:
            heat_map = needlebench_map(self.ready_services, run_id)
        except UserError as exc:
            self.notify(str(exc), severity="warning")
            return
        from internlocal.tui.screens.dialogs import NeedleMapDialog

        self.app.push_screen(NeedleMapDialog(heat_map))


def _output_type(output_type: str) -> str:
    """A task's output type as the task list shows it ("multiple choice"), translated."""
    label = OUTPUT_TYPE_LABELS.get(output_type)
    return _(label) if label is not None else output_type.replace("_", " ")
