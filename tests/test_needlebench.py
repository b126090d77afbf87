"""NeedleBench: haystacks cut in the engine's own tokens, needles at their depths, OpenCompass's scoring, the grid on
the embedded model, the catalog, the CLI and the heat map on the Eval screen.

The 135M model is not asked to find needles (it mostly does not); what must hold whatever it answers is."""

from __future__ import annotations

import csv
import io
import json
import subprocess

import pytest

from internlocal.errors import UserError
from internlocal.evals.needlebench import (
    CellResult,
    Haystack,
    NeedleMap,
    NeedleOutcome,
    NeedleSettings,
    TokenCounter,
    boxed_answer,
    boxed_score,
    build_cell,
    keyword_score,
    keywords_share,
    load_map,
    parse_numbers,
    run_grid,
    store_run,
)
from internlocal.evals.needlebench_text import FACTS, NAMES
from internlocal.evals.runner import RequestCache
from internlocal.hub.embedded import CHAT_MODEL

MODEL = CHAT_MODEL.name


def test_scoring_by_hand_as_opencompass_scores():
    assert keyword_score("The secret ingredient is saffron.", "saffron") == 1.0
    assert keyword_score("It is Saffron.", "saffron") == 0.0  # OpenCompass compares case-sensitively
    assert keyword_score("秘密配料是藏红花。", "藏红花") == 1.0 and keyword_score("是胡椒。", "藏红花") == 0.0
    assert keywords_share("saffron and chess", ["saffron", "chess", "cocoa"]) == pytest.approx(2 / 3)
    assert keywords_share("茶壶，围棋", ["茶壶", "围棋", "可可", "蜻蜓"]) == 0.5
    assert keywords_share("nothing", ["saffron"]) == 0.0
    assert boxed_answer("first \\boxed{Ann}, then \\boxed{ Cal Reyes }") == "Cal Reyes"  # the last one, stripped
    assert boxed_answer("no box here") is None
    # cleaned as OpenCompass cleans it: nested braces, \text{}, doubled braces, quotes and spacing
    assert boxed_answer("\\boxed{\\text{Cal Reyes}}") == "Cal Reyes"
    assert boxed_answer("\\boxed{{Cal}}") == "Cal"
    assert boxed_answer("\\boxed{ 'Cal   Reyes' }") == "Cal Reyes"
    assert boxed_answer("\\boxed{never closed") is None
    assert boxed_score("So it is \\boxed{Mara Quinlan}.", "Mara Quinlan") == 1.0
    assert boxed_score("So it is \\boxed{Mara}.", "Mara Quinlan") == 0.0  # exact, not a part of the name
    assert boxed_score("Mara Quinlan", "Mara Quinlan") == 0.0  # unboxed answers do not count
    assert boxed_score("最年长的亲人是\\boxed{韩思远}", "韩思远") == 1.0
    assert boxed_score("\\boxed{韩思远的父亲}", "韩思远") == 0.0


def test_settings_refuse_what_cannot_run():
    for bad, match in (
        ({"kind": "triple"}, "use single, multi or reasoning"),
        ({"lang": "fr"}, "use en or zh"),
        ({"depths": (0, 120)}, "from 0 to 100"),
        ({"lengths": (8,)}, "at least 32"),
        ({"kind": "multi", "needles": len(FACTS["en"]) + 1}, "takes 1 to 8 needles"),
    ):
        with pytest.raises(UserError, match=match):
            NeedleSettings(**bad)
    assert NeedleSettings(lengths=(512, 256, 512), depths=(50, 0)).lengths == (256, 512)
    assert parse_numbers("256, 512", "--lengths") == (256, 512) and parse_numbers("", "--lengths") is None
    with pytest.raises(UserError, match="--depths: give whole numbers"):
        parse_numbers("0,half", "--depths")
    # the grid is part of what makes scores comparable
    assert NeedleSettings().prompt_hash([256]) != NeedleSettings().prompt_hash([256, 512])


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_documents_are_cut_in_the_engines_tokens_with_needles_at_their_depths(engine, lang):
    settings = NeedleSettings(kind="multi", lang=lang, needles=3)
    counter = TokenCounter(engine, RequestCache(None, "needle-lengths"))
    haystack = Haystack(lang, settings.seed, counter)
    for length in (300, 700):
        for depth in (0, 33, 100):
            cell = build_cell(settings, haystack, counter, length, depth)
            sentence = max(haystack.tokens) + 2  # a sentence, and a token either side where the joins merge
            measured = len(engine.tokenize(cell.document, add_special=False))
            assert measured == cell.document_tokens
            assert length - sentence <= measured <= length, (length, measured)
            needle_tokens = sum(len(engine.tokenize(" " * (lang == "en") + n)) for n in cell.puzzle.needles)
            filler = measured - needle_tokens
            first = cell.puzzle.needles[0]
            before = len(engine.tokenize(cell.document[: cell.document.index(first)].rstrip()))
            assert abs(before - filler * depth / 100) <= sentence, (depth, before, filler)
            # the others follow it, spread towards the end
            at = [cell.document.index(n) for n in cell.puzzle.needles]
            assert at == sorted(at) and cell.needle_offsets == sorted(cell.needle_offsets)
    # seeded: the same cell again is the same document; the filler holds no needle's keyword
    again = build_cell(settings, Haystack(lang, settings.seed, counter), counter, 700, 100)
    assert again.document == cell.document
    filler_text = "".join(haystack.sentences)
    assert not [f.keyword for f in FACTS[lang] if f.keyword in filler_text]
    assert not [name for name in NAMES[lang] if name in filler_text]
    other_seed = build_cell(
        NeedleSettings(kind="multi", lang=lang, seed=7), Haystack(lang, 7, counter), counter, 300, 0
    )
    assert other_seed.document != build_cell(settings, haystack, counter, 300, 0).document


def test_the_small_grid_on_the_embedded_model_is_scored_stored_and_rebuilt(engine, services):
    settings = NeedleSettings()  # single needle, English, the default grid
    cache = RequestCache(services.catalog, "needle-grid")
    seen: list[tuple[int, int, str]] = []
    outcome = run_grid(engine, settings, cache, model_name=MODEL, progress=lambda d, t, m: seen.append((d, t, m)))
    heat_map = outcome.map
    # the context (2048) leaves no room for 2048 tokens of document plus the question: that length is left out
    assert heat_map.lengths == [256, 512, 1024] and "2048" in (heat_map.note or "")
    assert set(heat_map.scores) == {(n, d) for n in (256, 512, 1024) for d in (0, 25, 50, 75, 100)}
    assert seen[-1][:2] == (15, 15) and "1024 tokens, depth 0 %" in seen[-1][2]
    for cell in outcome.cells:
        assert cell.score == keyword_score(cell.answer, cell.keywords[0]) and cell.score in (0.0, 1.0)
        assert cell.document_tokens <= cell.length
    assert heat_map.mean == pytest.approx(sum(heat_map.scores.values()) / 15)
    print("\nembedded model, single needle, English:\n" + heat_map.to_text())

    # exports
    rows = list(csv.DictReader(io.StringIO(heat_map.to_csv())))
    assert len(rows) == 15 and {(int(r["length"]), int(r["depth"])) for r in rows} == set(heat_map.scores)
    exported = json.loads(heat_map.to_json())
    assert len(exported["cells"]) == 15 and exported["score"] == pytest.approx(heat_map.mean)
    md = heat_map.to_markdown().splitlines()
    assert md[2] == "| depth \\ tokens | 256 | 512 | 1024 |" and sum(line.startswith("| ") for line in md) == 1 + 5
    text = heat_map.to_text().splitlines()
    assert text[1].split()[-3:] == ["256", "512", "1024"] and [t.split()[0] for t in text[2:7]] == [
        "0",
        "25",
        "50",
        "75",
        "100",
    ]

    # the catalog: one run, an item per cell, lineage from the model; the map comes back from it
    row = services.catalog.get_model(MODEL)
    run = store_run(services.catalog, outcome, settings, row, engine_name="llama.cpp")
    assert run.task == "needlebench_single_en" and run.metrics == {"score": pytest.approx(heat_map.mean)}
    items = services.catalog.eval_items(run.id)
    assert len(items) == 15 and set(json.loads(items[0].scores_json)) >= {"length", "depth", "score", "keywords"}
    assert [e.parent_type for e in services.catalog.parents(("eval_run", run.id))] == ["model"]
    rebuilt = load_map(services.catalog, run.id)
    assert rebuilt.scores == heat_map.scores and rebuilt.lengths == heat_map.lengths and rebuilt.run == run.id

    # a re-run asks nothing twice
    again = run_grid(engine, settings, cache, model_name=MODEL)
    assert again.cached == again.requests == 15 and again.map.scores == heat_map.scores


def test_multi_needle_and_reasoning_in_chinese(engine):
    cache = RequestCache(None, "needle-zh")
    multi = run_grid(engine, NeedleSettings(kind="multi", lang="zh", lengths=(256,), depths=(0, 100)), cache)
    assert set(multi.map.scores) == {(256, 0), (256, 100)}
    for cell in multi.cells:
        assert len(cell.needles) == 3 and cell.score == keywords_share(cell.answer, cell.keywords)
        assert cell.score in (0.0, 1 / 3, 2 / 3, 1.0)
    reasoning = run_grid(engine, NeedleSettings(kind="reasoning", lang="zh", lengths=(256,), depths=(50,)), cache)
    [cell] = reasoning.cells
    assert cell.expected in NAMES["zh"] and cell.keywords == [cell.expected] and len(cell.needles) == 3
    # the chain's eldest is named in a needle as someone's elder and is no one's child
    assert any(n.startswith(cell.expected) or n.endswith(f"是{cell.expected}。") for n in cell.needles)
    assert cell.score == boxed_score(cell.answer, cell.expected) and "\\boxed{}" in cell.question


def test_a_grid_longer_than_the_context_gets_a_clear_error(engine, services):
    from internlocal.services.needlebench import start_needlebench

    with pytest.raises(UserError, match="Length 4096 does not fit: the context holds 2048 tokens"):
        run_grid(engine, NeedleSettings(lengths=(256, 4096)), RequestCache(None, "too-long"))
    with pytest.raises(UserError, match="Length 1990 does not fit"):  # fits the context, not with the question
        run_grid(engine, NeedleSettings(lengths=(1990,)), RequestCache(None, "too-long"))
    with pytest.raises(UserError, match="Length 4096 does not fit smollm2-135m-instruct-q4_1's context of 2048"):
        start_needlebench(services, MODEL, lengths=(4096,))  # refused before any job starts
    assert services.catalog.list_jobs() == []


def test_cli_runs_needlebench_and_shows_the_stored_run_again(internlocal_bin, cli_env):
    def cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run([internlocal_bin, *args], env=cli_env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0 or not check, out.stderr
        return out

    out = cli("eval", "needle", MODEL, "--lengths", "128,256", "--depths", "0,100")
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"needlebench_single_en · {MODEL} · run ")
    assert lines[1].split()[-2:] == ["128", "256"] and [line.split()[0] for line in lines[2:4]] == ["0", "100"]
    scores = [float(v) for line in lines[2:4] for v in line.split()[-2:]]
    assert all(s in (0.0, 1.0) for s in scores)

    again = cli("eval", "needle", MODEL, "--lengths", "128,256", "--depths", "0,100", "--json")
    assert "the model was not loaded" in again.stdout  # every answer and token count came from the cache

    rows = list(csv.DictReader(io.StringIO(cli("eval", "needle-show", "--format", "csv").stdout)))
    assert [(r["length"], r["depth"]) for r in rows] == [("128", "0"), ("128", "100"), ("256", "0"), ("256", "100")]
    shown = json.loads(cli("eval", "needle-show", "--format", "json").stdout)
    assert shown["task"] == "needlebench_single_en" and sorted(c["score"] for c in shown["cells"]) == sorted(scores)
    assert cli("eval", "needle-show", str(shown["run"]), "--format", "md").stdout.startswith("**needlebench_single_en")
    board = json.loads(cli("eval", "results", "--json").stdout)
    assert [r["metric"] for r in board["rows"] if r["task"] == "needlebench_single_en"] == ["score"]

    too_long = cli("eval", "needle", MODEL, "--lengths", "99999", check=False)
    assert too_long.returncode == 1 and "does not fit" in too_long.stderr
    bad = cli("eval", "needle", MODEL, "--kind", "triple", check=False)
    assert bad.returncode == 1 and "use single, multi or reasoning" in bad.stderr


def _stored_run(services) -> tuple[int, NeedleMap]:
    """A NeedleBench run stored without a model: scores chosen so the colours are known."""
    lengths, depths = [256, 512, 1024], [0, 25, 50, 75, 100]
    scores = {(n, d): (1.0 if d < 50 else 0.0) for n in lengths for d in depths}
    cells = [CellResult(n, d, s, ["saffron"], "q?", ["needle"], "answer", n - 5, [0]) for (n, d), s in scores.items()]
    outcome = NeedleOutcome(NeedleMap("needlebench_single_en", MODEL, lengths, depths, scores), cells, 15, 0)
    run = store_run(services.catalog, outcome, NeedleSettings(), services.catalog.get_model(MODEL))
    return run.id, outcome.map


async def test_the_eval_screen_shows_a_needlebench_run_as_a_heat_map(home):
    from textual.widgets import DataTable

    from internlocal.bootstrap import bootstrap
    from internlocal.tui.app import InternLocalApp
    from internlocal.tui.screens.dialogs import NeedleMapDialog
    from internlocal.tui.widgets.heatmap import GREEN, RED, HeatCell
    from tests.test_tui import SIZE, greedy_settings, ready, until

    services = bootstrap(greedy_settings(home))
    run_id, _ = _stored_run(services)
    services.close()

    app = InternLocalApp(greedy_settings(home))
    async with app.run_test(size=SIZE) as pilot:
        await ready(pilot)
        await pilot.press("f9")
        await until(pilot, lambda: type(app.screen).__name__ == "EvalScreen")
        board = app.screen.query_one("#board", DataTable)
        await until(pilot, lambda: board.row_count == 1)
        assert str(board.get_row_at(0)[0]) == "needlebench_single_en"
        board.focus()
        board.move_cursor(row=0, column=2)
        await pilot.press("enter")  # Enter on the score opens the run's heat map
        await until(pilot, lambda: isinstance(app.screen, NeedleMapDialog))
        cells = list(app.screen.query(HeatCell))
        assert len(cells) == 15 and {(c.length, c.depth) for c in cells} == {
            (n, d) for n in (256, 512, 1024) for d in (0, 25, 50, 75, 100)
        }
        assert all(c.styles.background == (GREEN if c.depth < 50 else RED) for c in cells)
        assert {str(c.render()) for c in cells} == {"1.00", "0.00"}
        assert app.screen.heat_map.run == run_id
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "EvalScreen")
        await pilot.press("ctrl+g")  # the newest run, from anywhere on the screen
        await until(pilot, lambda: isinstance(app.screen, NeedleMapDialog))
        assert len(app.screen.query(HeatCell)) == 15
        await pilot.press("escape")
        await until(pilot, lambda: type(app.screen).__name__ == "EvalScreen")

        await pilot.press("ctrl+n")  # a run of the ticked model starts as a job (stopped here: the grid takes long)
        jobs = app.services.jobs
        [job] = [j for j in app.services.catalog.list_jobs() if j.kind == "eval.needlebench"]
        assert json.loads(job.params_json)["model"] == MODEL and app.screen._needle_job == job.id
        jobs.cancel(job.id, force=True)
        assert jobs.wait(job.id, timeout=30).status != "running"
