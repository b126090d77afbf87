"""Vision models in the registry, the pull, the import and the listings: a GGUF text model and its projector
(mmproj, GGUF architecture ``clip``) pulled, registered and removed together."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from internlocal.errors import UserError
from internlocal.hub.library import import_model, remove_model
from internlocal.hub.pull import pull_model
from internlocal.hub.registry import load_registry
from internlocal.hub.store import Store
from tests.hubserver import HubServer

VISION = {
    "internvl3-1b-instruct": "ggml-org/InternVL3-1B-Instruct-GGUF",
    "internvl3-2b-instruct": "ggml-org/InternVL3-2B-Instruct-GGUF",
    "internvl3-8b-instruct": "ggml-org/InternVL3-8B-Instruct-GGUF",
    "internvl2_5-1b": "ggml-org/InternVL2_5-1B-GGUF",
    "internvl2_5-4b": "ggml-org/InternVL2_5-4B-GGUF",
    "smolvlm-256m-instruct": "ggml-org/SmolVLM-256M-Instruct-GGUF",
    "smolvlm-500m-instruct": "ggml-org/SmolVLM-500M-Instruct-GGUF",
}
REPO = VISION["smolvlm-256m-instruct"]
TEXT, MMPROJ = "SmolVLM-256M-Instruct-Q8_0.gguf", "mmproj-SmolVLM-256M-Instruct-Q8_0.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # the commit tests/hubserver.py answers
TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}<|assistant|>"


def write_gguf(path: Path, arch: str, *, seed: int = 0, chat_template: str | None = None) -> Path:
    """A small but well-formed GGUF: ``arch`` is general.architecture (``clip`` for a projector)."""
    from gguf import GGUFWriter

    writer = GGUFWriter(str(path), arch)
    writer.add_name(path.stem)
    if chat_template:
        writer.add_chat_template(chat_template)
        writer.add_context_length(2048)
    writer.add_tensor("w.weight", np.arange(64, dtype=np.float32) + seed)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture
def text_gguf(tmp_path) -> Path:
    return write_gguf(tmp_path / "tiny-vlm-Q8_0.gguf", "llama", chat_template=TEMPLATE)


@pytest.fixture
def projector_gguf(tmp_path) -> Path:
    return write_gguf(tmp_path / "mmproj-tiny-vlm-Q8_0.gguf", "clip", seed=1)


@pytest.fixture
def hub(tmp_path, monkeypatch, text_gguf, projector_gguf):
    server = HubServer(tmp_path / "srv")
    server.add_repo_file(REPO, TEXT, text_gguf.read_bytes())
    server.add_repo_file(REPO, MMPROJ, projector_gguf.read_bytes())
    server.add_repo_file(
        REPO, "mmproj-SmolVLM-256M-Instruct-f16.gguf", write_gguf(tmp_path / "f16.gguf", "clip", seed=2)
    )
    server.add_repo_file(REPO, "README.md", b"# SmolVLM\n")
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    yield server
    server.close()


def pull(services, spec, **params):
    job = services.jobs.submit(pull_model, {"spec": spec, **params}, kind="models.pull", title=f"Pull {spec}")
    return services.jobs.wait(job.id, timeout=120)


def projector_edges(catalog, model) -> list:
    return [e for e in catalog.parents(("model", model.id)) if e.operation == "projector"]


def run(bin_, env, *args):
    return subprocess.run([bin_, *args], env=env, capture_output=True, text=True, timeout=120)


# -- the registry --------------------------------------------------------------------------------------------------


def test_vision_entries_validate_and_name_their_projector():
    registry = load_registry()
    for name, repo in VISION.items():
        model = registry.get(name)
        assert model.vision and model.gguf and model.gguf.hf == repo
        projector = model.gguf.projector
        assert projector is not None and projector.file.startswith("mmproj-") and projector.file.endswith(".gguf")
        choice = registry.choose(name)
        assert choice.repo == repo and choice.projector == projector.file and choice.metadata["vision"] is True
        assert choice.pattern == model.gguf.files[model.default].file
        # the download is model + projector; an unverified size makes the whole unknown, never a guess
        sizes = (model.gguf.files[model.default].size_gb, projector.size_gb)
        if None in sizes:
            assert model.size_gb(model.default) is None and model.memory_gb(model.default) is None
        else:
            assert model.size_gb(model.default) == pytest.approx(sum(sizes), abs=1e-3)
    assert registry.choose("internvl3-1b-instruct:hf").projector is None  # the transformers folder needs none
    assert registry.choose("smolvlm-256m-instruct:hf").repo == "HuggingFaceTB/SmolVLM-256M-Instruct"
    assert {m.name for _, m in registry.search("vision")} == set(VISION)
    assert (
        "vision" not in registry.choose("internlm2_5-7b-chat").metadata
        and not registry.get("qwen2.5-7b-instruct").vision
    )


def _family(model: dict) -> dict:
    return {"family": "x", "description": "x", "models": [model]}


@pytest.mark.parametrize(
    ("gguf", "vision", "error"),
    [
        ({"files": {"q8_0": {"file": "a.gguf", "size_gb": 1}}, "projector": {"file": "mmproj.gguf", "size_gb": 1}},
         False, "set vision: true"),
        ({"files": {"q8_0": {"file": "a.gguf", "size_gb": 1}}}, True, "needs its projector"),
        ({"files": {"q8_0": {"file": "a.gguf", "size_gb": 1}}, "projector": {"file": "m.gguf", "size_gb": 1,
                                                                             "sha256": "not-hex"}}, True, "sha256"),
        ({"files": {"q8_0": {"file": "a.gguf", "size_gb": 1}}, "projector": {"file": "m.gguf"}}, True, "size_gb"),
    ],
)  # fmt: skip
def test_a_vision_entry_must_be_whole(tmp_path, gguf, vision, error):
    model = {"name": "vlm", "description": "x", "parameters_b": 1, "context_length": 4096, "license": "mit",
             "vision": vision, "gguf": {"hf": "o/r", **gguf}}  # fmt: skip
    (tmp_path / "v.yaml").write_text(yaml.safe_dump(_family(model)))
    with pytest.raises(UserError, match=error):
        load_registry(tmp_path)


# -- pulling -------------------------------------------------------------------------------------------------------


def test_pulling_a_vision_entry_brings_its_projector_in_one_job(services, hub, text_gguf, projector_gguf):
    job = pull(services, "smolvlm-256m-instruct")
    assert job.status == "succeeded", job.error
    catalog = services.catalog
    model = catalog.get_model("smolvlm-256m-instruct-q8_0")
    projector = catalog.get_model("mmproj-smolvlm-256m-instruct-q8_0")
    assert (model.kind, model.vision, model.projector_path) == ("chat", True, projector.path)
    assert projector.kind == "projector" and projector.storage == "store" and projector.architecture == "clip"
    assert Path(projector.path).name == MMPROJ and Path(projector.path).read_bytes() == projector_gguf.read_bytes()
    assert Path(model.path).read_bytes() == text_gguf.read_bytes()
    assert projector.source == f"hf:{REPO}:{MMPROJ}@{COMMIT}"
    assert [e.parent_id for e in projector_edges(catalog, model)] == [projector.id]
    assert model.metadata_dict["registry"] == "smolvlm-256m-instruct" and job.result["projector"] == projector.name
    # one progress over both files; the f16 projector beside them is not fetched
    events, _ = services.jobs.read_events(job.id)
    progress = [e for e in events if e["type"] == "progress"]
    both = text_gguf.stat().st_size + projector_gguf.stat().st_size
    assert progress[-1]["done"] == progress[-1]["total"] == both
    assert not any("f16" in path for _, path, _ in hub.requests)
    # never offered for chat
    assert projector.name not in {m.name for m in catalog.list_models(kind="chat")}
    assert pull(services, "smolvlm-256m-instruct").result["status"] == "already present"


def test_a_failed_projector_download_registers_nothing(services, hub):
    before = {m.name for m in services.catalog.list_models()}
    hub.faults["status"] = {f"/{REPO}/resolve/{COMMIT}/{MMPROJ}": 404}
    job = pull(services, "smolvlm-256m-instruct")
    assert job.status == "failed" and "was not found" in job.error
    assert {m.name for m in services.catalog.list_models()} == before
    assert Store(services.settings.store_dir).all_manifests() == []
    # the text model's bytes stay as a blob: pulling again downloads only the projector
    hub.faults.clear()
    job = pull(services, "smolvlm-256m-instruct")
    assert job.status == "succeeded", job.error
    gets = [path for method, path, _ in hub.requests if method == "GET" and path.endswith("/" + TEXT)]
    assert len(gets) == 1


def test_a_projector_that_is_not_one_is_refused_and_nothing_is_registered(services, hub, tmp_path):
    before = {m.name for m in services.catalog.list_models()}
    hub.add_repo_file(REPO, MMPROJ, write_gguf(tmp_path / "llama.gguf", "llama", seed=3).read_bytes())
    job = pull(services, "smolvlm-256m-instruct")
    assert job.status == "failed" and "is not a projector" in job.error and "'llama'" in job.error
    assert {m.name for m in services.catalog.list_models()} == before


def test_two_quantizations_share_one_projector_and_removal_waits_for_the_last(services, hub, tmp_path):
    other = "ggml-org/InternVL3-2B-Instruct-GGUF"
    proj = write_gguf(tmp_path / "p2.gguf", "clip", seed=5).read_bytes()
    hub.add_repo_file(
        other,
        "InternVL3-2B-Instruct-Q4_K_M.gguf",
        write_gguf(tmp_path / "a.gguf", "llama", seed=6, chat_template=TEMPLATE).read_bytes(),
    )
    hub.add_repo_file(
        other,
        "InternVL3-2B-Instruct-Q8_0.gguf",
        write_gguf(tmp_path / "b.gguf", "llama", seed=7, chat_template=TEMPLATE).read_bytes(),
    )
    hub.add_repo_file(other, "mmproj-InternVL3-2B-Instruct-Q8_0.gguf", proj)
    for tag in ("q4_k_m", "q8_0"):
        job = pull(services, f"internvl3-2b-instruct:{tag}")
        assert job.status == "succeeded", job.error
    catalog, store = services.catalog, Store(services.settings.store_dir)
    projectors = catalog.list_models(kind="projector")
    assert [p.name for p in projectors] == ["mmproj-internvl3-2b-instruct-q8_0"]
    first = catalog.get_model("internvl3-2b-instruct-q4_k_m")
    second = catalog.get_model("internvl3-2b-instruct-q8_0")
    assert first.projector_path == second.projector_path == projectors[0].path
    with pytest.raises(UserError, match="is the projector of"):
        remove_model(catalog, store, projectors[0].name)
    assert remove_model(catalog, store, first.name)["projectors_removed"] == []
    assert catalog.has_model(projectors[0].name)
    result = remove_model(catalog, store, second.name)
    assert result["projectors_removed"] == [projectors[0].name] and not catalog.has_model(projectors[0].name)
    assert not Path(projectors[0].path).exists() and store.all_manifests() == []


# -- importing -----------------------------------------------------------------------------------------------------


def test_import_with_mmproj_through_the_cli(internlocal_bin, cli_env, home, text_gguf, projector_gguf):
    from internlocal.catalog.catalog import Catalog

    out = run(internlocal_bin, cli_env, "models", "import", str(text_gguf), "--name", "tiny-vlm", "--mmproj",
              str(projector_gguf), "--json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    imported = json.loads(out.stdout)
    assert imported["vision"] is True and imported["projector"] == str(projector_gguf)

    catalog = Catalog(home / "catalog.sqlite")
    model = catalog.get_model("tiny-vlm")
    (projector,) = catalog.list_models(kind="projector")
    assert projector.path == str(projector_gguf) and projector.storage == "reference"
    assert [e.parent_id for e in projector_edges(catalog, model)] == [projector.id]

    listed = {m["name"]: m for m in json.loads(run(internlocal_bin, cli_env, "models", "list", "--json").stdout)}
    assert listed["tiny-vlm"]["vision"] is True and listed["smollm2-135m-instruct-q4_1"]["vision"] is False
    assert listed[projector.name]["kind"] == "projector"
    table = run(internlocal_bin, cli_env, "models", "list").stdout
    assert next(line for line in table.splitlines() if line.strip().startswith("tiny-vlm ")).split()[2] == "vision"
    shown = run(internlocal_bin, cli_env, "models", "show", "tiny-vlm").stdout
    assert "vision" in shown and f"{projector.name} ({projector_gguf})" in shown
    shown_json = json.loads(run(internlocal_bin, cli_env, "models", "show", "tiny-vlm", "--json").stdout)
    assert shown_json["projector"] == str(projector_gguf) and shown_json["projector_model"] == projector.name
    assert "projector of    tiny-vlm" in run(internlocal_bin, cli_env, "models", "show", projector.name).stdout

    out = run(internlocal_bin, cli_env, "models", "rm", "tiny-vlm")
    assert out.returncode == 0 and f"its projector {projector.name} went with it" in out.stdout
    assert not catalog.has_model(projector.name)
    assert text_gguf.exists() and projector_gguf.exists()  # the user's own files are kept


def test_import_refuses_a_mmproj_that_is_not_a_projector(internlocal_bin, cli_env, home, text_gguf, tmp_path):
    from internlocal.catalog.catalog import Catalog

    before = [m.name for m in Catalog(home / "catalog.sqlite").list_models()]
    not_one = write_gguf(tmp_path / "other-Q8_0.gguf", "llama", seed=9)
    out = run(internlocal_bin, cli_env, "models", "import", str(text_gguf), "--mmproj", str(not_one), "--copy")
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert f"{not_one} is not a projector: its GGUF architecture is 'llama', not 'clip'" in out.stderr
    assert len([line for line in out.stderr.strip().splitlines() if line.strip()]) == 1
    out = run(internlocal_bin, cli_env, "models", "import", str(text_gguf), "--mmproj", str(tmp_path / "missing.gguf"))
    assert out.returncode == 1 and "does not exist" in out.stderr
    assert [m.name for m in Catalog(home / "catalog.sqlite").list_models()] == before
    assert Store(home / "store").all_manifests() == []


def test_import_copied_into_the_store_and_removed_with_its_projector(services, text_gguf, projector_gguf):
    catalog, store = services.catalog, Store(services.settings.store_dir)
    model = import_model(catalog, store, text_gguf, name="tiny-vlm", copy=True, mmproj=projector_gguf)
    (projector,) = catalog.list_models(kind="projector")
    assert model.storage == projector.storage == "store" and model.projector_path == projector.path
    assert Path(projector.path).read_bytes() == projector_gguf.read_bytes()
    with pytest.raises(UserError, match="already in the catalog"):  # refused before its projector is touched
        import_model(catalog, store, text_gguf, name="tiny-vlm", mmproj=projector_gguf)
    assert len(catalog.list_models(kind="projector")) == 1
    result = remove_model(catalog, store, "tiny-vlm")
    assert result["projectors_removed"] == [projector.name] and len(result["blobs_removed"]) == 2
    assert store.all_manifests() == [] and not catalog.list_models(kind="projector")


def test_a_stale_projector_edge_never_takes_an_unrelated_model_along(services, text_gguf, projector_gguf, tmp_path):
    """Lineage edges outlive deleted rows and SQLite reuses their ids: the next two models imported get the ids
    the projector and the vision model had, and removing the second must not remove the first."""
    catalog, store = services.catalog, Store(services.settings.store_dir)
    vision = import_model(catalog, store, text_gguf, name="tiny-vlm", mmproj=projector_gguf)
    (projector,) = catalog.list_models(kind="projector")
    remove_model(catalog, store, "tiny-vlm")
    first = import_model(catalog, store, write_gguf(tmp_path / "a.gguf", "llama", seed=5), name="plain-a")
    second = import_model(catalog, store, write_gguf(tmp_path / "b.gguf", "llama", seed=6), name="plain-b")
    assert (first.id, second.id) == (projector.id, vision.id)  # the ids came back; the old edge points at them
    result = remove_model(catalog, store, "plain-b")
    assert not result.get("projectors_removed")
    assert catalog.find_model("plain-a") is not None


def test_a_hugging_face_folder_with_a_vision_config_is_a_vision_model(services, tmp_path, text_gguf):
    folder = tmp_path / "SmolVLM-256M-Instruct"
    folder.mkdir()
    config = {"architectures": ["Idefics3ForConditionalGeneration"], "model_type": "idefics3",
              "vision_config": {"model_type": "idefics3_vision", "image_size": 512}, "text_config": {}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    store = Store(services.settings.store_dir)
    model = import_model(services.catalog, store, folder)
    assert model.vision and model.projector_path is None
    plain = import_model(services.catalog, store, text_gguf)
    assert not plain.vision
    with pytest.raises(UserError, match="goes with a GGUF model"):
        import_model(services.catalog, store, folder, name="again", mmproj=text_gguf)


def test_models_search_marks_vision_entries(internlocal_bin, cli_env):
    found = json.loads(run(internlocal_bin, cli_env, "models", "search", "--json").stdout)
    vision = {m["name"]: m for m in found if m["vision"]}
    assert set(vision) == set(VISION)
    assert vision["internvl3-1b-instruct"]["projector"] == "mmproj-InternVL3-1B-Instruct-Q8_0.gguf"
    table = run(internlocal_bin, cli_env, "models", "search", "smolvlm").stdout
    assert (
        next(line for line in table.splitlines() if line.strip().startswith("smolvlm-500m-instruct")).split()[1]
        == "vision"
    )
