"""Knowledge bases on corpora the tests write: extraction, chunk spans, incremental sync, hybrid retrieval,
citations, refusal, faults. Real MiniLM embeddings, real chromadb and SQLite files."""

from __future__ import annotations

import json
import math
import shutil
import threading
import time
from pathlib import Path

import pytest

from internlocal.errors import UserError
from internlocal.kb.chunking import chunk_blocks, sentences
from internlocal.kb.extract import Unreadable, extract

DATA = Path(__file__).parent / "data" / "kb"


def make_pdf(pages: list[str]) -> bytes:
    """A small valid PDF with one line of Helvetica text per page."""
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{' '.join(f'{4 + 2 * i} 0 R' for i in range(len(pages)))}] /Count {len(pages)} >>",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for i, text in enumerate(pages):
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream.decode()}\nendstream")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from internlocal.engines.loader import local_embedder

    return local_embedder(minilm_path, model_name="all-minilm-l6-v2")


class Counting:
    """The real embedder, counting the texts it is asked to embed; optionally failing after some (a crash)."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.model_name, self.dimension = inner, inner.model_name, inner.dimension
        self.texts: list[str] = []
        self.fail_after = fail_after

    def embed(self, texts):
        if self.fail_after is not None and len(self.texts) + len(texts) > self.fail_after:
            raise KeyboardInterrupt  # the user pressed Ctrl+C in the middle of a sync
        self.texts.extend(texts)
        return self.inner.embed(texts)


def write_corpus(root: Path) -> Path:
    docs = root / "docs"
    (docs / "travel").mkdir(parents=True)
    (docs / "travel" / "paris.md").write_text(
        "# Paris\n\nParis is the capital of France.\n\n## Landmarks\n\nThe Eiffel Tower was completed in 1889 for the "
        "World's Fair. It is 330 metres tall.\n\n## Food\n\nCroissants are sold in every bakery in the city.\n"
    )
    (docs / "devices.txt").write_text(
        "Router notes\n\nThe default administration address is 192.168.50.1.\n\n"
        "Error E-4127 means the temperature sensor is disconnected: reseat the sensor cable.\n"
    )
    (docs / "beijing.md").write_text(
        "# 北京\n\n故宫每周一闭馆。门票需要提前在网上预约。\n\n长城非常长。\n", encoding="utf-8"
    )
    return docs


OVEN = "# Oven\n\nThe self-cleaning cycle of the oven takes three hours and locks the door.\n"
OVEN_QUESTION = "How long does the oven's self-cleaning cycle take?"


def write_manuals(root: Path) -> Path:
    """A second folder, beside the corpus: one appliance manual."""
    manuals = root / "manuals"
    manuals.mkdir()
    (manuals / "oven.md").write_text(OVEN)
    return manuals


# -- extraction and chunking (no model) ---------------------------------------------------------------


def test_chunks_keep_headings_spans_and_sentence_boundaries_in_english_and_chinese():
    blocks = extract(
        Path("a.md"),
        (
            "# Guide\n\nIntro line.\n\n## Setup\n\nFirst sentence here. Second one follows! Third?\n"
            "Still third.\n\n```\n# not a heading\n```\n\n## 中文\n\n巴黎是法国的首都。埃菲尔铁塔很高！你去过吗？\n"
        ).encode(),
    )
    chunks = chunk_blocks(blocks, size=60, overlap=25)
    setup = [c for c in chunks if c.heading == "Guide > Setup"]
    assert setup and all(c.start_line >= 7 for c in setup)
    assert setup[0].text.startswith("First sentence here.") and setup[0].start_line == 7
    assert any(
        "# not a heading" in c.text and c.heading == "Guide > Setup" for c in chunks
    )  # code fences are not headings
    chinese = [c for c in chunks if c.heading == "Guide > 中文"]
    assert "".join(c.text for c in chinese).count("巴黎是法国的首都。") == 1 and chinese[0].start_line == 16
    assert [s for s, _ in sentences("巴黎是法国的首都。埃菲尔铁塔很高！你去过吗？")] == [
        "巴黎是法国的首都。",
        "埃菲尔铁塔很高！",
        "你去过吗？",
    ]
    # chunks end at sentence ends and never exceed the size; the overlap repeats whole sentences
    long = extract(Path("b.txt"), (" ".join(f"Sentence number {i} is here." for i in range(40))).encode())
    parts = chunk_blocks(long, size=120, overlap=40)
    assert all(len(c.text) <= 120 and c.text.endswith(".") for c in parts)
    assert parts[1].text.split(". ")[0] in parts[0].text  # overlap
    with pytest.raises(ValueError):
        chunk_blocks(long, size=100, overlap=100)


def test_formats_pdf_docx_html_code_encodings_and_unreadable_files(tmp_path):
    import docx
    from pypdf import PdfReader, PdfWriter

    pdf = make_pdf(["The warranty lasts two years.", "Returns are accepted within 30 days."])
    blocks = extract(Path("terms.pdf"), pdf)
    assert [(b.page, b.text) for b in blocks] == [
        (1, "The warranty lasts two years."),
        (2, "Returns are accepted within 30 days."),
    ]

    writer = PdfWriter(clone_from=PdfReader(__import__("io").BytesIO(pdf)))
    writer.encrypt(user_password="secret", owner_password="owner")
    locked = tmp_path / "locked.pdf"
    with locked.open("wb") as fh:
        writer.write(fh)
    with pytest.raises(Unreadable, match="encrypted PDF"):
        extract(locked, locked.read_bytes())
    with pytest.raises(Unreadable, match="damaged PDF"):
        extract(Path("broken.pdf"), pdf[: len(pdf) // 3])

    document = docx.Document()
    document.add_heading("Policies", level=1)
    document.add_paragraph("Holidays must be requested two weeks ahead.")
    path = tmp_path / "policies.docx"
    document.save(path)
    [block] = extract(path, path.read_bytes())
    assert block.heading == "Policies" and block.text == "Holidays must be requested two weeks ahead."
    with pytest.raises(Unreadable, match="damaged DOCX"):
        extract(Path("x.docx"), b"PK\x03\x04 not really a zip")

    html = (
        "<html><head><style>p{}</style><script>var secret=1;</script></head>"
        "<body><h1>FAQ</h1><p>Shipping takes <b>three</b> days.</p></body></html>"
    )
    [block] = extract(Path("faq.html"), html.encode())
    assert (block.heading, block.text) == ("FAQ", "Shipping takes three days.")

    gbk = "北京是中国的首都，故宫在市中心。长城在北京的北边，很多人周末去爬长城。".encode("gbk")
    assert "故宫" in extract(Path("notes.txt"), gbk)[0].text  # not UTF-8: the encoding is detected
    with pytest.raises(Unreadable, match="binary"):
        extract(Path("image.txt"), b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    code = extract(Path("tool.py"), b"def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n")
    assert [b.line for b in code] == [1, 5]


# -- the index ---------------------------------------------------------------------------------------


def test_sync_cites_the_right_span_reembeds_only_changed_chunks_and_forgets_deleted_files(tmp_path, minilm):
    from internlocal.kb.index import Index

    docs = write_corpus(tmp_path)
    embedder = Counting(minilm)
    index = Index(tmp_path / "index", embedder, chunk_size=200, chunk_overlap=0)
    report = index.sync([docs])
    assert (report.files_indexed, report.skipped) == (3, [])
    first = index.counts()
    assert first["chunks"] == first["vectors"] == len(embedder.texts)

    [hit] = index.search("When was the Eiffel Tower completed?", k=1)
    assert hit.relpath == "travel/paris.md" and hit.heading == "Paris > Landmarks"
    assert (hit.start_line, hit.end_line) == (7, 7) and hit.citation == "travel/paris.md:7"
    assert "1889" in hit.text and (docs / "travel" / "paris.md").read_text().splitlines()[6].startswith(
        "The Eiffel Tower"
    )
    [hit] = index.search("故宫哪一天闭馆？", k=1)
    assert hit.relpath == "beijing.md" and "闭馆" in hit.text

    # metadata filters: file kind and folder
    assert {h.relpath for h in index.search("capital", k=10, kinds=["text"])} == {"devices.txt"}
    assert {h.relpath for h in index.search("capital", k=10, folder=str(docs / "travel"))} == {"travel/paris.md"}
    assert index.search("capital", k=10, kinds=["pdf"]) == []

    # nothing changed: nothing read, nothing embedded
    embedder.texts.clear()
    again = index.sync([docs])
    assert (again.files_unchanged, again.files_indexed, embedder.texts) == (3, 0, [])

    # one paragraph of one file changes: exactly that chunk is embedded again
    paris = docs / "travel" / "paris.md"
    paris.write_text(paris.read_text().replace("sold in every bakery in the city", "baked fresh at dawn"))
    changed = index.sync([docs])
    assert changed.files_indexed == 1 and changed.chunks_embedded == 1 and changed.chunks_removed == 1
    assert embedder.texts == ["Paris > Food\nCroissants are baked fresh at dawn."]
    assert index.counts() == first

    # a deleted file disappears from results (and from both stores)
    devices_chunks = next(f["chunks"] for f in index.files() if f["relpath"] == "devices.txt")
    (docs / "devices.txt").unlink()
    gone = index.sync([docs])
    assert gone.files_removed == 1
    assert all(h.relpath != "devices.txt" for h in index.search("What does error E-4127 mean?", k=5))
    counts = index.counts()
    assert counts["chunks"] == counts["vectors"] == first["chunks"] - devices_chunks
    index.close()


def test_faults_symlinks_huge_binary_deleted_mid_sync_and_interrupted_sync(tmp_path, minilm):
    from internlocal.kb.index import FileLimits, Index

    docs = write_corpus(tmp_path)
    (docs / "loop").symlink_to(docs, target_is_directory=True)  # a folder linking to its parent
    outside = tmp_path / "private.md"
    outside.write_text("# Secret\n\nThe safe code is 4471.\n")
    (docs / "private.md").symlink_to(outside)  # a link leading out of the chosen folder
    (docs / "huge.txt").write_text("word " * 5000)
    (docs / "photo.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00binary")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 truncated")
    for i in range(6):
        (docs / f"note{i}.txt").write_text(f"Note {i}: the meeting room number is {100 + i}.\n")

    index = Index(
        tmp_path / "index", Counting(minilm), chunk_size=300, chunk_overlap=0, limits=FileLimits(max_file_bytes=10_000)
    )
    deleted = []

    def delete_next(done, total, path):  # a file vanishes while the sync runs
        if not deleted:
            victim = docs / "note5.txt"
            victim.unlink()
            deleted.append(victim)

    report = index.sync([docs], progress=delete_next)
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert reasons["private.md"] == "links outside the knowledge base's folders"
    assert "symlink loop" in reasons["loop"]
    assert reasons["huge.txt"].startswith("is 24.4 KB, larger than the limit of 9.8 KB (kb_max_file_mb)")
    assert reasons["photo.md"].startswith("binary")
    assert reasons["broken.pdf"].startswith("damaged PDF")
    assert all("4471" not in h.text for h in index.search("What is the safe code?", k=10))
    paths = [f["path"] for f in index.files() if f["status"] == "indexed"]
    assert len(paths) == len(set(paths)) and not any("/loop/" in p for p in paths)  # nothing indexed twice
    assert str(docs / "note5.txt") not in paths
    complete = index.counts()
    index.close()

    # an interrupted sync: Ctrl+C while embedding; the next sync completes it, nothing lost or doubled
    shutil.rmtree(tmp_path / "index")
    crashing = Index(
        tmp_path / "index",
        Counting(minilm, fail_after=0),
        chunk_size=300,
        chunk_overlap=0,
        limits=FileLimits(max_file_bytes=10_000),
    )
    with pytest.raises(KeyboardInterrupt):
        crashing.sync([docs])
    assert crashing.counts()["chunks"] == 0  # no file half-indexed
    crashing.close()
    resumed = Index(
        tmp_path / "index", Counting(minilm), chunk_size=300, chunk_overlap=0, limits=FileLimits(max_file_bytes=10_000)
    )
    resumed.sync([docs])
    assert resumed.counts() == complete
    resumed.close()

    # stopped between files (the job's cancel): what was done stays, the rest follows next time
    shutil.rmtree(tmp_path / "index")
    stopping = Index(
        tmp_path / "index", Counting(minilm), chunk_size=300, chunk_overlap=0, limits=FileLimits(max_file_bytes=10_000)
    )
    calls = []
    with pytest.raises(InterruptedError):
        stopping.sync([docs], should_stop=lambda: calls.append(1) or len(calls) > 4)
    partial = stopping.counts()
    assert 0 < partial["files"] < complete["files"] and partial["chunks"] == partial["vectors"]
    stopping.sync([docs])
    assert stopping.counts() == complete
    stopping.close()


def test_hybrid_beats_dense_on_exact_terms_and_the_threshold_separates_unanswerable_questions(tmp_path, minilm):
    from internlocal.kb.evaluate import evaluate, load_questions
    from internlocal.kb.index import Index

    index = Index(tmp_path / "index", minilm)
    index.sync([DATA / "corpus"])
    questions = load_questions(DATA / "questions.jsonl")
    exact = [q for q in questions if "fault E-" in q["question"]]
    hybrid = evaluate(index, exact, threshold=0.35, mode="hybrid")
    dense = evaluate(index, exact, threshold=0.35, mode="dense")
    assert hybrid["recall@5"] > dense["recall@5"] and hybrid["mrr"] > dense["mrr"]
    assert hybrid["recall@5"] == 1.0

    full = evaluate(index, questions, threshold=0.35)
    assert full["recall@5"] >= 0.95 and full["mrr"] >= 0.9 and full["ndcg@10"] >= 0.9
    assert full["refusal_precision"] == 1.0 and full["refusal_recall"] == 1.0
    assert full["fitted_accuracy"] == 1.0
    index.close()

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "ok?", "sources": []}\n{"question": 5}\n')
    with pytest.raises(UserError, match="line 2"):
        load_questions(bad)


def test_a_source_ranked_second_scores_mrr_one_half(tmp_path, minilm):
    """Hand-checkable metrics on two one-chunk files: a page repeating the question without its answer is first in
    both the dense and the BM25 list (the answering page shares no word with the question), so the page that
    answers is ranked second whatever the cosine similarities are."""
    from internlocal.kb.evaluate import evaluate, load_questions
    from internlocal.kb.index import Index

    docs = tmp_path / "docs"
    docs.mkdir()
    question = "What time does the bakery open on Sundays?"
    (docs / "faq.md").write_text(f"# Questions we hear\n\n{question}\n")
    (docs / "hours.txt").write_text("Our shop welcomes customers from 7 am on weekends.\n")
    labelled = tmp_path / "questions.jsonl"
    labelled.write_text(
        "".join(json.dumps({"question": question, "sources": [s]}) + "\n" for s in ("hours.txt", "faq.md"))
    )
    rows = load_questions(labelled)
    index = Index(tmp_path / "index", minilm)
    index.sync([docs])

    second = evaluate(index, rows[:1], threshold=0.35)
    assert second["per_question"][0]["retrieved"] == ["faq.md", "hours.txt"]
    assert second["per_question"][0]["rank"] == 2 and second["mrr"] == 0.5
    assert second["recall@5"] == 1.0 and second["ndcg@10"] == round(1 / math.log2(3), 4)
    both = evaluate(index, rows, threshold=0.35)
    assert [r["rank"] for r in both["per_question"]] == [2, 1] and both["mrr"] == 0.75
    index.close()


def test_answers_cite_the_passages_given_and_refuse_off_topic_questions(tmp_path, minilm, engine):
    from internlocal.kb.answer import REFUSAL, answer
    from internlocal.kb.index import Index

    docs = write_corpus(tmp_path)
    index = Index(tmp_path / "index", minilm, chunk_size=200, chunk_overlap=0)
    index.sync([docs])
    from internlocal.engines.base import GenerationParams

    short = GenerationParams.greedy(max_tokens=48)
    result = answer(engine, index, "When was the Eiffel Tower completed?", threshold=0.35, params=short).collect()
    assert not result.refused and "1889" in result.text
    assert result.sources[0]["citation"] == "travel/paris.md:7" and result.sources[0]["n"] == 1
    # the sources are the passages given, with their spans, whatever the model wrote
    assert [s["cid"] for s in result.sources] == [h.cid for h in result.hits]
    assert result.record()["refused"] is False and result.record()["kb_sources"][0]["path"].endswith("paris.md")

    off_topic = answer(engine, index, "What is the boiling point of mercury?", threshold=0.35, params=short).collect()
    assert off_topic.refused and off_topic.text == REFUSAL and off_topic.sources == []
    assert off_topic.evidence < 0.35
    index.close()


def test_library_refuses_another_embedding_model_and_reembeds_through_a_remote_endpoint(home, settings, minilm, engine):
    """A knowledge base built with MiniLM is not queried with another model's vectors; `reembed` rebuilds it,
    here through an OpenAI /v1/embeddings endpoint served on 127.0.0.1."""
    import socket

    import uvicorn

    from internlocal.bootstrap import bootstrap
    from internlocal.hub.library import add_remote
    from internlocal.kb import library
    from internlocal.server.app import ServerConfig, create_app

    docs = write_corpus(home.parent)
    services = bootstrap(settings)
    catalog = services.catalog
    kb = library.create_kb(settings, catalog, "notes", [str(docs)], chunk_size=200, chunk_overlap=0)
    summary = library.sync_kb(catalog, "notes")
    assert summary["files"] == 3 and catalog.get_kb("notes").stats["chunks"] == summary["chunks"]
    with pytest.raises(UserError, match="exists already"):
        library.create_kb(settings, catalog, "notes", [])
    with pytest.raises(UserError, match="does not exist"):
        library.add_folders(catalog, "notes", [str(home / "nowhere")])

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(
        engine, ServerConfig(model_name="default", embedding_model="minilm"), embedder_factory=lambda: minilm
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        add_remote(catalog, "minilm-remote", f"http://127.0.0.1:{port}/v1", model="minilm", kind="embedding")
        with pytest.raises(UserError, match="built with all-minilm-l6-v2"):
            library.open_index(catalog, "notes", embedder="minilm-remote")
        library.reembed_kb(catalog, "notes", "minilm-remote")
        assert catalog.get_kb("notes").embedder == "minilm-remote"
        index = library.open_index(catalog, "notes")
        [hit] = index.search("When was the Eiffel Tower completed?", k=1)
        assert hit.citation == "travel/paris.md:7" and index.counts()["vectors"] == summary["chunks"]
        index.close()
    finally:
        server.should_exit = True
        thread.join(10)

    assert library.remove_kb(catalog, "notes")["knowledge_base"] == "notes"
    assert not Path(kb.path).exists() and (docs / "travel" / "paris.md").exists()  # the documents stay
    services.close()


def test_watch_resyncs_when_a_file_appears(home, settings, minilm):
    from internlocal.bootstrap import bootstrap
    from internlocal.kb import library
    from internlocal.kb.watch import watch_kb

    docs = write_corpus(home.parent)
    services = bootstrap(settings)
    library.create_kb(settings, services.catalog, "watched", [str(docs)], chunk_size=200, chunk_overlap=0)
    syncs: list[dict] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=watch_kb,
        args=(services.catalog, "watched"),
        kwargs={"on_sync": syncs.append, "stop": stop, "debounce_ms": 100},
        daemon=True,
    )
    thread.start()
    deadline = time.monotonic() + 60
    while not syncs and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # the watcher is armed after the first sync
    (docs / "new.md").write_text("# Bikes\n\nThe bike shop opens at nine.\n")
    while len(syncs) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    thread.join(10)
    assert len(syncs) >= 2 and syncs[-1]["files_indexed"] == 1 and syncs[-1]["files"] == 4
    services.close()


# -- taking folders out of a knowledge base ---------------------------------------------------------------


def test_removing_folders_drops_their_passages_and_never_touches_the_documents(home, settings):
    """Folders: docs/travel, docs (which also holds docs/travel) and manuals. Taking out manuals drops its file
    from both stores at once (no sync needed); taking out docs/travel keeps paris.md, which docs still holds,
    and the next sync files it under docs; taking out docs empties the index."""
    from internlocal.bootstrap import bootstrap
    from internlocal.kb import library

    docs = write_corpus(home.parent)
    manuals = write_manuals(home.parent)
    travel = docs / "travel"
    services = bootstrap(settings)
    catalog = services.catalog
    folders = [str(travel), str(docs), str(manuals)]
    library.create_kb(settings, catalog, "notes", folders, chunk_size=200, chunk_overlap=0)
    assert library.sync_kb(catalog, "notes")["files"] == 4

    def search(question: str) -> list:
        index = library.open_index(catalog, "notes")
        try:
            return index.search(question, k=10)
        finally:
            index.close()

    assert search(OVEN_QUESTION)[0].path == str(manuals / "oven.md")
    removed = library.remove_folders(catalog, "notes", [str(manuals)])
    assert removed["removed_folders"] == [str(manuals)] and removed["folders"] == [str(travel), str(docs)]
    assert (removed["files_removed"], removed["files"]) == (1, 3) and removed["chunks_removed"] >= 1
    assert removed["chunks"] == removed["vectors"]
    assert not any(h.path.startswith(str(manuals)) for h in search(OVEN_QUESTION))
    assert (manuals / "oven.md").read_text() == OVEN  # the document itself is untouched
    kb = catalog.get_kb("notes")
    assert kb.folders == [str(travel), str(docs)] and kb.stats["files"] == 3
    again = library.sync_kb(catalog, "notes")  # the index already matched: nothing to do
    assert (again["files_indexed"], again["files_removed"], again["files"]) == (0, 0, 3)

    nested = library.remove_folders(catalog, "notes", [str(travel)])
    assert (nested["files_removed"], nested["files"]) == (0, 3)  # docs still holds paris.md
    assert search("When was the Eiffel Tower completed?")[0].path == str(travel / "paris.md")
    refiled = library.sync_kb(catalog, "notes")  # paris.md is now docs' file: cited from there
    assert (refiled["files_indexed"], refiled["files_removed"], refiled["files"]) == (1, 0, 3)
    assert search("When was the Eiffel Tower completed?")[0].citation == "travel/paris.md:7"

    with pytest.raises(UserError, match="is not among notes's folders"):
        library.remove_folders(catalog, "notes", [str(manuals)])
    emptied = library.remove_folders(catalog, "notes", [str(docs)])
    assert (emptied["files_removed"], emptied["files"], emptied["chunks"], emptied["vectors"]) == (3, 0, 0, 0)
    assert catalog.get_kb("notes").folders == [] and search("Eiffel Tower") == []
    assert sorted(p.name for p in docs.rglob("*") if p.is_file()) == ["beijing.md", "devices.txt", "paris.md"]
    services.close()


def test_cli_remove_folder(tmp_path, internlocal_bin, cli_env):
    import subprocess

    def run(*args, check=True):
        proc = subprocess.run([internlocal_bin, *args], env=cli_env, capture_output=True, text=True, timeout=300)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    docs = write_corpus(tmp_path)
    manuals = write_manuals(tmp_path)
    run("kb", "create", "home-notes", str(docs), str(manuals), "--json")
    removed = json.loads(run("kb", "remove-folder", "home-notes", str(manuals), "--json").stdout)
    assert removed["removed_folders"] == [str(manuals)] and removed["folders"] == [str(docs)]
    assert (removed["files_removed"], removed["files"]) == (1, 3)
    hits = json.loads(run("kb", "search", "home-notes", OVEN_QUESTION, "-k", "10", "--json").stdout)
    assert hits and not any(h["path"].startswith(str(manuals)) for h in hits)
    assert (manuals / "oven.md").read_text() == OVEN
    [listed] = json.loads(run("kb", "list", "--json").stdout)
    assert listed["folders"] == [str(docs)] and listed["files"] == 3

    missing = run("kb", "remove-folder", "home-notes", str(manuals), check=False)
    assert missing.returncode == 1 and "is not among home-notes's folders" in missing.stderr
    assert "Traceback" not in missing.stderr
    text = run("kb", "remove-folder", "home-notes", str(docs)).stdout
    assert text.startswith(f"home-notes: removed {docs} (3 files") and "0 files, 0 chunks remain" in text


async def test_knowledge_screen_removes_a_folder_after_picking_and_confirming(home, settings):
    """Ctrl+R on the Knowledge screen (F11): pick one of the base's folders, confirm, and its passages are no
    longer found; Escape in the picker changes nothing."""
    from textual.widgets import DataTable, Input, OptionList

    from internlocal.bootstrap import bootstrap
    from internlocal.kb import library
    from internlocal.tui.app import InternLocalApp
    from internlocal.tui.screens.dialogs import ConfirmDialog
    from internlocal.tui.screens.knowledge import FolderPickerDialog, KnowledgeScreen
    from internlocal.tui.widgets.fitted_table import FittedTable

    docs = write_corpus(home.parent)
    manuals = write_manuals(home.parent)
    services = bootstrap(settings)
    library.create_kb(settings, services.catalog, "home", [str(docs), str(manuals)], chunk_size=200, chunk_overlap=0)
    library.sync_kb(services.catalog, "home")
    services.close()

    async def until(pilot, predicate, timeout=60.0):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "the UI did not get there in time"
            await pilot.pause(0.05)

    app = InternLocalApp(settings)
    async with app.run_test(size=(140, 44)) as pilot:
        await until(pilot, lambda: app.services is not None)
        await pilot.press("f11")
        await until(pilot, lambda: isinstance(app.screen, KnowledgeScreen))
        screen = app.screen
        kbs = screen.query_one("#kbs", FittedTable)
        await until(pilot, lambda: kbs.row_count == 1)
        # by column name: with two long folder paths the table drops its less important columns to fit
        assert kbs.cells("home")["files"] == "4" and kbs.cells("home")["folders"] == f"{docs}, {manuals}"

        kbs.focus()
        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, FolderPickerDialog))
        await pilot.press("escape")
        await until(pilot, lambda: app.screen is screen)
        assert app.services.catalog.get_kb("home").folders == [str(docs), str(manuals)]

        await pilot.press("ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, FolderPickerDialog))
        picker = app.screen.query_one(OptionList)
        picker.focus()
        picker.highlighted = 1
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        assert str(manuals) in app.screen.question
        await pilot.press("y")
        await until(pilot, lambda: app.screen is screen and kbs.cells("home")["files"] == "3")
        assert kbs.cells("home")["folders"] == str(docs)

        query = screen.query_one("#query", Input)
        query.value = OVEN_QUESTION
        query.focus()
        await pilot.press("enter")
        hits = screen.query_one("#hits", DataTable)
        await until(pilot, lambda: hits.row_count >= 1, timeout=120)
        assert not any(hits.get_row_at(i)[1].startswith("oven.md") for i in range(hits.row_count))
    assert (manuals / "oven.md").read_text() == OVEN


def test_cli_create_search_eval_tune_and_rm(tmp_path, internlocal_bin, cli_env):
    import subprocess

    def run(*args, check=True):
        proc = subprocess.run([internlocal_bin, *args], env=cli_env, capture_output=True, text=True, timeout=300)
        if check:
            assert proc.returncode == 0, proc.stderr
        return proc

    corpus = tmp_path / "corpus"
    shutil.copytree(DATA / "corpus", corpus)
    (corpus / "locked.pdf").write_bytes(b"%PDF-1.4 nothing more")
    created = run("kb", "create", "home-notes", str(corpus), "--json")
    summary = [e for e in map(json.loads, filter(None, created.stdout.splitlines())) if e.get("type") == "result"]
    assert summary and summary[-1]["result"]["files"] == 39
    assert summary[-1]["result"]["skipped"][0]["reason"].startswith("damaged PDF")
    hits = json.loads(run("kb", "search", "home-notes", "What does error E-5530 mean?", "-k", "2", "--json").stdout)
    assert (
        hits[0]["relpath"] == "devices/thermostat.md"
        and hits[0]["heading"] == "Halvorsen T-300 thermostat > Error codes"
    )
    result = json.loads(run("kb", "eval", "home-notes", str(DATA / "questions.jsonl"), "--tune", "--json").stdout)
    assert result["recall@5"] >= 0.95 and result["fitted_accuracy"] == 1.0
    listed = json.loads(run("kb", "list", "--json").stdout)
    assert listed[0]["threshold"] == result["fitted_threshold"]
    missing = run("kb", "search", "nope", "x", check=False)
    assert missing.returncode == 1 and "No knowledge base 'nope'" in missing.stderr
    run("kb", "rm", "home-notes")
    assert json.loads(run("kb", "list", "--json").stdout) == [] and (corpus / "devices" / "bike.md").exists()


def test_a_chat_switched_to_a_knowledge_base_answers_with_stored_sources_and_refuses(home, settings, minilm):
    from internlocal.bootstrap import bootstrap
    from internlocal.engines.base import GenerationParams
    from internlocal.errors import NotFound
    from internlocal.kb import library
    from internlocal.kb.answer import REFUSAL

    docs = write_corpus(home.parent)
    services = bootstrap(settings)
    library.create_kb(settings, services.catalog, "travel", [str(docs)], chunk_size=200, chunk_overlap=0)
    library.sync_kb(services.catalog, "travel")
    chats = services.chats
    chat = chats.new_chat(params=GenerationParams.greedy(max_tokens=48))
    with pytest.raises(NotFound):
        chats.set_mode(chat.id, "kb", "no-such-kb")
    assert services.catalog.get_chat(chat.id).mode == "chat"  # a bad switch changes nothing
    chats.set_mode(chat.id, "kb", "travel")

    reply = chats.send(chat.id, "When was the Eiffel Tower completed?")
    text = "".join(reply)
    assert "1889" in text
    stored = reply.message.sources
    assert stored["refused"] is False and stored["kb_sources"][0]["citation"] == "travel/paris.md:7"

    refused = chats.send(chat.id, "What is the boiling point of mercury?")
    assert "".join(refused) == REFUSAL and refused.message.sources["refused"] is True
    assert [m.role for m in services.catalog.messages(chat.id)] == ["user", "assistant", "user", "assistant"]
    services.close()


def test_a_cross_encoder_reorders_the_fused_candidates_by_its_own_scores(tmp_path, minilm, minilm_path):
    """Reranking plumbing with a real cross-encoder: MiniLM's encoder with a one-label head (untrained, so its
    order is arbitrary but fixed); the results must be the fused candidates in exactly its score order."""
    from sentence_transformers import CrossEncoder

    from internlocal.engines.sentence_transformers import CrossEncoderReranker
    from internlocal.kb.index import Index

    CrossEncoder(str(minilm_path), num_labels=1, device="cpu", local_files_only=True).save_pretrained(
        str(tmp_path / "ce")
    )
    reranker = CrossEncoderReranker(tmp_path / "ce")
    docs = write_corpus(tmp_path)
    index = Index(tmp_path / "index", minilm, chunk_size=200, chunk_overlap=0)
    index.sync([docs])
    query = "When was the Eiffel Tower completed?"
    candidates = index.search(query, k=20)
    reranked = index.search(query, k=3, reranker=reranker)
    scores = reranker.score(query, [f"{h.heading}\n{h.text}" if h.heading else h.text for h in candidates])
    expected = [h.cid for _, h in sorted(zip(scores, candidates, strict=True), key=lambda pair: -pair[0])][:3]
    assert [h.cid for h in reranked] == expected
    assert [h.rerank_score for h in reranked] == sorted((h.rerank_score for h in reranked), reverse=True)
    assert all(h.similarity == h.similarity for h in reranked)  # the refusal evidence is still the cosine similarity
    index.close()


def damaged_docx() -> bytes:
    """A real DOCX whose content-types part is replaced by other XML: python-docx fails inside with an
    AttributeError ('lxml.etree._Element' object has no attribute 'overrides'), not an error of its own."""
    import io
    import zipfile

    import docx

    document = docx.Document()
    document.add_paragraph("This paragraph is never read.")
    original = io.BytesIO()
    document.save(original)
    damaged = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(original.getvalue())) as source, zipfile.ZipFile(damaged, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            target.writestr(
                item.filename, b"<?xml version='1.0'?><junk/>" if item.filename == "[Content_Types].xml" else data
            )
    return damaged.getvalue()


def test_one_bad_file_skips_itself_and_limits_name_the_setting_that_raises_them(tmp_path, minilm):
    from internlocal.config import Settings
    from internlocal.kb.index import FileLimits, Index

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("# Keys\n\nThe spare key is under the blue flowerpot.\n")
    (docs / "report.docx").write_bytes(damaged_docx())
    (docs / "dump.txt").write_text("qzx" * 70_000)  # one line of 210,000 characters: generated data
    (docs / "long.txt").write_text("\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor " * 40 for i in range(80)))
    limits = FileLimits.from_settings(Settings(home=tmp_path / "home", kb_max_chunks_per_file=40))
    index = Index(tmp_path / "index", Counting(minilm), limits=limits)
    report = index.sync([docs])
    reasons = {Path(p).name: r for p, r in report.skipped}
    assert reasons["report.docx"].startswith("damaged DOCX (AttributeError: ")
    assert reasons["dump.txt"] == (
        "has a line of 210,000 characters, longer than kb_max_line_chars = 100,000 (generated or minified data?); "
        "`internlocal config set kb_max_line_chars 210000` indexes it"
    )
    assert reasons["long.txt"].startswith("makes ") and "more than kb_max_chunks_per_file = 40" in reasons["long.txt"]
    assert report.files_indexed == 1  # the healthy file beside them
    assert "flowerpot" in index.search("Where is the spare key?", k=1)[0].text
    index.close()

    # the limit raised (what the sentence says to do): the next sync indexes the file it skipped for it
    raised = Index(tmp_path / "index", Counting(minilm), limits=FileLimits(max_chunks=200))
    again = raised.sync([docs])
    assert again.files_indexed == 1 and "long.txt" not in {Path(p).name for p, _ in again.skipped}
    assert {Path(p).name for p, _ in again.skipped} == {"report.docx", "dump.txt"}
    assert any("Paragraph 79" in h.text for h in raised.search("Paragraph 79: lorem ipsum", k=3, mode="bm25"))
    raised.close()


def test_two_syncs_started_together_embed_each_change_once(tmp_path, internlocal_bin, cli_env):
    """Before the sync lock, both re-embedded every changed file; now the second waits, then finds nothing to do.
    The folder holds a damaged DOCX too: `kb create` used to end with its AttributeError and index nothing."""
    import subprocess

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "notes.md").write_text("# Keys\n\nThe spare key is under the blue flowerpot.\n")
    (docs / "report.docx").write_bytes(damaged_docx())
    created = subprocess.run(
        [internlocal_bin, "kb", "create", "home", str(docs), "--json"], env=cli_env, capture_output=True, text=True
    )
    assert created.returncode == 0, created.stderr
    result = [e for e in map(json.loads, filter(None, created.stdout.splitlines())) if e.get("type") == "result"]
    assert [s["path"] for s in result[-1]["result"]["skipped"]] == [str(docs / "report.docx")]
    for i in range(12):
        (docs / f"new{i}.md").write_text(f"# Room {i}\n\nThe meeting room {i} has {i + 3} chairs and a whiteboard.\n")
    syncs = [
        subprocess.Popen(
            [internlocal_bin, "kb", "sync", "home", "--json"],
            env=cli_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=240) for proc in syncs]
    embedded = []
    for proc, (out, err) in zip(syncs, outputs, strict=True):
        assert proc.returncode == 0, err
        done = [e for e in map(json.loads, filter(None, out.splitlines())) if e.get("type") == "result"]
        embedded.append(done[-1]["result"]["chunks_embedded"])
    assert sorted(embedded) == [0, 12]
    found = subprocess.run(
        [internlocal_bin, "kb", "search", "home", "How many chairs does meeting room 7 have?", "-k", "1", "--json"],
        env=cli_env,
        capture_output=True,
        text=True,
    )
    assert "meeting room 7 has 10 chairs" in json.loads(found.stdout)[0]["text"]


def test_a_lock_held_elsewhere_refuses_with_a_sentence_or_waits(tmp_path):
    import subprocess
    import sys

    from internlocal.jobs.locks import exclusive

    lock = tmp_path / "thing.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom pathlib import Path\nfrom internlocal.jobs.locks import exclusive\n"
            f"with exclusive(Path({str(lock)!r}), 'a test', wait=False):\n"
            "    print('held', flush=True)\n    time.sleep(3)\nprint('released', flush=True)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    refused = rf"^a test is already running \(pid {holder.pid}\); wait for it"
    with pytest.raises(UserError, match=refused), exclusive(lock, "a test", wait=False):
        pass
    with exclusive(lock, "a test", wait=True):  # waits until the holder lets go
        assert holder.stdout.readline().strip() == "released"
    holder.wait()
