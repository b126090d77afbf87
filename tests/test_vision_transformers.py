"""The transformers engine on a vision-language folder (tests/tiny_vlm.py: a tiny random SmolVLM / Idefics3).

Random weights answer noise, so the tests assert what holds anyway: the image's tokens are counted, the image
reaches the logits (different images, different logits; the same image, the same output), EXIF orientation is
applied, cancel works, and the token loop agrees with transformers' own ``generate``.
"""

from __future__ import annotations

import io

import pytest

from internlocal.engines.base import Capability, Engine, GenerationParams
from internlocal.engines.images import data_uri
from internlocal.errors import Unsupported

QUESTION = "What is in this picture?"


def png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise(seed: int, size=(60, 40)):
    """A random RGB image (different seeds, different pixels)."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def ask(data: bytes | None, text: str = QUESTION) -> list[dict]:
    if data is None:
        return [{"role": "user", "content": text}]
    image = {"type": "image_url", "image_url": {"url": data_uri(data, "image/png")}}
    return [{"role": "user", "content": [{"type": "text", "text": text}, image]}]


def first_token_top(engine, data: bytes) -> dict[str, float]:
    result = engine.chat(ask(data), GenerationParams.greedy(max_tokens=1, logprobs=5)).collect()
    return result.logprobs[0].top


@pytest.fixture(scope="module")
def vlm(tiny_vlm):
    from internlocal.engines.transformers_vision import TransformersVisionEngine

    engine = TransformersVisionEngine(tiny_vlm.hf_dir, model_name="tiny-vlm", n_ctx=2048)
    yield engine
    engine.close()


def test_loads_as_a_vision_engine(vlm):
    assert isinstance(vlm, Engine) and Capability.VISION in vlm.capabilities
    assert vlm.context_length == 2048  # from the text config: Idefics3's own config has no max_position_embeddings
    assert vlm.max_side == vlm.processor.image_processor.size.longest_edge
    big = vlm.open_image(png(noise(1, size=(640, 480))))
    assert max(big.size) == vlm.max_side and big.size[0] > big.size[1]  # scaled down before the processor sees it
    with pytest.raises(Unsupported):
        vlm.chat(ask(png(noise(1))), tools=[{"type": "function", "function": {"name": "f", "parameters": {}}}])


def test_prompt_tokens_count_the_image(vlm):
    data = png(noise(1))
    with_image = vlm.chat(ask(data), GenerationParams.greedy(max_tokens=1)).collect()
    without = vlm.chat(ask(None), GenerationParams.greedy(max_tokens=1)).collect()
    # the processor's own count of one image: its tokens and the markers around them
    alone = vlm.processor(
        text=[vlm.processor.image_token], images=[[vlm.open_image(data)]], add_special_tokens=False, return_tensors="pt"
    )["input_ids"][0]
    assert len(alone) >= vlm.processor.image_seq_len
    assert with_image.prompt_tokens - without.prompt_tokens == len(alone)
    # without an image the prompt is the text engine's: the rendered chat, tokenized
    assert without.prompt_tokens == len(vlm.tokenize(vlm.render_chat(ask(None))))


def test_the_image_reaches_the_logits(vlm):
    first, second = png(noise(1)), png(noise(2))
    one, other = first_token_top(vlm, first), first_token_top(vlm, second)
    assert one != other
    params = GenerationParams.greedy(max_tokens=6, logprobs=3, stop_on_repetition=False)
    again = [vlm.chat(ask(first), params).collect() for _ in range(2)]
    assert again[0].text == again[1].text and again[0].logprobs == again[1].logprobs
    assert first_token_top(vlm, first) == one


def test_exif_orientation_is_applied(vlm):
    """A JPEG whose EXIF says "rotate 90° clockwise" reads as the same pixels rotated by hand (lossless PNG)."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the stored image must be turned 90° clockwise to stand upright
    buffer = io.BytesIO()
    noise(3).save(buffer, format="JPEG", exif=exif, quality=95)
    jpeg = buffer.getvalue()
    stored = Image.open(io.BytesIO(jpeg)).convert("RGB")  # the pixels as stored, orientation ignored
    upright = png(stored.transpose(Image.Transpose.ROTATE_270))
    assert vlm.open_image(jpeg).size == (40, 60)
    assert first_token_top(vlm, jpeg) == first_token_top(vlm, upright)
    assert first_token_top(vlm, jpeg) != first_token_top(vlm, png(stored))


def test_cancel_between_tokens(vlm):
    generation = vlm.chat(ask(png(noise(1))), GenerationParams(max_tokens=200, seed=1, stop_on_repetition=False))
    for i, _ in enumerate(generation):
        if i == 2:
            generation.cancel()
    assert generation.result.finish_reason == "cancelled" and generation.result.completion_tokens <= 4


def test_token_loop_agrees_with_generate(vlm):
    """Our loop (image inputs on the first step, the KV cache after) picks the tokens ``generate`` picks, with
    the same log-probabilities."""
    import torch

    for seed in (1, 2):
        data = png(noise(seed))
        ours = vlm.chat(ask(data), GenerationParams.greedy(max_tokens=4, logprobs=3, stop_on_repetition=False))
        ours = ours.collect()
        inputs = vlm.processor(
            text=[vlm.render_chat(ask(data))],
            images=[[vlm.open_image(data)]],
            add_special_tokens=False,
            return_tensors="pt",
        )
        assert ours.prompt_tokens == inputs["input_ids"].shape[1]
        with torch.inference_mode():
            out = vlm.model.generate(
                **inputs, max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True
            )
        new = out.sequences[0, inputs["input_ids"].shape[1] :].tolist()
        text = vlm.tokenizer.decode([t for t in new if t not in vlm._eos], skip_special_tokens=True)
        assert ours.text == text
        assert len(ours.logprobs) == len([t for t in new if t not in vlm._eos])  # an end token is not output
        for entry, logits in zip(ours.logprobs, out.logits, strict=False):
            theirs = torch.log_softmax(logits[0].float(), -1).topk(3).values.tolist()
            assert sorted(entry.top.values(), reverse=True) == pytest.approx(theirs, abs=1e-4)


def test_text_path_scores(vlm):
    """Without images the model is a text model: completion and log-likelihoods, the packed options (one
    context, a 4-D mask) equal to a plain forward pass over each."""
    assert vlm.complete("The capital of France is", GenerationParams.greedy(max_tokens=3)).collect().completion_tokens
    context = "The capital of France is"
    pairs = [(context, " Paris"), (context, " London, or so they say")]
    together = vlm.loglikelihood(pairs)
    for (ctx, cont), packed in zip(pairs, together, strict=True):
        plain = vlm._score(vlm.tokenize(ctx, add_special=True), vlm.tokenize(cont))
        assert packed.logprob == pytest.approx(plain, abs=1e-3) and packed.n_tokens == len(vlm.tokenize(cont))
    [rolling] = vlm.loglikelihood_rolling(["The quick brown fox jumps over the lazy dog."])
    assert rolling < 0


@pytest.fixture(scope="module")
def text_model_dir(tmp_path_factory, tiny_vlm):
    """A tiny random text-only Llama with the same tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-text")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_vlm.hf_dir))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=512,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_a_text_model_refuses_images(text_model_dir):
    from internlocal.engines.transformers_engine import TransformersEngine

    engine = TransformersEngine(text_model_dir, model_name="tiny-text")
    try:
        assert Capability.VISION not in engine.capabilities
        with pytest.raises(Unsupported, match="cannot see images") as refused:
            engine.chat(ask(png(noise(1))), GenerationParams.greedy(max_tokens=1))
        assert refused.value.field == "messages" and "tiny-text" in str(refused.value)
        # the same words without the image are fine
        assert engine.chat(ask(None), GenerationParams.greedy(max_tokens=1)).collect().prompt_tokens > 3
    finally:
        engine.close()


def test_an_imported_hf_vision_folder_chats_about_an_image_through_the_service(services, tiny_vlm):
    """The catalog marks the folder as vision (its config has a vision_config) and the loader picks this engine."""

    from PIL import Image

    from internlocal.engines.transformers_vision import TransformersVisionEngine
    from internlocal.hub.library import import_model
    from internlocal.hub.store import Store

    model = import_model(services.catalog, Store(services.settings.store_dir), tiny_vlm.hf_dir, name="tiny-vlm-hf")
    assert model.vision and model.format == "hf"
    picture = io.BytesIO()
    Image.new("RGB", (80, 60), "orange").save(picture, format="PNG")
    images = [("orange.png", picture.getvalue())]
    _, generation = services.chats.ask(
        "What is this?", model.name, "", GenerationParams.greedy(max_tokens=3), images=images
    )
    with_image = generation.collect()
    assert isinstance(services.chats.engines.get(model), TransformersVisionEngine)
    _, plain = services.chats.ask("What is this?", model.name, "", GenerationParams.greedy(max_tokens=3))
    assert with_image.prompt_tokens > plain.collect().prompt_tokens
