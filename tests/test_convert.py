"""Conversions of the embedded model: GGUF → HF → GGUF f16 → Q8_0, and it still answers."""

from __future__ import annotations

from pathlib import Path

import pytest

from internlocal.engines.base import GenerationParams
from internlocal.engines.llamacpp import LlamaCppEngine
from internlocal.hub.convert import gguf_to_hf, hf_to_gguf, quantize_gguf
from tests.conftest import QUESTION

ASK = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": QUESTION}]


def run(services, target, **params):
    job = services.jobs.submit(target, params, kind="models.convert", title=target.__name__)
    job = services.jobs.wait(job.id, timeout=600)
    assert job.status == "succeeded", job.error
    return services.catalog.get_model(job.result["model"])


def answers_paris(path: str) -> bool:
    with LlamaCppEngine(path, n_ctx=512) as engine:
        return "Paris" in engine.chat(ASK, GenerationParams.greedy(max_tokens=16)).collect().text


def test_round_trip_gguf_hf_gguf_q8_keeps_the_answer(services):
    hf = run(services, gguf_to_hf, model="smollm2-135m-instruct-q4_1")
    assert (hf.name, hf.format, hf.storage) == ("smollm2-135m-instruct-hf", "hf", "store")
    folder = Path(hf.path)
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert "quantization_config" not in (folder / "config.json").read_text()  # a plain model folder
    assert hf.chat_template and "<|im_start|>" in hf.chat_template
    assert 130_000_000 < hf.parameters < 140_000_000

    f16 = run(services, hf_to_gguf, model=hf.name, outtype="f16")
    assert (f16.format, f16.quantization) == ("gguf", "F16")
    q8 = run(services, quantize_gguf, model=f16.name, qtype="Q8_0")
    assert (f16.name, q8.name, q8.quantization) == ("smollm2-135m-instruct-f16", "smollm2-135m-instruct-q8_0", "Q8_0")
    assert answers_paris(f16.path) and answers_paris(q8.path)

    # lineage: embedded → hf → f16 → q8
    chain = []
    node = q8
    while True:
        parents = services.catalog.parents(("model", node.id))
        if not parents:
            break
        chain.append(parents[0].operation)
        node = services.catalog.get_model(parents[0].parent_id)
    assert chain == ["quantize", "convert.hf_to_gguf", "convert.gguf_to_hf"]
    assert node.name == "smollm2-135m-instruct-q4_1"


def test_quantize_the_embedded_model_directly(services):
    q = run(services, quantize_gguf, model="smollm2-135m-instruct-q4_1", qtype="q8_0")
    assert q.name == "smollm2-135m-instruct-q8_0" and q.quantization == "Q8_0"
    assert answers_paris(q.path)
    edge = services.catalog.parents(("model", q.id))[0]
    assert '"requantized_from": "Q4_1"' in edge.params_json


@pytest.mark.parametrize(
    ("target", "params", "message"),
    [
        (quantize_gguf, {"model": "smollm2-135m-instruct-q4_1", "qtype": "Q9_X"}, "not one of"),
        (hf_to_gguf, {"model": "smollm2-135m-instruct-q4_1"}, "already GGUF"),
        (gguf_to_hf, {"model": "all-minilm-l6-v2"}, "not a GGUF model"),
        (quantize_gguf, {"model": "no-such-model"}, "No model"),
    ],
)
def test_bad_conversions_fail_with_one_sentence(services, target, params, message):
    job = services.jobs.submit(target, params, kind="models.convert", title="bad", in_thread=True)
    job = services.jobs.wait(job.id, timeout=60)
    assert job.status == "failed" and message in job.error
    assert len(services.catalog.list_models()) == 2
