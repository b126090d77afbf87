"""``internlocal eval …``: tasks, runs (as jobs), the leaderboard, per-item drill-down."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from internlocal.cli.common import print_json, services

app = typer.Typer(
    help="Evaluate models on benchmark and custom tasks; compare them in a leaderboard.", no_args_is_help=True
)
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@app.command("tasks")
def tasks(as_json: JsonOpt = False) -> None:
    """Tasks available: the built-in samples and your own (INTERNLOCAL_HOME/tasks)."""
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
        typer.echo(f"{r['name']:22} v{r['version']:4} {r['type']:16} {r['items']:>5} items  {r['description']}")


@app.command("add")
def add(
    name: str,
    data_file: str,
    kind: Annotated[str, typer.Option("--type", help="mcq (question,A,B,C,D,answer) or qa (question,answer)")] = "mcq",
) -> None:
    """Turn a JSONL/CSV file into a task."""
    from pathlib import Path

    from internlocal.evals.tasks import add_custom_task

    path = add_custom_task(services().settings.home, name, Path(data_file), kind)
    typer.echo(f"task {name}: {path}")


@app.command("import")
def import_(
    benchmark: Annotated[
        str, typer.Argument(help="mmlu, ceval, cmmlu, arc, hellaswag, truthfulqa_mc1, gsm8k, wikitext")
    ],
    folder: Annotated[
        str | None,
        typer.Argument(help="Folder with the benchmark's files as published; leave out to download them."),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="hf:org/name[:glob][@rev] or "
            "modelscope:org/name[:glob][@rev]; default: the benchmark's "
            "Hugging Face repository.",
        ),
    ] = None,
    name: Annotated[str | None, typer.Option("--name")] = None,
) -> None:
    """Turn a standard benchmark into a task: from its published files in a folder, or downloaded from a hub."""
    from pathlib import Path

    from internlocal.evals.benchmarks import fetch_benchmark, import_benchmark
    from internlocal.evals.tasks import load_task

    settings = services().settings
    if folder and source:
        raise typer.BadParameter("give a folder or --from, not both")
    if folder is None:
        received = [0]

        def on_bytes(n: int) -> None:
            received[0] += n

        typer.echo(f"downloading {benchmark} from {source or 'the Hugging Face Hub'} …", err=True)
        where, source = fetch_benchmark(settings.home, settings.store_dir, benchmark, source, on_bytes)
        typer.echo(f"{received[0] / 2**20:.1f} MiB from {source} into {where}", err=True)
    else:
        where = Path(folder)
    path = import_benchmark(settings.home, benchmark, where, name, source=source)
    task = load_task(path)
    typer.echo(f"task {task.name}: {len(task.docs)} items ({path})")


@app.command("export")
def export(
    task_name: Annotated[str, typer.Argument(help="One of `internlocal eval tasks`.")],
    folder: Annotated[str, typer.Argument(help="Where to write <task>.yaml and its data, for lm-evaluation-harness.")],
) -> None:
    """Write a task out as an lm-evaluation-harness task file (its data copied beside it)."""
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
    typer.echo(f"{path} (run it with: lm_eval --include_path {out} --tasks {task.name})")
    if task.num_fewshot and not isinstance(task, LmEvalTask):
        typer.echo(
            f"note: lm-eval draws its {task.num_fewshot} few-shot examples with its own sampler, so its prompts "
            "differ from internlocal's for this task.",
            err=True,
        )


@app.command("run")
def run(
    model: Annotated[str, typer.Argument(help="Catalog model, or several separated by commas (evaluated in turn).")],
    task_names: Annotated[
        list[str], typer.Argument(help="Task names, task YAML files (ours or lm-eval's), or lm-eval group files.")
    ],
    limit: Annotated[int | None, typer.Option("--limit", help="Only the first N items (smoke runs).")] = None,
    circular: Annotated[
        bool,
        typer.Option(
            "--circular",
            help="CircularEval: ask each lettered multiple-choice question once per rotation of its options; "
            "circular_acc counts it only if every rotation is right.",
        ),
    ] = False,
    include_path: Annotated[
        list[str] | None, typer.Option("--include-path", help="A folder of lm-eval task files to find task names in.")
    ] = None,
    trust_code: Annotated[
        list[str] | None,
        typer.Option("--trust-code", help="A folder whose task files may run their Python (!function) code."),
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate MODEL(s) on tasks (a resumable job; answers are cached)."""
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
                typer.echo(f"{label:22} {metrics}" + (f"  ({result['skipped']} skipped)" if result["skipped"] else ""))


@app.command("results")
def results(
    task: Annotated[str | None, typer.Option("--task")] = None,
    as_json: JsonOpt = False,
    export: Annotated[str | None, typer.Option("--format", help="text, md, csv or json.")] = None,
    subjects: Annotated[
        bool,
        typer.Option(
            "--subjects", help="Expand tasks with subjects (MMLU, C-Eval, CMMLU) into categories and subjects."
        ),
    ] = False,
) -> None:
    """Leaderboard: tasks as rows, models as columns, group averages.

    Scores share a row only when made with the same task version, prompt and item limit; a task
    run in several ways gets a row per way.
    """
    from internlocal.errors import UserError
    from internlocal.evals.leaderboard import build_from_catalog

    fmt = "json" if as_json else (export or "text")
    if fmt not in ("text", "md", "csv", "json"):
        raise UserError(f"--format {export!r}: use text, md, csv or json.")
    svc = services()
    board = build_from_catalog(svc.catalog, svc.settings.home, task=task)
    if fmt == "json":
        typer.echo(board.to_json())
    elif fmt == "md":
        typer.echo(board.to_markdown(expand=subjects), nl=False)
    elif fmt == "csv":
        typer.echo(board.to_csv(), nl=False)
    elif not board.rows:
        typer.echo("No evaluation results yet; `internlocal eval run MODEL TASK` makes some.")
    else:
        typer.echo(board.to_text(expand=subjects))


@app.command("show")
def show(
    run_id: int,
    as_json: JsonOpt = False,
    wrong: Annotated[bool, typer.Option("--wrong", help="Only items scored wrong.")] = False,
) -> None:
    """Per-item answers of one run."""
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
            typer.echo(f"#{r['idx']}: skipped ({r['scores']['skipped']})")
        elif r["response"] is None:  # perplexity: a text, scored as it is
            typer.echo(
                f"#{r['idx']}: log-likelihood {r['scores'].get('loglikelihood', float('nan')):.2f} over "
                f"{r['scores'].get('tokens', 0)} tokens: {r['prompt'][:60]!r}"
            )
        else:
            typer.echo(f"#{r['idx']}: target {r['target']!r}, answered {r['response']!r}")


@app.command("needle")
def needle(
    model: Annotated[str, typer.Argument(help="Catalog chat model.")],
    kind: Annotated[
        str, typer.Option("--kind", help="single (one needle), multi (several) or reasoning (a chain to follow).")
    ] = "single",
    lang: Annotated[
        str, typer.Option("--lang", help="en or zh: the haystack's, needles' and question's language.")
    ] = "en",
    lengths: Annotated[
        str | None,
        typer.Option(
            "--lengths", help="Document lengths in the model's tokens, e.g. 256,512,1024 (default: up to 2048)."
        ),
    ] = None,
    depths: Annotated[
        str | None, typer.Option("--depths", help="Needle depths in percent, e.g. 0,25,50,75,100 (the default).")
    ] = None,
    needles: Annotated[int, typer.Option("--needles", help="multi and reasoning: how many needles.")] = 3,
    export: Annotated[str, typer.Option("--format", help="text (a heat map), md, csv or json.")] = "text",
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
    """NeedleBench: hide facts in long filler text, ask for them; scores by length × depth (a job; answers cached).

    The default grid leaves out lengths that do not fit the model's context and says so; lengths you name
    that do not fit are refused. `eval needle-show RUN` shows a stored run again.
    """
    from internlocal.cli.progress import follow_job
    from internlocal.errors import UserError
    from internlocal.evals.needlebench import parse_numbers
    from internlocal.services.needlebench import needlebench_map, start_needlebench

    if export not in ("text", "md", "csv", "json"):
        raise UserError(f"--format {export!r}: use text, md, csv or json.")
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


@app.command("needle-show")
def needle_show(
    run_id: Annotated[int | None, typer.Argument(help="An eval run of NeedleBench; leave out for the newest.")] = None,
    export: Annotated[str, typer.Option("--format", help="text (a heat map), md, csv or json.")] = "text",
) -> None:
    """A stored NeedleBench run's scores, as a heat map (depth × length) or an export."""
    from internlocal.errors import UserError
    from internlocal.services.needlebench import needlebench_map

    if export not in ("text", "md", "csv", "json"):
        raise UserError(f"--format {export!r}: use text, md, csv or json.")
    shown = needlebench_map(services(), run_id).export(export)
    typer.echo(shown, nl=not shown.endswith("\n"))
