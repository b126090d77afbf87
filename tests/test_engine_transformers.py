"""The transformers engine on the embedded model as a Hugging Face folder: chat, cancel, scores, 4-bit, LoRA."""

from __future__ import annotations

import pytest

from internlocal.engines.base import Capability, Engine, GenerationParams
from internlocal.errors import ModelFileError, Unsupported
from tests.conftest import QUESTION

ASK = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": QUESTION}]


@pytest.fixture(scope="module")
def hf_engine(hf_model_dir):
    from internlocal.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(hf_model_dir, n_ctx=2048)
    yield engine
    engine.close()


def test_chat_streams_and_answers(hf_engine):
    assert isinstance(hf_engine, Engine) and Capability.LOGLIKELIHOOD in hf_engine.capabilities
    generation = hf_engine.chat(ASK, GenerationParams.greedy(max_tokens=32))
    pieces = list(generation)
    assert len(pieces) > 1 and "".join(pieces) == generation.result.text
    assert "Paris" in generation.result.text
    assert generation.result.finish_reason == "stop" and generation.result.prompt_tokens > 10


def test_cancel_and_stop_strings(hf_engine):
    generation = hf_engine.chat(
        [{"role": "user", "content": "Write a long story about a dragon."}], GenerationParams(max_tokens=300, seed=1)
    )
    for i, _ in enumerate(generation):
        if i == 3:
            generation.cancel()
    assert generation.result.finish_reason == "cancelled" and generation.result.completion_tokens < 10
    cut = hf_engine.chat(ASK, GenerationParams.greedy(max_tokens=32, stop=["Paris"])).collect()
    assert "Paris" not in cut.text and cut.finish_reason == "stop"


def test_scores_agree_with_llama_cpp(hf_engine, engine):
    pairs = [("The capital of France is", " Paris"), ("The capital of France is", " London")]
    ours = hf_engine.loglikelihood(pairs)
    reference = engine.loglikelihood(pairs)
    assert ours[0].logprob > ours[1].logprob and ours[0].is_greedy
    for a, b in zip(ours, reference, strict=True):  # same weights (dequantized Q4_1): close, not identical
        assert a.logprob == pytest.approx(b.logprob, abs=0.15)
    [rolling] = hf_engine.loglikelihood_rolling(["The quick brown fox jumps over the lazy dog."])
    assert rolling == pytest.approx(
        engine.loglikelihood_rolling(["The quick brown fox jumps over the lazy dog."])[0], rel=0.02
    )


def test_sampling_fields_and_logprobs(hf_engine):
    """The same OpenAI fields the llama.cpp engines honour: logprobs are the model's own log-likelihood of the
    tokens; a -100 bias on the greedy token changes the answer; min_p 1 at a high temperature is greedy;
    penalties change a repetitive answer."""
    plain = hf_engine.complete("The capital of France is", GenerationParams.greedy(max_tokens=6, logprobs=2)).collect()
    entries = plain.logprobs
    assert "".join(e.token for e in entries) == plain.text and len(entries) == plain.completion_tokens
    assert all(e.top[e.token] == pytest.approx(e.logprob) and max(e.top.values()) == e.logprob for e in entries)
    [own] = hf_engine.loglikelihood([("The capital of France is", plain.text)])
    assert sum(e.logprob for e in entries) == pytest.approx(own.logprob, abs=1e-3)

    first = hf_engine.tokenize(entries[0].token)[0]
    banned = hf_engine.complete(
        "The capital of France is", GenerationParams.greedy(max_tokens=6, logit_bias={first: -100})
    ).collect()
    assert not banned.text.startswith(entries[0].token)
    for seed in (1, 2):
        hot = GenerationParams(temperature=1.5, min_p=1.0, repeat_penalty=1.0, max_tokens=6, seed=seed)
        assert hf_engine.complete("The capital of France is", hot).collect().text == plain.text
    ask = [{"role": "user", "content": "Write the word cat five times."}]
    base = GenerationParams.greedy(max_tokens=24, stop_on_repetition=False)
    again = hf_engine.chat(ask, base).collect().text
    assert hf_engine.chat(ask, base.model_copy(update={"frequency_penalty": 2.0})).collect().text != again
    assert hf_engine.chat(ask, base.model_copy(update={"presence_penalty": 2.0})).collect().text != again
    with pytest.raises(Unsupported, match="logit_bias"):
        hf_engine.chat(ask, base.model_copy(update={"logit_bias": {10**7: 1.0}}))


def test_constrained_output_is_unsupported_here(hf_engine):
    with pytest.raises(Unsupported, match="transformers engine cannot do constrained"):
        hf_engine.chat(ASK, response_format={"type": "json_object"})


def test_nf4_four_bit_on_the_cpu(hf_model_dir, hf_engine):
    from internlocal.engines.transformers_engine import TransformersEngine

    quantized = TransformersEngine(hf_model_dir, n_ctx=1024, quantization="4bit")
    assert type(quantized.model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"
    assert quantized.model.get_memory_footprint() < hf_engine.model.get_memory_footprint() / 2
    assert "Paris" in quantized.chat(ASK, GenerationParams.greedy(max_tokens=24)).collect().text
    quantized.close()


def test_lora_adapter_applied_and_merged(hf_model_dir, tmp_path, hf_engine):
    """A freshly initialised LoRA (B = 0) changes nothing: applied or merged, the answer is the base model's."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from internlocal.engines.transformers_engine import TransformersEngine

    base = AutoModelForCausalLM.from_pretrained(str(hf_model_dir))
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(tmp_path / "adapter")
    expected = hf_engine.chat(ASK, GenerationParams.greedy(max_tokens=24)).collect().text
    for merge in (False, True):
        with TransformersEngine(hf_model_dir, adapter=tmp_path / "adapter", merge_adapter=merge, n_ctx=1024) as tuned:
            assert tuned.chat(ASK, GenerationParams.greedy(max_tokens=24)).collect().text == expected


def test_not_a_model_folder(tmp_path):
    from internlocal.engines.transformers_engine import TransformersEngine

    with pytest.raises(ModelFileError, match=r"no config\.json"):
        TransformersEngine(tmp_path)
