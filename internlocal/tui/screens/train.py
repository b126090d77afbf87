"""Train screen: recipes with a fit indicator, one keystroke to start, a live loss curve, save now / stop / resume.

The screen never owns training: Enter submits the finetuning job (which runs the loop in its own
process) and the screen tails the run's ``metrics.jsonl`` — the loss curve, step / ETA, tokens/s
and peak memory come from there. ``p`` shows which tokens of the recipe's data are trained on.

Recipes that fit this machine are listed first, and typing filters the list, so on a small terminal
the recipe to start is one filter and Enter away; below 32 rows the loss curve shrinks (``m`` shows
it full screen).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, ProgressBar, Static

from internlocal.errors import UserError
from internlocal.formatting import human_bytes, human_count, human_duration
from internlocal.i18n import N_, _, label
from internlocal.jobs import job_status_label
from internlocal.tui.screens.base import HEIGHT_BREAKPOINTS, AppScreen
from internlocal.tui.screens.dialogs import ConfirmDialog
from internlocal.tui.widgets.fitted_table import Column, FittedTable
from internlocal.tui.widgets.footer import Footer

if TYPE_CHECKING:
    from internlocal.train.plan import Plan


class MaskPreview(ModalScreen[None]):
    """One training example through the model's chat template; trained tokens highlighted."""

    DEFAULT_CSS = """
    MaskPreview { align: center middle; }
    MaskPreview > VerticalScroll {
        width: 90%; height: 80%; border: thick $primary; background: $surface; padding: 1 2;
    }
    """
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss", N_("Close"))]

    def __init__(self, title: str, tokens: list[tuple[str, bool]]) -> None:
        super().__init__()
        self.title_text, self.tokens = title, tokens

    def compose(self) -> ComposeResult:
        from rich.text import Text

        text = Text()
        for piece, trained in self.tokens:
            text.append(piece, style="bold black on green" if trained else "dim")
        count = sum(1 for __, t in self.tokens if t)
        with VerticalScroll():
            yield Static(
                _("{title}  —  {count} of {total} tokens trained (green)  ·  Esc closes").format(
                    title=self.title_text, count=count, total=len(self.tokens)
                )
            )
            yield Static(text, id="preview-text")


# a training run's status as stored in the catalog → what is shown, translated with _() when drawn
RUN_STATUS_LABELS = {
    "created": N_("created"),
    "running": N_("running"),
    "stopped": N_("stopped"),
    "failed": N_("failed"),
    "finished": N_("finished"),
}


FIT_ORDER = {True: 0, None: 1, False: 2}  # what fits first, then what cannot be judged here, then what does not


def recipe_matches(words: list[str], *fields: str) -> bool:
    """Every typed word is in one of the fields, a recipe's shown cells (the filter box: "qlora cpu", "7b fits")."""
    haystack = " ".join(fields).lower()
    return all(word in haystack for word in words)


class TrainScreen(AppScreen):
    DEFAULT_CSS = """
    TrainScreen #filter { margin: 0 1; }
    TrainScreen #top { height: 1fr; min-height: 8; }
    TrainScreen #recipes { width: 1fr; }
    TrainScreen #runs { width: 40; }
    TrainScreen.-narrow #runs { width: 24; }
    TrainScreen #status { height: 2; padding: 0 1; }
    TrainScreen #status ProgressBar { width: 50; }
    TrainScreen #curve { height: 2fr; }
    TrainScreen.-short #curve { height: 8; }
    TrainScreen #samples { height: 3; padding: 0 1; color: $text-muted; }
    TrainScreen.-short #samples { height: 1; }
    TrainScreen #guard { height: auto; max-height: 4; padding: 0 1; }
    TrainScreen.-short #guard { height: 2; text-wrap: nowrap; text-overflow: ellipsis; }
    """
    VERTICAL_BREAKPOINTS = HEIGHT_BREAKPOINTS
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "save_now", N_("Save now")),
        Binding("x", "stop", N_("Stop")),
        Binding("r", "resume", N_("Resume")),
        Binding("p", "preview", N_("Preview data")),
        Binding("m", "curve", N_("Curve")),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.plans: dict[str, Any] = {}
        self._recipe_rows: list[tuple[str, tuple[str, ...], bool | None]] = []  # name, cells, fits
        self.watched: Any = None  # the TrainRun whose curve is shown
        self._tail: Any = None
        self._steps: list[tuple[int, float]] = []
        self._evals: list[tuple[int, float]] = []
        self._val_ppl: float | None = None
        self._margins: list[tuple[int, float]] = []  # preference tuning: the reward margin per step
        self._val_accuracy: float | None = None  # preference tuning: on the held-out pairs

    def compose(self) -> ComposeResult:
        from textual_plotext import PlotextPlot

        yield Static(
            _("Train  —  Enter starts the highlighted recipe · s save now · x stop · r resume · p preview data"),
            classes="heading",
        )
        yield Input(
            placeholder=_("filter recipes: qlora, cpu, 7b …  (Enter starts the first)"), id="filter", compact=True
        )
        with Horizontal(id="top"):
            yield FittedTable(
                [
                    Column("recipe", N_("recipe")),
                    Column("method", N_("method"), drop=1),
                    Column("hardware", N_("hardware"), drop=2),
                    Column("memory", N_("memory")),
                    Column("fit", N_("fit")),
                ],
                id="recipes",
                cursor_type="row",
                zebra_stripes=True,
            )
            yield FittedTable(
                [Column("run", N_("run")), Column("status", N_("status")), Column("loss", N_("loss"), drop=1)],
                id="runs",
                cursor_type="row",
                zebra_stripes=True,
            )
        with Vertical(id="status"):
            yield ProgressBar(id="bar", show_eta=False)
            yield Static("", id="info")
        yield PlotextPlot(id="curve")
        yield Static("", id="samples")
        yield Static("", id="guard")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#bar", ProgressBar).display = False
        self.query_one("#guard", Static).display = False
        self.query_one("#filter", Input).focus()  # F10, type a filter, Enter starts the first recipe that matches
        self.draw_curve()
        self.load_recipes()
        self.set_interval(1.0, self.poll)

    def on_screen_resume(self) -> None:
        self.refresh_runs()

    # -- recipes and their fit -----------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="plans")
    def load_recipes(self) -> None:
        """Plans (memory estimate vs free memory) off the UI thread: a GPU recipe may import torch."""
        from internlocal.services.training import recipe_rows

        if self.services is None:
            return
        rows: list[tuple[str, tuple[str, ...], bool | None, Plan | None]] = []
        for row in recipe_rows(self.services, measure_gpus=True):
            recipe, plan = row.recipe, row.plan
            if recipe is None:
                rows.append((row.name, (row.name, "-", "-", "-", _("invalid")), False, None))
                continue
            fits = plan.fits if plan else None
            fit = {True: _("✓ fits"), False: _("✗ too big"), None: _("? no GPU") if recipe.on_gpu else "?"}
            memory = human_bytes(plan.estimate.total) if plan and plan.estimate else "?"
            kind = recipe.method if recipe.objective == "sft" else f"{recipe.method} {recipe.objective}"
            rows.append((row.name, (row.name, kind, recipe.hardware, memory, fit[fits]), fits, plan))
        # what fits this machine first (the sort is stable: by name within each group)
        rows.sort(key=lambda r: FIT_ORDER[r[2]])
        self.app.call_from_thread(self._show_recipes, rows)

    def _show_recipes(self, rows: list) -> None:
        self.plans = {name: plan for name, __, __, plan in rows}
        self._recipe_rows = [(name, cells, fits) for name, cells, fits, __ in rows]
        self.show_filtered()
        self.refresh_runs()

    @on(Input.Changed, "#filter")
    def show_filtered(self) -> None:
        words = self.query_one("#filter", Input).value.lower().split()
        table = self.query_one("#recipes", FittedTable)
        table.set_rows((name, cells) for name, cells, __ in self._recipe_rows if recipe_matches(words, *cells))
        if words and table.row_count:
            table.move_cursor(row=0)  # Enter in the box starts the best match: the first that fits

    @on(Input.Submitted, "#filter")
    def filter_submitted(self) -> None:
        self.action_start()

    def key_down(self) -> None:
        # from the filter box, Down (or Esc) goes on into the list, where s / x / r / p / m act
        if self.focused is self.query_one("#filter", Input):
            self.query_one("#recipes", FittedTable).focus()

    def key_escape(self) -> None:
        self.key_down()

    def on_services_ready(self, _message=None) -> None:
        self.load_recipes()

    @on(DataTable.RowSelected, "#recipes")
    def recipe_chosen(self) -> None:
        self.action_start()

    def selected_recipe(self) -> str | None:
        return self.query_one("#recipes", FittedTable).highlighted_key

    # -- runs ------------------------------------------------------------------------------------------

    def refresh_runs(self) -> None:
        if self.services is None:
            return
        runs = self.ready_services.catalog.list_train_runs()
        table = self.query_one("#runs", FittedTable)
        rows = []
        for run in reversed(runs):
            loss = run.summary.get("final_loss")
            rows.append(
                (
                    str(run.id),
                    (
                        run.name,
                        label(RUN_STATUS_LABELS, run.status),
                        f"{loss:.4f}" if isinstance(loss, (int, float)) else "-",
                    ),
                )
            )
        table.set_rows(rows)
        if self.watched is None and runs:
            self.watch_run(runs[-1])

    @on(DataTable.RowHighlighted, "#runs")
    def run_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self.services is None or event.row_key is None:
            return
        run = self.ready_services.catalog.get_train_run(str(event.row_key.value))
        if self.watched is None or run.id != self.watched.id:
            self.watch_run(run)

    def watch_run(self, run) -> None:
        from internlocal.train.metrics import MetricsTail

        self.watched, self._tail, self._steps, self._evals = run, MetricsTail(Path(run.run_dir)), [], []
        self._margins, self._val_accuracy = [], None
        self._val_ppl = None
        self.query_one("#samples", Static).update("")
        self.poll()

    def poll(self) -> None:
        if self.services is None or self.watched is None:
            return
        run = self.ready_services.catalog.get_train_run(self.watched.id)
        if run.status != self.watched.status:
            self.refresh_runs()
        self.watched = run
        self.show_guard(run.summary.get("guard"))
        events, restarted = self._tail.read()
        if restarted:
            self._steps, self._evals, self._margins = [], [], []
        last_step = None
        for event in events:
            kind = event.get("type")
            if kind == "step":
                self._steps = [s for s in self._steps if s[0] < event["step"]] + [(event["step"], event["loss"])]
                if "reward_margin" in event:
                    self._margins = [m for m in self._margins if m[0] < event["step"]] + [
                        (event["step"], event["reward_margin"])
                    ]
                last_step = event
            elif kind == "eval" and event.get("val_loss") is not None:
                self._evals.append((event["step"], event["val_loss"]))
                self._val_ppl = event.get("val_ppl")
                self._val_accuracy = event.get("val_reward_accuracy")
                samples = "  ".join(f"{s['prompt'][:40]} → {s['answer'][:60]}" for s in event.get("samples", []))
                self.query_one("#samples", Static).update(samples)
            elif kind == "resumed":
                self._steps = [s for s in self._steps if s[0] <= event["step"]]
                self._margins = [m for m in self._margins if m[0] <= event["step"]]
        if events:
            self.draw_curve()
        if last_step is not None:
            bar = self.query_one("#bar", ProgressBar)
            bar.display = True
            bar.update(total=last_step["total_steps"], progress=last_step["step"])
            estimate = (run.estimate or {}).get("total_bytes")
            parts = [
                run.name,
                label(RUN_STATUS_LABELS, run.status),
                _("step {step}/{total_steps}").format(step=last_step["step"], total_steps=last_step["total_steps"]),
                _("loss {loss:.4f}").format(loss=last_step["loss"]),
            ]
            if "reward_margin" in last_step:
                parts.append(_("margin {margin:.3f}").format(margin=last_step["reward_margin"]))
                parts.append(_("accuracy {accuracy:.0%}").format(accuracy=last_step["reward_accuracy"]))
            if self._val_accuracy is not None:
                parts.append(_("held-out accuracy {accuracy:.0%}").format(accuracy=self._val_accuracy))
            parts.append(f"{last_step['tokens_per_s']:.0f} tok/s")
            peak = human_bytes(last_step["peak_memory"])
            parts.append(
                _("peak {peak} (estimated {estimate})").format(peak=peak, estimate=human_bytes(estimate))
                if estimate
                else _("peak {peak}").format(peak=peak)
            )
            if last_step.get("consumed_tokens"):
                parts.append(_("{count} tokens").format(count=human_count(last_step["consumed_tokens"])))
            if last_step.get("mfu"):
                parts.append(f"MFU {last_step['mfu']:.1%}")
            if self._val_ppl:
                parts.append(_("val ppl {ppl:.2f}").format(ppl=self._val_ppl))
            if last_step.get("skipped_batches"):
                parts.append(_("{count} skipped").format(count=last_step["skipped_batches"]))
            parts.append(_("ETA {eta}").format(eta=human_duration(last_step["eta"])))
            self.query_one("#info", Static).update("  ·  ".join(parts))
        elif not self._steps:
            self.query_one("#info", Static).update(f"{run.name}  ·  {label(RUN_STATUS_LABELS, run.status)}")

    def show_guard(self, guard: dict | None) -> None:
        """The forgetting guard's before → after for the watched run (hidden until a run has one)."""
        from rich.text import Text

        from internlocal.train.guard import guard_summary

        line, warning = guard_summary(guard or {})
        text = Text(line)
        if warning:
            text.append("\n" + warning, style="bold red")
        widget = self.query_one("#guard", Static)
        widget.display = bool(line)
        widget.update(text)

    def draw_curve(self) -> None:
        from textual_plotext import PlotextPlot

        plot = self.query_one("#curve", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.title(_("loss · reward margin") if self._margins else _("loss"))
        if self._steps:
            plt.plot([s for s, __ in self._steps], [v for __, v in self._steps], label=_("train"), marker="braille")
        if self._margins:
            plt.plot(
                [s for s, __ in self._margins], [v for __, v in self._margins], label=_("margin"), marker="braille"
            )
        if self._evals:
            plt.scatter([s for s, __ in self._evals], [v for __, v in self._evals], label=_("validation"))
        plot.refresh()

    # -- actions ---------------------------------------------------------------------------------------

    def action_start(self) -> None:
        name = self.selected_recipe()
        if self.services is None or name is None:
            return
        plan = self.plans.get(name)
        if plan is None:
            self.notify(
                _("Recipe {name} is not valid; `internlocal train show {name}` says why.").format(name=name),
                severity="error",
            )
            return
        if plan.recipe.on_gpu and plan.fits is None:
            # a GPU recipe where no GPU answered: say what it needs before anything is submitted
            if plan.estimate:
                question = _(
                    "{name} is a GPU recipe and needs about {memory} of GPU memory; no GPU is visible here, "
                    "so it will most likely fail. Start it anyway?"
                ).format(name=name, memory=human_bytes(plan.estimate.total))
            else:
                question = _(
                    "{name} is a GPU recipe and needs a GPU; no GPU is visible here, so it will most likely fail. "
                    "Start it anyway?"
                ).format(name=name)
            self.app.push_screen(
                ConfirmDialog(
                    question,
                    confirm_label=_("Start"),
                    variant="warning",
                ),
                lambda yes: self._start_if(yes, name),
            )
            return
        self._start(name)

    def _start_if(self, confirmed: bool | None, name: str) -> None:
        if confirmed:
            self._start(name)

    def action_curve(self) -> None:
        """The loss curve full screen (Esc returns): on a short terminal it is only a few rows high."""
        from textual_plotext import PlotextPlot

        if self.maximized is None:
            self.maximized = self.query_one("#curve", PlotextPlot)
        else:
            self.minimize()

    @work(thread=True, exclusive=True, group="start")
    def _start(self, name: str) -> None:
        # in a thread: planning a GPU recipe asks nvidia-smi (or imports torch where there is none)
        from internlocal.services.training import start_training

        try:
            job = start_training(self.ready_services, name)
        except UserError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error", timeout=15)
            return
        self.app.call_from_thread(
            self.notify,
            _("Training {name} (job {job_id}); the curve appears with the first step").format(name=name, job_id=job.id),
        )
        self.app.call_from_thread(self.query_one("#runs", FittedTable).focus)  # so s / x / r act on the run at once
        self.app.call_from_thread(self.set_timer, 1.0, lambda: self._follow_job(job.id))

    def _follow_job(self, job_id: int, tries: int = 0) -> None:
        run = next((r for r in self.ready_services.catalog.list_train_runs() if r.job_id == job_id), None)
        if run is None:
            job = self.ready_services.jobs.refresh_one(self.ready_services.catalog.get_job(job_id))
            if job.status in ("failed", "cancelled"):
                self.notify(job.error or job_status_label(job.status), severity="error", timeout=15)
            elif tries < 600:
                self.set_timer(1.0, lambda: self._follow_job(job_id, tries + 1))
            return
        self.refresh_runs()
        self.watch_run(run)

    def _trigger(self, action, said: str) -> None:
        if self.watched is None or self.services is None:
            return
        try:
            action(self.ready_services, self.watched.id)
            self.notify(said)
        except UserError as exc:
            self.notify(str(exc), severity="warning")

    def action_save_now(self) -> None:
        from internlocal.services.training import save_now

        self._trigger(save_now, _("A checkpoint is written after this step"))

    def action_stop(self) -> None:
        from internlocal.services.training import stop

        self._trigger(stop, _("Stopping after this step (a checkpoint is written; r resumes)"))

    def action_resume(self) -> None:
        if self.services is not None and self.watched is not None:
            self._resume(self.watched.id)

    @work(thread=True, exclusive=True, group="resume")
    def _resume(self, run_id: str) -> None:
        # in a thread: a run that was just stopped takes a moment to wind down before it can resume
        from internlocal.services.training import resume

        run = self.ready_services.catalog.get_train_run(run_id)
        try:
            resume(self.ready_services, run_id)
        except UserError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        self.app.call_from_thread(self.notify, _("Resuming {name} from its newest checkpoint").format(name=run.name))

    def action_preview(self) -> None:
        name = self.selected_recipe()
        if name is not None and self.services is not None:
            self.notify(_("Rendering an example of {name}'s data …").format(name=name))
            self._preview(name)

    @work(thread=True, exclusive=True, group="preview", exit_on_error=False)
    def _preview(self, name: str) -> None:
        from internlocal.data.formats import load_examples
        from internlocal.data.library import load_tokenizer, read_split
        from internlocal.data.rendering import preview
        from internlocal.train.inputs import recipe_dataset
        from internlocal.train.recipe import dataset_file, load_recipe

        try:
            __, recipe = load_recipe(name)
            if recipe.dataset is None:  # pretraining: raw text, every token trained, nothing masked to show
                self.app.call_from_thread(
                    self.notify,
                    _(
                        "{name} pretrains on a raw corpus where every token is "
                        "trained; the preview shows the masking of chat datasets only."
                    ).format(name=name),
                )
                return
            catalog = self.ready_services.catalog
            dataset = recipe_dataset(catalog, recipe)
            if dataset is not None:
                example = (read_split(Path(dataset.path), "train") or read_split(Path(dataset.path), "validation"))[0]
            else:
                file = dataset_file(recipe)
                if file is None:
                    raise UserError(
                        _("{dataset} is not downloaded yet; it is fetched when the run starts.").format(
                            dataset=recipe.dataset
                        )
                    )
                example = load_examples(file, recipe.dataset_form)[1][0]
            tokenizer = load_tokenizer(
                catalog, catalog.get_model(recipe.model), trust_remote_code=recipe.trust_remote_code
            )
            tokens = preview(tokenizer, example, train_on=recipe.train_on)
        except UserError as exc:
            self.app.call_from_thread(self.notify, str(exc), severity="error")
            return
        except Exception as exc:  # a broken model folder must not take the whole app down
            self.app.call_from_thread(
                self.notify,
                _("Could not preview {name}'s data: {error}").format(name=name, error=exc),
                severity="error",
                timeout=15,
            )
            return
        self.app.call_from_thread(
            self.app.push_screen, MaskPreview(_("{name}: first example").format(name=name), tokens)
        )
