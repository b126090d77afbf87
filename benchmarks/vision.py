"""Time to first token for one question about one image: internlocal's engines vs the libraries they wrap.

- llama.cpp: internlocal's ``LlamaCppEngine`` (projector through mtmd) vs llama-cpp-python's own
  ``MTMDChatHandler`` + ``Llama.create_chat_completion``: same GGUF, projector, image, question, threads and
  context, greedy.
- transformers: internlocal's ``TransformersVisionEngine`` vs plain ``model.generate`` on the processor's inputs
  (``AutoProcessor`` + ``AutoModelForImageTextToText``), greedy, ``max_new_tokens=1``.

Each run starts cold (no KV reused between repetitions); runs interleave so machine noise hits both alike; the
median is reported, and the ratio raw/internlocal (>= 0.95: internlocal adds at most ~5 %).

    python benchmarks/vision.py [--reps 7] [--gguf F --mmproj F] [--hf DIR] [--image PNG]

Without model arguments it builds the tests' tiny random SmolVLM-architecture model (tests/tiny_vlm.py: no vision
weights can be downloaded on the machines this project is developed on); with a real model's files it measures
that model.
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.tiny_vlm, when run from the repository
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

QUESTION = "Describe this picture in one sentence."


def photo(size: tuple[int, int] = (1280, 960)) -> bytes:
    """A synthetic photo-sized picture (shapes over sensor-like noise) as JPEG: deterministic, no file needed."""
    import numpy as np
    from PIL import Image, ImageDraw

    noise = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    image = Image.blend(Image.fromarray(noise), Image.linear_gradient("L").resize(size).convert("RGB"), 0.7)
    draw = ImageDraw.Draw(image)
    for i in range(12):
        box = (80 * i, 60 * i % size[1], 80 * i + 180, 60 * i % size[1] + 140)
        draw.ellipse(box, fill=(20 * i, 255 - 20 * i, 90))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def messages(image: bytes) -> list[dict]:
    url = "data:image/jpeg;base64," + base64.b64encode(image).decode()
    content = [{"type": "text", "text": QUESTION}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": content}]


def interleaved(ours: Callable[[], float], raw: Callable[[], float], reps: int) -> tuple[float, float]:
    """Median milliseconds of each, after one warm-up each, the runs alternating so noise hits both alike."""
    ours(), raw()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(reps):
        times[0].append(ours())
        times[1].append(raw())
    return statistics.median(times[0]) * 1000, statistics.median(times[1]) * 1000


def bench_llamacpp(gguf: Path, mmproj: Path, image: bytes, reps: int, n_ctx: int) -> tuple[float, float]:
    import llama_cpp
    from llama_cpp.llama_chat_format import MTMDChatHandler

    from internlocal.engines.base import GenerationParams
    from internlocal.engines.llamacpp import LlamaCppEngine, default_threads

    threads = default_threads()
    ours = LlamaCppEngine(gguf, projector_path=mmproj, n_ctx=n_ctx, n_threads=threads)
    raw = llama_cpp.Llama(
        str(gguf),
        chat_handler=MTMDChatHandler(clip_model_path=str(mmproj), verbose=False),
        n_ctx=n_ctx,
        n_threads=threads,
        verbose=False,
    )
    chat = messages(image)

    def run_ours() -> float:
        ours._llm.reset()
        ours._llm.input_ids[:] = 0  # forget the image: the next run puts it again, as a new question does
        start = time.perf_counter()
        generation = ours.chat(chat, GenerationParams.greedy(max_tokens=1))
        for _ in generation:
            break
        generation.cancel()
        generation.collect()
        return time.perf_counter() - start

    def run_raw() -> float:
        start = time.perf_counter()
        for chunk in raw.create_chat_completion(chat, max_tokens=1, temperature=0.0, top_k=1, stream=True):
            if chunk["choices"][0]["delta"].get("content") is not None:
                break
        return time.perf_counter() - start

    try:
        return interleaved(run_ours, run_raw, reps)
    finally:
        ours.close()
        raw.close()


def bench_transformers(hf_dir: Path, image: bytes, reps: int) -> tuple[float, float]:
    import torch
    from PIL import Image
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from internlocal.engines.base import GenerationParams
    from internlocal.engines.transformers_vision import TransformersVisionEngine

    ours = TransformersVisionEngine(hf_dir, n_ctx=2048)
    processor = AutoProcessor.from_pretrained(str(hf_dir))
    model = AutoModelForImageTextToText.from_pretrained(str(hf_dir), dtype=torch.float32).eval()
    chat = messages(image)

    def run_ours() -> float:
        start = time.perf_counter()
        generation = ours.chat(chat, GenerationParams.greedy(max_tokens=1))
        generation.collect()
        return time.perf_counter() - start

    def run_raw() -> float:
        start = time.perf_counter()
        picture = Image.open(io.BytesIO(image)).convert("RGB")
        turns = [{"role": "user", "content": [{"type": "text", "text": QUESTION}, {"type": "image"}]}]
        prompt = processor.apply_chat_template(turns, add_generation_prompt=True)
        inputs = processor(text=prompt, images=[picture], return_tensors="pt")
        with torch.inference_mode():
            model.generate(**inputs, max_new_tokens=1, do_sample=False)
        return time.perf_counter() - start

    try:
        return interleaved(run_ours, run_raw, reps)
    finally:
        ours.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--gguf", type=Path)
    parser.add_argument("--mmproj", type=Path)
    parser.add_argument("--hf", type=Path, help="a Hugging Face vision-language folder")
    parser.add_argument("--image", type=Path, help="a picture (default: a synthetic 1280×960 JPEG)")
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args()
    image = args.image.read_bytes() if args.image else photo()
    if not (args.gguf or args.hf):
        from tests.tiny_vlm import build_tiny_vlm

        tiny = build_tiny_vlm(Path(tempfile.gettempdir()) / "internlocal-bench-tiny-vlm")
        args.gguf, args.mmproj, args.hf = tiny.gguf, tiny.mmproj, tiny.hf_dir
        print("model: the tests' tiny random SmolVLM-architecture VLM (tests/tiny_vlm.py)")
    print(f"image {len(image) >> 10} KiB, {args.reps} reps (median), time to first token")
    print(f"{'path':14}{'internlocal ms':>16}{'raw ms':>10}{'raw/internlocal':>17}")
    if args.gguf:
        if not args.mmproj:
            raise SystemExit("--gguf needs --mmproj (the model's projector)")
        ours, raw = bench_llamacpp(args.gguf, args.mmproj, image, args.reps, args.n_ctx)
        print(f"{'llama.cpp':14}{ours:>16.1f}{raw:>10.1f}{raw / ours:>17.3f}")
    if args.hf:
        ours, raw = bench_transformers(args.hf, image, args.reps)
        print(f"{'transformers':14}{ours:>16.1f}{raw:>10.1f}{raw / ours:>17.3f}")
    print("target: raw/internlocal >= 0.95 (internlocal adds at most ~5 %)")


if __name__ == "__main__":
    main()
