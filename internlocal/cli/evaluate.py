"""``internlocal eval …``: tasks, runs (as jobs), the leaderboard, per-item drill-down."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from internlocal.cli.common import print_json, services
from internlocal.i18n import _

app = typer.Typer(
    help=_("Evaluate models on benchmark and custom tasks; compare them in a leaderboard."), no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help=_("Machine-readable output."))]


@app.command("tasks", help=_("Tasks available: the built-in samples and your own (INTERNLOCAL_HOME/tasks)."))
def tasks(as_json: JsonOpt = False) -> None:
    from internlocal.evals.tasks import all_tasks

    found = all_tasks(services().settings.home)
    rows = [
        {
            "name": t.name,
            "version": t.version,
            "type": t.output_type,
            "group": t.group,
            "items": len(t.docs),
            "description": t.description,
        }
        for t in found.values()
    ]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        typer.echo(
            _("{name:22} v{version:4} {type:16} {items:>5} items  {description}").format(
                name=r["name"], version=r["version"], type=r["type"], items=r["items"], description=r["description"]
            )
        )


@app.command("add", help=_("Turn a JSONL/CSV file into a task."))
def add(
    name: str,
    data_file: str,
    kind: Annotated[
        str, typer.Option("--type", help=_("mcq (question,A,B,C,D,answer) or qa (question,answer)"))
    ] = "mcq",
) -> None:
    from pathlib import Path

    from internlocal.evals.tasks import add_custom_task

    path = add_custom_task(services().settings.home, name, Path(data_file), kind)
    typer.echo(_("task {name}: {path}").format(name=name, path=path))


@app.command(
    "import",
    help=_("Turn a standard benchmark into a task: from its published files in a folder, or downloaded from a hub."),
)
def import_(
    benchmark: Annotated[
        str, typer.Argument(help=_("mmlu, ceval, cmmlu, arc, hellaswag, truthfulqa_mc1, gsm8k, wikitext"))
    ],
    folder: Annotated[
        str | None,
        typer.Argument(help=_("Folder with the benchmark's files as published; leave out to download them.")),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help=_(
                "hf:org/name[:glob][@rev] or "
                "modelscope:org/name[:glob][@rev]; default: the benchmark's "
                "Hugging Face repository."
            ),
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
) -> None:
    from pathlib import Path

    from internlocal.evals.benchmarks import fetch_benchmark, import_benchmark
    from internlocal.evals.tasks import load_task

    settings = services().settings
    if folder and source:
        raise typer.BadParameter(_("give a folder or --from, not both"))
    if folder is None:
        received = [0]

        def on_bytes(n: int) -> None:
            received[0] += n

        typer.echo(
            _("downloading {benchmark} from {source} …").format(
                benchmark=benchmark, source=source or _("the Hugging Face Hub")
            ),
            err=True,
        )
        where, source = fetch_benchmark(settings.home, settings.store_dir, benchmark, source, on_bytes)
        typer.echo(
            _("{size:.1f} MiB from {source} into {where}").format(size=received[0] / 2**20, source=source, where=where),
            err=True,
        )
    else:
        where = Path(folder)
    path = import_benchmark(settings.home, benchmark, where, name, source=source)
    task = load_task(path)
    typer.echo(_("task {name}: {items} items ({path})").format(name=task.name, items=len(task.docs), path=path))


@app.command("export", help=_("Write a task out as an lm-evaluation-harness task file (its data copied beside it)."))
def export(
    task_name: Annotated[str, typer.Argument(help=_("One of `internlocal eval tasks`."))],
    folder: Annotated[
        str, typer.Argument(help=_("Where to write <task>.yaml and its data, for lm-evaluation-harness."))
    ],
) -> None:
    import shutil
    from pathlib import Path

    from internlocal.evals.lmeval import LmEvalTask, to_lmeval_yaml
    from internlocal.evals.tasks import get_task

    task = get_task(task_name, services().settings.home)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    data = out / f"{task.name}{task.dataset_path.suffix}"
    if task.dataset_path.is_file():
        shutil.copyfile(task.dataset_path, data)
    path = out / f"{task.name}.yaml"
    path.write_text(to_lmeval_yaml(task, data.resolve()), encoding="utf-8")
    typer.echo(
        _("{path} (run it with: lm_eval --include_path {out} --tasks {task})").format(
            path=path, out=out, task=task.name
        )
    )
    if task.num_fewshot and not isinstance(task, LmEvalTask):
        typer.echo(
            _(
                "note: lm-eval draws its {num_fewshot} few-shot examples with its own sampler, so its prompts "
                "differ from internlocal's for this task."
            ).format(num_fewshot=task.num_fewshot),
            err=True,
        )


@app.command("run", help=_("Evaluate MODEL(s) on tasks (a resumable job; answers are cached)."))
def run(
    model: Annotated[str, typer.Argument(help=_("Catalog model, or several separated by commas (evaluated in turn)."))],
    task_names: Annotated[
        list[str], typer.Argument(help=_("Task names, task YAML files (ours or lm-eval's), or lm-eval group files."))
    ],
    limit: Annotated[int | None, typer.Option("--limit", help=_("Only the first N items (smoke runs)."))] = None,
    circular: Annotated[
        bool,
        typer.Option(
            "--circular",
            help=_(
                "CircularEval: ask each lettered multiple-choice question once per rotation of its options; "
                "circular_acc counts it only if every rotation is right."
            ),
        ),
    ] = False,
    include_path: Annotated[
        list[str] | None,
        typer.Option("--include-path", help=_("A folder of lm-eval task files to find task names in.")),
    ] = None,
    trust_code: Annotated[
        list[str] | None,
        typer.Option("--trust-code", help=_("A folder whose task files may run their Python (!function) code.")),
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.cli.progress import follow_job
    from internlocal.services.evaluation import start_eval

    svc = services()
    models = [m.strip() for m in model.split(",") if m.strip()]
    started = start_eval(
        svc, models, task_names, limit=limit, circular=circular, include_paths=include_path, trusted=trust_code
    )
    job = follow_job(svc.jobs, started, detach=detach, as_json=as_json)
    if job is not None and not as_json:
        for name, tasks in (job.result or {}).get("models", {}).items():
            for task, result in tasks.items():
                metrics = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if k not in ("run", "skipped"))
                label = f"{name}  {task}" if len(models) > 1 else task
                skipped = _("  ({skipped} skipped)").format(skipped=result["skipped"]) if result["skipped"] else ""
                typer.echo(f"{label:22} {metrics}" + skipped)


@app.command(
    "results",
    help=_(
        "Leaderboard: tasks as rows, models as columns, group averages.\n\n"
        "Scores share a row only when made with the same task version, prompt and item limit; a task\n"
        "run in several ways gets a row per way."
    ),
)
def results(
    task: Annotated[str | None, typer.Option("--task")] = None,
    as_json: JsonOpt = False,
    export: Annotated[str | None, typer.Option("--format", help=_("text, md, csv or json."))] = None,
    subjects: Annotated[
        bool,
        typer.Option(
            "--subjects", help=_("Expand tasks with subjects (MMLU, C-Eval, CMMLU) into categories and subjects.")
        ),
    ] = False,
) -> None:
    from internlocal.errors import UserError
    from internlocal.evals.leaderboard import build_from_catalog

    fmt = "json" if as_json else (export or "text")
    if fmt not in ("text", "md", "csv", "json"):
        raise UserError(_("--format {export!r}: use text, md, csv or json.").format(export=export))
    svc = services()
    board = build_from_catalog(svc.catalog, svc.settings.home, task=task)
    if fmt == "json":
        typer.echo(board.to_json())
    elif fmt == "md":
        typer.echo(board.to_markdown(expand=subjects), nl=False)
    elif fmt == "csv":
        typer.echo(board.to_csv(), nl=False)
    elif not board.rows:
        typer.echo(_("No evaluation results yet; `internlocal eval run MODEL TASK` makes some."))
    else:
        typer.echo(board.to_text(expand=subjects))


@app.command("show", help=_("Per-item answers of one run."))
def show(
    run_id: int,
    as_json: JsonOpt = False,
    wrong: Annotated[bool, typer.Option("--wrong", help=_("Only items scored wrong."))] = False,
) -> None:
    items = services().catalog.eval_items(run_id)
    rows = [
        {
            "idx": i.idx,
            "prompt": i.prompt,
            "target": i.target,
            "response": i.response,
            "scores": json.loads(i.scores_json),
        }
        for i in items
    ]
    if wrong:
        rows = [r for r in rows if r["scores"].get("acc", r["scores"].get("exact_match", 1)) == 0]
    if as_json:
        print_json(rows)
        return
    for r in rows:
        if "skipped" in r["scores"]:
            typer.echo(_("#{idx}: skipped ({reason})").format(idx=r["idx"], reason=r["scores"]["skipped"]))
        elif r["response"] is None:  # perplexity: a text, scored as it is
            typer.echo(
                _("#{idx}: log-likelihood {loglikelihood:.2f} over {tokens} tokens: {text!r}").format(
                    idx=r["idx"],
                    loglikelihood=r["scores"].get("loglikelihood", float("nan")),
                    tokens=r["scores"].get("tokens", 0),
                    text=r["prompt"][:60],
                )
            )
        else:
            typer.echo(
                _("#{idx}: target {target!r}, answered {response!r}").format(
                    idx=r["idx"], target=r["target"], response=r["response"]
                )
            )


@app.command(
    "needle",
    help=_(
        "NeedleBench: hide facts in long filler text, ask for them; scores by length × depth (a job; answers cached)."
        "\n\n"
        "The default grid leaves out lengths that do not fit the model's context and says so; lengths you name\n"
        "that do not fit are refused. `eval needle-show RUN` shows a stored run again."
    ),
)
def needle(
    model: Annotated[str, typer.Argument(help=_("Catalog chat model."))],
    kind: Annotated[
        str, typer.Option("--kind", help=_("single (one needle), multi (several) or reasoning (a chain to follow)."))
    ] = "single",
    lang: Annotated[
        str, typer.Option("--lang", help=_("en or zh: the haystack's, needles' and question's language."))
    ] = "en",
    lengths: Annotated[
        str | None,
        typer.Option(
            "--lengths", help=_("Document lengths in the model's tokens, e.g. 256,512,1024 (default: up to 2048).")
        ),
    ] = None,
    depths: Annotated[
        str | None,
        typer.Option("--depths", help=_("Needle depths in percent, e.g. 0,25,50,75,100 (the default).")),
    ] = None,
    needles: Annotated[int, typer.Option("--needles", help=_("multi and reasoning: how many needles."))] = 3,
    export: Annotated[str, typer.Option("--format", help=_("text (a heat map), md, csv or json."))] = "text",
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.cli.progress import follow_job
    from internlocal.errors import UserError
    from internlocal.evals.needlebench import parse_numbers
    from internlocal.services.needlebench import needlebench_map, start_needlebench

    if export not in ("text", "md", "csv", "json"):
        raise UserError(_("--format {export!r}: use text, md, csv or json.").format(export=export))
    svc = services()
    started = start_needlebench(
        svc,
        model,
        kind=kind,
        lang=lang,
        lengths=parse_numbers(lengths, "--lengths"),
        depths=parse_numbers(depths, "--depths"),
        needles=needles,
    )
    job = follow_job(svc.jobs, started, detach=detach, as_json=as_json)
    if job is not None and not as_json:
        shown = needlebench_map(svc, (job.result or {})["run"]).export(export)
        typer.echo(shown, nl=not shown.endswith("\n"))


@app.command("needle-show", help=_("A stored NeedleBench run's scores, as a heat map (depth × length) or an export."))
def needle_show(
    run_id: Annotated[
        int | None, typer.Argument(help=_("An eval run of NeedleBench; leave out for the newest."))
    ] = None,
    export: Annotated[str, typer.Option("--format", help=_("text (a heat map), md, csv or json."))] = "text",
) -> None:
    from internlocal.errors import UserError
    from internlocal.services.needlebench import needlebench_map

    if export not in ("text", "md", "csv", "json"):
        raise UserError(_("--format {export!r}: use text, md, csv or json.").format(export=export))
    shown = needlebench_map(services(), run_id).export(export)
    typer.echo(shown, nl=not shown.endswith("\n"))
