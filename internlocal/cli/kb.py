"""``internlocal kb``: knowledge bases over your own files: create, add/remove folders, sync, search, ask, eval."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from internlocal.cli.common import print_json, services
from internlocal.i18n import N_, _, label

app = typer.Typer(help=_("Knowledge bases: answers from your own documents, with sources."), no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help=_("Machine-readable output."))]
Mode = Annotated[str, typer.Option("--mode", help=_("hybrid (dense + BM25, fused), dense or bm25."))]
SEARCH_MODES: dict[str, Literal["hybrid", "dense", "bm25"]] = {"hybrid": "hybrid", "dense": "dense", "bm25": "bm25"}
# a file's status as stored in the index (chunkdb: indexed | skipped), as `kb show` prints it
FILE_STATUS_LABELS = {"indexed": N_("indexed"), "skipped": N_("skipped")}


def _sync(name: str, detach: bool, as_json: bool) -> None:
    from internlocal.cli.progress import follow_job
    from internlocal.services.knowledge import start_sync

    svc = services()
    job = follow_job(svc.jobs, start_sync(svc, name), detach=detach, as_json=as_json)
    if job is None or as_json:
        return
    r = job.result
    typer.echo(
        _(
            "{name}: {files} files, {chunks} chunks ({files_indexed} files indexed, "
            "{files_unchanged} unchanged, {files_removed} removed; {chunks_embedded} chunks embedded)"
        ).format_map({**r, "name": name})
    )
    for skipped in r["skipped"]:
        typer.echo(_("  skipped {path}: {reason}").format(path=skipped["path"], reason=skipped["reason"]))


@app.command("create", help=_("Create a knowledge base, and index its folders when given."))
def create(
    name: str,
    folders: Annotated[list[str] | None, typer.Argument(help=_("Folders or files to index."))] = None,
    model: Annotated[
        str | None, typer.Option("--model", help=_("Catalog embedding model (default: all-minilm-l6-v2)."))
    ] = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help=_("Characters per chunk."))] = 800,
    overlap: Annotated[int, typer.Option("--overlap", help=_("Characters a chunk repeats from the one before."))] = 120,
    detach: Annotated[bool, typer.Option("--detach", "-d", help=_("Index in the background."))] = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.kb.library import create_kb

    svc = services()
    kb = create_kb(
        svc.settings, svc.catalog, name, folders or [], embedder=model, chunk_size=chunk_size, chunk_overlap=overlap
    )
    if not as_json:
        typer.echo(
            _("created {name} ({embedder}, {dimension} dimensions)").format(
                name=kb.name, embedder=kb.embedder, dimension=kb.dimension
            )
        )
    if folders:
        _sync(name, detach, as_json)
    elif as_json:
        print_json({"knowledge_base": kb.name, "embedder": kb.embedder, "dimension": kb.dimension})


@app.command("add", help=_("Add folders or files to a knowledge base and index them."))
def add(
    name: str,
    folders: list[str],
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.kb.library import add_folders

    add_folders(services().catalog, name, folders)
    _sync(name, detach, as_json)


@app.command(
    "remove-folder",
    help=_("Take folders or files out of a knowledge base: their passages leave the index; the documents stay."),
)
def remove_folder(
    name: str,
    folders: Annotated[list[str], typer.Argument(help=_("Folders or files to take out, as `kb list` shows them."))],
    as_json: JsonOpt = False,
) -> None:
    from internlocal.kb.library import remove_folders

    result = remove_folders(services().catalog, name, folders)
    if as_json:
        print_json(result)
        return
    typer.echo(
        _(
            "{name}: removed {folders} ({files_removed} files, "
            "{chunks_removed} chunks); {files} files, {chunks} chunks remain"
        ).format(
            name=name,
            folders=", ".join(result["removed_folders"]),
            files_removed=result["files_removed"],
            chunks_removed=result["chunks_removed"],
            files=result["files"],
            chunks=result["chunks"],
        )
    )


@app.command("sync", help=_("Bring the index up to date: new and changed files indexed, deleted ones removed."))
def sync(
    name: str,
    watch: Annotated[bool, typer.Option("--watch", help=_("Stay running and re-sync when files change."))] = False,
    detach: Annotated[bool, typer.Option("--detach", "-d")] = False,
    as_json: JsonOpt = False,
) -> None:
    if not watch:
        _sync(name, detach, as_json)
        return
    from internlocal.kb.watch import watch_kb

    def report(summary: dict) -> None:
        if as_json:
            print_json({k: v for k, v in summary.items()})
        else:
            typer.echo(
                _(
                    "{name}: {files_indexed} indexed, {files_removed} removed, "
                    "{chunks_embedded} chunks embedded; watching for changes (Ctrl+C stops)"
                ).format_map({**summary, "name": name})
            )

    try:
        watch_kb(services().catalog, name, on_sync=report)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


@app.command("search", help=_("Ranked passages with their sources."))
def search(
    name: str,
    query: str,
    k: Annotated[int, typer.Option("-k", help=_("Passages to show."))] = 5,
    mode: Mode = "hybrid",
    file_type: Annotated[
        list[str] | None, typer.Option("--type", help=_("Only these kinds: markdown, text, pdf, html, docx, code."))
    ] = None,
    folder: Annotated[str | None, typer.Option("--folder", help=_("Only files under this folder."))] = None,
    rerank: Annotated[
        str | None,
        typer.Option("--rerank", help=_("Cross-encoder (catalog model or folder) to reorder the results.")),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.errors import UserError
    from internlocal.kb.library import open_index, reranker_for

    search_mode = SEARCH_MODES.get(mode)
    if search_mode is None:
        raise UserError(_("--mode is one of hybrid, dense, bm25."))
    svc = services()
    reranker = reranker_for(svc.catalog, rerank) if rerank else None
    index = open_index(svc.catalog, name)
    try:
        hits = index.search(query, k=k, mode=search_mode, kinds=file_type, folder=folder, reranker=reranker)
    finally:
        index.close()
    if as_json:
        print_json([h.as_dict() for h in hits])
        return
    if not hits:
        typer.echo(_("nothing found"))
    for n, hit in enumerate(hits, start=1):
        heading = f"  ({hit.heading})" if hit.heading else ""
        typer.echo(
            _("[{n}] {citation}{heading}  similarity {similarity:.3f}").format(
                n=n, citation=hit.citation, heading=heading, similarity=hit.similarity
            )
        )
        typer.echo("    " + " ".join(hit.text.split())[:300])


@app.command("ask", help=_("Answer from the knowledge base with numbered sources, or say it has no answer."))
def ask(
    name: str,
    question: str,
    model: Annotated[
        str | None, typer.Option("--model", help=_("Chat model (default: the default chat model)."))
    ] = None,
    k: Annotated[int, typer.Option("-k", help=_("Passages given to the model."))] = 4,
    rerank: Annotated[
        str | None, typer.Option("--rerank", help=_("Cross-encoder (catalog model or folder) to reorder passages."))
    ] = None,
    answers: Annotated[
        str | None,
        typer.Option(
            "--answers",
            help=_(
                "auto (quotes replace an answer citing nothing), generate, or extractive (quotes only). "
                "Default: the knowledge base's pipeline."
            ),
        ),
    ] = None,
    relevance_gate: Annotated[
        bool | None,
        typer.Option(
            "--relevance-gate/--no-relevance-gate", help=_("Let the model drop passages it judges irrelevant.")
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.kb.answer import answer, decision_lines
    from internlocal.kb.library import open_index, reranker_for

    svc = services()
    reranker = reranker_for(svc.catalog, rerank) if rerank else None
    kb = svc.catalog.get_kb(name)
    pipeline = _pipeline(kb, answers=answers, relevance_gate=relevance_gate)
    chat_model = svc.catalog.get_model(model) if model else svc.chats.default_model()
    index = open_index(svc.catalog, name)
    try:
        result = answer(
            svc.chats.engines.get(chat_model),
            index,
            question,
            threshold=kb.threshold,
            k=k,
            reranker=reranker,
            pipeline=pipeline,
        )
        for piece in result:
            if not as_json:
                typer.echo(piece, nl=False)
    finally:
        index.close()
    if as_json:
        print_json({"answer": result.text, "finish_reason": result.finish_reason, **result.record()})
        return
    typer.echo("")
    if result.finish_reason == "repetition" and result.replaced is None:  # the text shown is the one that looped
        from internlocal.engines.base import REPETITION_NOTE

        typer.echo(f"({REPETITION_NOTE})")
    for line in decision_lines(result.decisions):
        typer.echo(f"({line})")
    for source in result.sources:
        if source.get("cited"):
            typer.echo(f"[{source['n']}] {source['citation']}")
        else:
            typer.echo(_("[{n}] {citation}  (not cited)").format(n=source["n"], citation=source["citation"]))


def _pipeline(kb, **overrides: Any):
    """The knowledge base's stored pipeline with the options given on the command line over it."""
    from pydantic import ValidationError

    from internlocal.errors import UserError
    from internlocal.kb.answer import AnswerPipeline

    values = {**kb.pipeline, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return AnswerPipeline.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        field = ".".join(str(p) for p in error["loc"])
        raise UserError(
            _("Pipeline setting {field}: {message} (got {value!r}).").format(
                field=field, message=error["msg"], value=error.get("input")
            )
        ) from None


@app.command(
    "pipeline", help=_("Show or change the steps around retrieval for a knowledge base (HuixiangDou's pipeline).")
)
def pipeline(
    name: str,
    chit_chat: Annotated[
        bool | None, typer.Option("--chit-chat/--no-chit-chat", help=_("Answer small talk without retrieval."))
    ] = None,
    relevance_gate: Annotated[
        bool | None,
        typer.Option(
            "--relevance-gate/--no-relevance-gate",
            help=_("The model judges each passage; irrelevant ones are dropped (for models stronger than 135M)."),
        ),
    ] = None,
    answer_check: Annotated[
        bool | None,
        typer.Option("--answer-check/--no-answer-check", help=_("Withhold a reply that only says it does not know.")),
    ] = None,
    answers: Annotated[
        str | None, typer.Option("--answers", help=_("auto, generate or extractive (see `kb ask --help`)."))
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    svc = services()
    kb = svc.catalog.get_kb(name)
    chosen = _pipeline(
        kb, chit_chat=chit_chat, relevance_gate=relevance_gate, answer_check=answer_check, answers=answers
    )
    if any(v is not None for v in (chit_chat, relevance_gate, answer_check, answers)):
        kb = svc.catalog.update_kb(name, pipeline_json=json.dumps(chosen.model_dump(exclude_defaults=True)))
    if as_json:
        print_json(chosen.model_dump())
        return
    for key, value in chosen.model_dump().items():
        shown = (_("on") if value else _("off")) if isinstance(value, bool) else value
        typer.echo(f"{key.replace('_', '-'):15} {shown}")


@app.command("list", help=_("Knowledge bases with their folders and sizes."))
def list_(as_json: JsonOpt = False) -> None:
    kbs = services().catalog.list_kbs()
    if as_json:
        print_json(
            [
                {
                    "name": kb.name,
                    "folders": kb.folders,
                    "embedder": kb.embedder,
                    "dimension": kb.dimension,
                    "threshold": kb.threshold,
                    **kb.stats,
                }
                for kb in kbs
            ]
        )
        return
    if not kbs:
        typer.echo(_("no knowledge bases; `internlocal kb create NAME FOLDER` makes one"))
    for kb in kbs:
        stats = kb.stats
        typer.echo(
            _("{name}  {files} files, {chunks} chunks  {embedder}  threshold {threshold:.3f}  {folders}").format(
                name=kb.name,
                files=stats.get("files", 0),
                chunks=stats.get("chunks", 0),
                embedder=kb.embedder,
                threshold=kb.threshold,
                folders=", ".join(kb.folders),
            )
        )


@app.command("show", help=_("The files a knowledge base indexes, and those it skipped with the reason."))
def show(name: str, as_json: JsonOpt = False) -> None:
    from internlocal.kb.library import open_index

    index = open_index(services().catalog, name)
    try:
        files = index.files()
    finally:
        index.close()
    if as_json:
        print_json(files)
        return
    for f in files:
        status = label(FILE_STATUS_LABELS, f["status"])
        typer.echo(f"{status:8} {f['chunks']:5} {f['path']}" + (f"  ({f['reason']})" if f["reason"] else ""))


@app.command("rm", help=_("Remove knowledge bases (their index only; your documents are not touched)."))
def rm(names: list[str], as_json: JsonOpt = False) -> None:
    from internlocal.kb.library import remove_kb

    results = [remove_kb(services().catalog, name) for name in names]
    if as_json:
        print_json(results)
        return
    for r in results:
        typer.echo(_("{name}: removed").format(name=r["knowledge_base"]))


@app.command("reembed", help=_("Rebuild the vectors with another embedding model (documents are not read again)."))
def reembed(
    name: str,
    model: Annotated[str, typer.Option("--model", help=_("Catalog embedding model."))],
    as_json: JsonOpt = False,
) -> None:
    from internlocal.kb.library import reembed_kb

    kb = reembed_kb(services().catalog, name, model)
    if as_json:
        print_json({"knowledge_base": kb.name, "embedder": kb.embedder, "dimension": kb.dimension})
    else:
        typer.echo(
            _("{name}: vectors now from {embedder} ({dimension} dimensions)").format(
                name=kb.name, embedder=kb.embedder, dimension=kb.dimension
            )
        )


@app.command(
    "eval",
    help=_("Retrieval quality (recall@k, MRR, nDCG@10) and refusal precision/recall on labelled questions."),
)
def eval_(
    name: str,
    questions: Annotated[
        Path | None,
        typer.Argument(
            help=_(
                'JSONL: {"question": …, "sources": [relative paths]} ([] = unanswerable). Answers marked bad in '
                "chats are added as questions to refuse."
            )
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", help=_("Cut-off for recall@k."))] = 5,
    mode: Mode = "hybrid",
    tune: Annotated[
        bool, typer.Option("--tune", help=_("Store the refusal threshold fitted on these questions."))
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    from internlocal.errors import UserError
    from internlocal.kb.evaluate import evaluate, load_questions
    from internlocal.kb.library import open_index

    search_mode = SEARCH_MODES.get(mode)
    if search_mode is None:
        raise UserError(_("--mode is one of hybrid, dense, bm25."))
    svc = services()
    kb = svc.catalog.get_kb(name)
    rows = load_questions(questions) if questions is not None else []
    # HuixiangDou's bad cases: an answer a user marked bad should have been a refusal, and a refusal marked bad
    # should have been an answer (the latest verdict on a question counts)
    verdicts = {f.question: f.refused for f in svc.catalog.list_feedback(name) if f.verdict == "bad" and f.question}
    asked = {r["question"] for r in rows}
    rows += [
        {"question": q, "sources": [], "from": "feedback", "expect": "answer" if refused else "refuse"}
        for q, refused in verdicts.items()
        if q not in asked
    ]
    if not rows:
        raise UserError(_("No questions: give a questions file, or mark answers bad in a knowledge-base chat first."))
    index = open_index(svc.catalog, name)
    try:
        result = evaluate(index, rows, threshold=kb.threshold, k=k, mode=search_mode)
    finally:
        index.close()
    result["from_feedback"] = sum(1 for r in rows if r.get("from") == "feedback")
    if tune:
        if "fitted_threshold" not in result:
            raise UserError(_('Tuning the threshold needs answerable and unanswerable questions ("sources": []).'))
        svc.catalog.update_kb(name, threshold=result["fitted_threshold"])
    if as_json:
        print_json(result)
        return

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    from_feedback = result["from_feedback"]
    typer.echo(
        _("{questions} questions ({answerable} answerable), {mode} retrieval").format(
            questions=result["questions"], answerable=result["answerable"], mode=mode
        )
        + (_("; {count} from answers marked bad in chats").format(count=from_feedback) if from_feedback else "")
    )
    typer.echo(
        _("recall@{k} {recall}  MRR {mrr}  nDCG@10 {ndcg}").format(
            k=k, recall=fmt(result[f"recall@{k}"]), mrr=fmt(result["mrr"]), ndcg=fmt(result["ndcg@10"])
        )
    )
    typer.echo(
        _("refusal at threshold {threshold:.3f}: precision {precision}, recall {recall}").format(
            threshold=result["threshold"],
            precision=fmt(result["refusal_precision"]),
            recall=fmt(result["refusal_recall"]),
        )
    )
    if "fitted_threshold" in result:
        typer.echo(
            _("fitted threshold {threshold:.4f} (accuracy {accuracy:.3f})").format(
                threshold=result["fitted_threshold"], accuracy=result["fitted_accuracy"]
            )
            + (_("; stored") if tune else _("; --tune stores it"))
        )
