"""Eval screen: run tasks on a model as a job, the leaderboard (tasks × models), per-item drill-down."""

from __future__ import annotations

import json

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, DataTable, Footer, Input, Label, ProgressBar, Static

from internlocal.errors import UserError
from internlocal.tui.widgets.job_watch import JobWatcher


class EvalScreen(Screen):
    DEFAULT_CSS = """
    EvalScreen .heading { text-style: bold; padding: 0 1; background: $panel; }
    EvalScreen #form { height: 3; }
    EvalScreen #form Label { padding: 1 1 0 1; }
    EvalScreen #model { width: 1fr; }
    EvalScreen #tasks { width: 2fr; }
    EvalScreen #limit { width: 8; }
    EvalScreen #status { height: 2; padding: 0 1; }
    EvalScreen #board { height: 1fr; }
    EvalScreen #items { height: 1fr; }
    """
    BINDINGS = [Binding("ctrl+r", "run", "Run evaluation", priority=True)]

    def __init__(self) -> None:
        super().__init__()
        self.watcher = JobWatcher()

    def compose(self) -> ComposeResult:
        yield Static("Evaluate  —  benchmarks and your own tasks; Enter on a score shows the model's answers", classes="heading")
        with Horizontal(id="form"):
            yield Label("model")
            yield Input(placeholder="catalog model (empty: the default chat model)", id="model")
            yield Label("tasks")
            yield Input("capitals_en capitals_zh capitals_en_qa sample_text", id="tasks")
            yield Label("limit")
            yield Input("", id="limit", restrict=r"[0-9]*")
            yield Button("Run", id="run", variant="success")
        with Vertical(id="status"):
            yield ProgressBar(id="bar", show_eta=True)
        yield DataTable(id="board", cursor_type="cell", zebra_stripes=True)
        yield DataTable(id="items", cursor_type="row", zebra_stripes=True)
        yield Footer()

    @property
    def services(self):
        return self.app.services  # type: ignore[attr-defined]

    def on_mount(self) -> None:
        items = self.query_one("#items", DataTable)
        for column in ("#", "target", "answer", "score"):
            items.add_column(column, key=column)
        self.query_one("#bar", ProgressBar).display = False
        self.set_interval(0.5, self.poll)
        self.refresh_board()

    def on_screen_resume(self) -> None:
        self.refresh_board()

    # -- leaderboard -------------------------------------------------------------------------------

    def refresh_board(self) -> None:
        if self.services is None:
            return
        runs = self.services.catalog.eval_runs()
        latest = {(r.task, r.model_name): r for r in runs}
        models = sorted({m for _, m in latest})
        tasks = sorted({t for t, _ in latest})
        board = self.query_one("#board", DataTable)
        board.clear(columns=True)
        board.add_column("task", key="task")
        for m in models:
            board.add_column(m, key=m)
        for t in tasks:
            reference = next((latest[(t, m)] for m in models if (t, m) in latest), None)
            cells = []
            for m in models:
                r = latest.get((t, m))
                if r is None or not r.metrics:
                    cells.append("-")
                    continue
                metric, value = next(iter(r.metrics.items()))
                err = r.stderr.get(metric)
                mark = "" if reference and (r.task_version, r.prompt_hash) == (reference.task_version, reference.prompt_hash) else " ≠"
                cells.append(f"{metric} {value:.3f}" + (f" ±{err:.3f}" if err and err == err else "") + mark)
            board.add_row(t, *cells, key=t)
        self._latest = latest

    @on(DataTable.CellSelected, "#board")
    def show_items(self, event: DataTable.CellSelected) -> None:
        task = str(event.cell_key.row_key.value)
        model = str(event.cell_key.column_key.value)
        run = getattr(self, "_latest", {}).get((task, model))
        table = self.query_one("#items", DataTable)
        table.clear()
        if run is None:
            return
        for item in self.services.catalog.eval_items(run.id):
            scores = json.loads(item.scores_json)
            score = scores.get("acc", scores.get("exact_match", scores.get("loglikelihood")))
            table.add_row(str(item.idx), (item.target or "")[:40], (item.response or "")[:60], f"{score:.3g}" if score is not None else "-")

    # -- runs --------------------------------------------------------------------------------------

    @on(Button.Pressed, "#run")
    def pressed(self) -> None:
        self.action_run()

    def action_run(self) -> None:
        from internlocal.evals.job import run_eval
        from internlocal.evals.tasks import get_task

        if self.services is None:
            return
        model = self.query_one("#model", Input).value.strip() or self.services.chats.default_model().name
        tasks = self.query_one("#tasks", Input).value.split()
        limit = self.query_one("#limit", Input).value.strip()
        try:
            self.services.catalog.get_model(model)
            for name in tasks:
                get_task(name, self.services.settings.home)
        except UserError as exc:
            self.notify(str(exc), severity="error")
            return
        job = self.services.jobs.submit(run_eval, {"model": model, "tasks": tasks, "limit": int(limit) if limit else None},
                                        kind="eval.run", title=f"Eval {model}")
        self.watcher.watch(job.id)
        self.query_one("#bar", ProgressBar).display = True
        self.notify(f"Evaluating {model} on {len(tasks)} task(s) (job {job.id})")

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
