"""The llama.cpp engine on the embedded SmolLM2-135M: chat, streaming, cancel, scoring, constraints, faults."""

from __future__ import annotations

import json
import math
import os
import shutil
import threading

import pytest

from internlocal.config import DEFAULT_SYSTEM_PROMPT
from internlocal.engines.base import Capability, Engine, GenerationParams
from internlocal.errors import ModelFileError, NotEnoughMemory, Unsupported, UserError
from tests.conftest import QUESTION

STORY = [{"role": "user", "content": "Write a long story about a dragon who learns to bake bread."}]


def ask(question: str) -> list[dict]:
    return [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": question}]


def test_engine_satisfies_protocol_and_declares_capabilities(engine):
    assert isinstance(engine, Engine)
    assert {
        Capability.CHAT,
        Capability.COMPLETION,
        Capability.TOKENIZE,
        Capability.LOGLIKELIHOOD,
    } <= engine.capabilities
    assert Capability.TOOLS in engine.capabilities and Capability.CONSTRAINED in engine.capabilities
    assert engine.context_length == 2048


def test_greedy_answer_to_capital_of_france_is_paris(engine):
    generation = engine.chat(ask(QUESTION), GenerationParams.greedy(max_tokens=32))
    pieces = list(generation)
    result = generation.result
    assert "Paris" in result.text
    assert "".join(pieces) == result.text
    assert len(pieces) > 1  # streamed, not delivered in one piece
    assert result.finish_reason == "stop"
    assert result.prompt_tokens > 10 and result.completion_tokens >= len(pieces) - 1
    assert result.ttft_s is not None and result.ttft_s > 0
    assert result.decode_tokens_per_s and result.decode_tokens_per_s > 0


def test_chat_uses_the_models_own_template(engine):
    prompt = engine.render_chat(ask("hi"))
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )


def test_cancel_stops_generation_midway(engine):
    generation = engine.chat(STORY, GenerationParams(max_tokens=400, seed=3))
    pieces = []
    for piece in generation:
        pieces.append(piece)
        if len(pieces) == 5:
            generation.cancel()
    assert generation.result.finish_reason == "cancelled"
    assert 5 <= generation.result.completion_tokens < 20
    assert generation.result.text == "".join(pieces)


def test_cancel_from_another_thread(engine):
    generation = engine.chat(STORY, GenerationParams(max_tokens=2000, seed=4))
    started = threading.Event()

    def consume():
        for _ in generation:
            started.set()

    thread = threading.Thread(target=consume)
    thread.start()
    assert started.wait(30)
    generation.cancel()
    thread.join(30)
    assert not thread.is_alive()
    assert generation.result.finish_reason == "cancelled"
    # the engine is usable right after a cancel
    assert "Paris" in engine.chat(ask(QUESTION), GenerationParams.greedy(max_tokens=16)).collect().text


def test_max_tokens_and_stop_strings(engine):
    result = engine.chat(STORY, GenerationParams(max_tokens=7, seed=1)).collect()
    assert (result.finish_reason, result.completion_tokens) == ("length", 7)
    result = engine.chat(ask(QUESTION), GenerationParams.greedy(max_tokens=32, stop=["Paris"])).collect()
    assert result.finish_reason == "stop"
    assert "Paris" not in result.text and result.text.strip()


def test_same_seed_same_text_at_temperature_one(engine):
    params = GenerationParams(temperature=1.0, max_tokens=24, seed=1234)
    first = engine.chat(STORY, params).collect().text
    second = engine.chat(STORY, params).collect().text
    assert first == second


def test_raw_completion(engine):
    result = engine.complete("The capital of France is", GenerationParams.greedy(max_tokens=5)).collect()
    assert "Paris" in result.text


def test_tokenize_round_trip_including_chinese(engine):
    for text in ("Hello, world!", "法国的首都是巴黎。", "mixed 中文 and English"):
        tokens = engine.tokenize(text)
        assert tokens and engine.detokenize(tokens) == text


def test_loglikelihood_prefers_the_right_continuation(engine):
    paris, london = engine.loglikelihood(
        [("The capital of France is", " Paris"), ("The capital of France is", " London")]
    )
    assert paris.logprob > london.logprob
    assert paris.is_greedy and not london.is_greedy
    assert paris.n_tokens == 1 and paris.logprob < 0


def test_loglikelihood_is_the_sum_over_continuation_tokens(engine):
    context = engine.tokenize("The capital of France is", add_special=True)
    cont = engine.tokenize(" Paris, and the capital of Italy is Rome")
    with engine._lock:
        whole = engine._score(context, cont)
        parts = [engine._score(context + cont[:i], [cont[i]]) for i in range(len(cont))]
        again = engine._score(context, cont)  # after other requests moved the KV cache
    assert whole.n_tokens == len(cont)
    # one-token batches take other quantized kernels than a many-token batch: equal up to ~1% noise
    # (a wrong row or an off-by-one token would be off by whole nats)
    assert whole.logprob == pytest.approx(sum(p.logprob for p in parts), rel=0.03)
    assert again.logprob == pytest.approx(whole.logprob, abs=1e-4)


def test_loglikelihood_after_generation_and_generation_after_scoring(engine):
    before = engine.loglikelihood([("The capital of France is", " Paris")])[0].logprob
    engine.chat(STORY, GenerationParams(max_tokens=10, seed=2)).collect()
    assert engine.loglikelihood([("The capital of France is", " Paris")])[0].logprob == pytest.approx(before, abs=1e-4)
    assert "Paris" in engine.chat(ask(QUESTION), GenerationParams.greedy(max_tokens=16)).collect().text


def test_rolling_loglikelihood_gives_a_sane_perplexity(engine):
    text = "The quick brown fox jumps over the lazy dog. " * 4
    [total] = engine.loglikelihood_rolling([text])
    n = len(engine.tokenize(text))
    perplexity = math.exp(-total / n)
    assert 1.0 < perplexity < 200.0


def test_json_schema_output_is_valid_json(engine):
    schema = {"type": "object", "properties": {"capital": {"type": "string"}}, "required": ["capital"]}
    result = engine.chat(
        ask(QUESTION),
        GenerationParams.greedy(max_tokens=48),
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    ).collect()
    assert isinstance(json.loads(result.text)["capital"], str)


def test_remote_engines_cannot_tokenize_and_say_so():
    from internlocal.engines.remote import RemoteEngine

    with pytest.raises(Unsupported, match="cannot do tokenize"):
        RemoteEngine("http://127.0.0.1:9/v1", "m").tokenize("hello")


def test_long_history_is_trimmed_oldest_first(gguf_path):
    from internlocal.engines.llamacpp import LlamaCppEngine

    small = LlamaCppEngine(gguf_path, n_ctx=512)  # a small window keeps the prompt (and the test) short
    filler = "word " * 60
    messages = [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}]
    for i in range(12):
        messages += [{"role": "user", "content": f"{i} {filler}"}, {"role": "assistant", "content": "ok"}]
    messages.append({"role": "user", "content": QUESTION})
    prompt = small._fit_chat(list(messages), max_tokens=16)
    text = small.detokenize(prompt)
    assert len(prompt) <= 512 - 16
    # (detokenize leaves out the <|im_start|>/<|im_end|> special tokens)
    assert text.startswith("system\nYou are a helpful assistant.\nuser\n")  # system prompt kept, then a user turn
    assert QUESTION in text and "11 word" in text and "\n0 word" not in text  # newest kept, oldest gone
    result = small.chat(messages, GenerationParams.greedy(max_tokens=16)).collect()
    assert result.prompt_tokens == len(prompt)
    with pytest.raises(UserError, match="shorten it"):
        small.chat([{"role": "user", "content": "word " * 1000}])
    small.close()


def test_bad_files_give_one_clear_sentence(tmp_path, gguf_path):
    from internlocal.engines.llamacpp import LlamaCppEngine

    with pytest.raises(ModelFileError, match="does not exist"):
        LlamaCppEngine(tmp_path / "missing.gguf")
    not_gguf = tmp_path / "notes.gguf"
    not_gguf.write_text("just some text, not a model")
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        LlamaCppEngine(not_gguf)
    truncated = tmp_path / "truncated.gguf"
    with gguf_path.open("rb") as src, truncated.open("wb") as dst:
        dst.write(src.read(20 << 20))
    with pytest.raises(ModelFileError, match="truncated"):
        LlamaCppEngine(truncated)


def test_model_bigger_than_free_memory_is_refused(tmp_path, gguf_path):
    """A GGUF whose header is valid but whose (sparse) size exceeds RAM: refused before loading."""
    from internlocal.engines.llamacpp import LlamaCppEngine

    huge = tmp_path / "huge.gguf"
    shutil.copyfile(gguf_path, huge)
    os.truncate(huge, 4 << 40)  # 4 TiB, sparse: costs no disk
    with pytest.raises(NotEnoughMemory, match="GiB of memory"):
        LlamaCppEngine(huge)


def test_quantized_kv_cache_still_answers(gguf_path):
    from internlocal.engines.llamacpp import LlamaCppEngine

    for kv in ("q8_0", "q4_0"):
        with LlamaCppEngine(gguf_path, n_ctx=512, kv_cache=kv) as small:
            assert (
                "Paris"
                in small.chat(
                    [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}],
                    GenerationParams.greedy(max_tokens=16),
                )
                .collect()
                .text
            ), kv
    with pytest.raises(UserError, match="KV cache type"):
        LlamaCppEngine(gguf_path, n_ctx=512, kv_cache="int2")


def test_batched_slots_with_a_quantized_kv_cache(gguf_path):
    from internlocal.engines.llamacpp import LlamaCppEngine
    from internlocal.engines.llamacpp_batched import BatchedLlamaCpp

    with LlamaCppEngine(gguf_path, n_ctx=512) as base:
        batched = BatchedLlamaCpp(base, slots=2, kv_cache="q8_0")
        try:
            answer = batched.chat(
                [{"role": "system", "content": DEFAULT_SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}],
                GenerationParams.greedy(max_tokens=16),
            ).collect()
            assert "Paris" in answer.text
        finally:
            batched.close()


# long enough that copying another slot's cache pays (internlocal.engines.llamacpp_batched.MIN_GAIN)
TRAVEL_DESK = (
    "You are the assistant of a small travel agency. Answer questions about countries, cities and their "
    "capitals briefly and correctly. When you are asked for one word, answer with exactly one word. Never "
    "invent facts; say that you do not know when you are unsure. Keep a friendly, professional tone."
)


def test_a_prompt_starting_like_a_busy_slots_reuses_a_copy_of_its_cache(gguf_path):
    """A shared system prompt is decoded once: the next request starts from a copy of that slot's KV."""
    from internlocal.engines.llamacpp import LlamaCppEngine
    from internlocal.engines.llamacpp_batched import BatchedLlamaCpp

    story = [
        {"role": "system", "content": TRAVEL_DESK},
        {"role": "user", "content": "Tell me a long story about Rome."},
    ]
    question = [{"role": "system", "content": TRAVEL_DESK}, {"role": "user", "content": QUESTION}]
    with LlamaCppEngine(gguf_path, n_ctx=1024) as base:
        shared = 0
        for a, b in zip(base._fit_chat(story, 64), base._fit_chat(question, 16), strict=False):
            if a != b:
                break
            shared += 1
        assert shared > 40
        batched = BatchedLlamaCpp(base, slots=3)
        try:
            telling = batched.chat(story, GenerationParams.greedy(max_tokens=64))
            pieces = iter(telling)
            next(pieces)  # the story's prompt is in slot 0's KV now, and the story goes on
            answer = batched.chat(question, GenerationParams.greedy(max_tokens=16)).collect()
            told = telling.collect()
        finally:
            batched.close()
    assert "Paris" in answer.text
    assert batched.copied_tokens > shared  # slot 0's whole sequence so far went to slot 1
    assert batched.reused_tokens >= shared  # … and the question decoded only what follows the shared part
    assert batched._slots[1].cached[:shared] == batched._slots[0].cached[:shared]
    assert told.finish_reason == "length" and told.completion_tokens == 64


def test_a_prompt_whose_slot_moved_on_is_restored_from_host_memory(gguf_path):
    """With one slot, an unrelated request overwrites the shared system prompt's KV; it comes back from RAM."""
    from internlocal.engines.llamacpp import LlamaCppEngine
    from internlocal.engines.llamacpp_batched import BatchedLlamaCpp

    question = [{"role": "system", "content": TRAVEL_DESK}, {"role": "user", "content": QUESTION}]
    unrelated = [{"role": "user", "content": "Write a short poem about the sea and the wind over the waves."}]
    with LlamaCppEngine(gguf_path, n_ctx=1024) as base:
        prompt = base._fit_chat(question, 16)
        batched = BatchedLlamaCpp(base, slots=1)
        try:
            first = batched.chat(question, GenerationParams.greedy(max_tokens=16)).collect()
            batched.chat(unrelated, GenerationParams.greedy(max_tokens=16)).collect()
            assert batched._slots[0].cached[:10] != prompt[:10]  # the slot holds the poem now
            reused, copied = batched.reused_tokens, batched.copied_tokens
            again = batched.chat(question, GenerationParams.greedy(max_tokens=16)).collect()
        finally:
            batched.close()
    assert "Paris" in first.text and "Paris" in again.text
    assert batched.reused_tokens - reused == len(prompt) - 1  # all but the last prompt token came back
    assert batched.copied_tokens > copied
    assert 0 < batched.prompt_cache_used <= batched.prompt_cache_bytes
