"""transformers engine for Hugging Face vision-language folders (SmolVLM / Idefics3, LLaVA, Qwen-VL …).

The model loads as ``AutoModelForImageTextToText`` with its ``AutoProcessor``; chat messages' OpenAI
``image_url`` parts become the processor's ``{"type": "image"}`` parts, the images are opened upright
(``images.open_image``) and scaled to the model's input size before they cost tokens, the processor renders
and expands the prompt, and the text engine's token loop runs with the image inputs (``pixel_values`` …)
passed to its first forward pass only. ``prompt_tokens`` counts the image's tokens: the processor's
``input_ids`` are the prompt. Messages without images take the text path of the same model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from internlocal.engines.base import Capability, Generation, GenerationParams
from internlocal.engines.images import DEFAULT_MAX_SIDE, content_text, has_images, is_image_part, message_images
from internlocal.engines.transformers_engine import TransformersEngine
from internlocal.errors import UserError
from internlocal.i18n import _


class TransformersVisionEngine(TransformersEngine):
    engine_name = "transformers"
    capabilities = frozenset(
        {
            Capability.CHAT,
            Capability.COMPLETION,
            Capability.TOKENIZE,
            Capability.LOGLIKELIHOOD,
            Capability.LOGPROBS,
            Capability.VISION,
        }
    )
    processor: Any = None  # AutoProcessor, set by _load_model

    def __init__(
        self,
        path: str | Path,
        *,
        model_name: str | None = None,
        device: str | None = None,
        dtype: str | None = None,
        chat_template: str | None = None,
        n_ctx: int | None = None,
        threads: int | None = None,
    ):
        super().__init__(
            path,
            model_name=model_name,
            device=device,
            dtype=dtype,
            chat_template=chat_template,
            n_ctx=n_ctx,
            threads=threads,
        )
        if chat_template and not getattr(self.processor, "chat_template", None):
            self.processor.chat_template = chat_template
        self.max_side = processor_max_side(self.processor)

    def _load_model(self, path: Path, dtype, kwargs: dict[str, Any]):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        self.processor = AutoProcessor.from_pretrained(str(path))
        self.tokenizer = getattr(self.processor, "tokenizer", None) or self.processor
        return AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype, **kwargs)

    # -- text --------------------------------------------------------------------------------------

    def render_chat(self, messages) -> str:
        """The prompt as the processor's chat template writes it, one image placeholder per image."""
        if not getattr(self.processor, "chat_template", None):
            if has_images(messages):  # a tokenizer's template has no place for an image: never drop one
                raise UserError(
                    _("{model} has no chat template that places images; give it one.").format(model=self.model_name)
                )
            if self.tokenizer.chat_template:  # a folder whose template only the tokenizer carries
                return super().render_chat(processor_messages(messages, strings=True))
            raise UserError(_("{model} has no chat template; use completion.").format(model=self.model_name))
        return self.processor.apply_chat_template(
            processor_messages(messages), tokenize=False, add_generation_prompt=True
        )

    # -- generation --------------------------------------------------------------------------------

    def chat(self, messages, params=None, *, response_format=None, tools=None, tool_choice=None) -> Generation:
        if tools:
            self.require(Capability.TOOLS)
        if response_format and response_format.get("type") not in (None, "text"):
            self.require(Capability.CONSTRAINED)
        params = params or GenerationParams()
        messages = list(messages)
        text = self.render_chat(messages)
        if not has_images(messages):
            return self._generation(self.tokenize(text, add_special=False), params)
        images = [self.open_image(data) for data in message_images(messages)]
        inputs = self.processor(text=[text], images=[images], add_special_tokens=False, return_tensors="pt")
        prompt = inputs.pop("input_ids")[0].tolist()
        first = {}
        for key, value in inputs.items():
            if not hasattr(value, "to"):
                continue
            floating = getattr(value, "is_floating_point", lambda: False)()
            first[key] = value.to(self.device, dtype=self.model.dtype) if floating else value.to(self.device)
        return self._generation(prompt, params, first_inputs=first)

    def open_image(self, data: bytes):
        """The image upright, in RGB, its longest side at most the model's input size (no larger than it reads)."""
        from PIL import Image

        from internlocal.engines.images import open_image

        image = open_image(data)
        if max(image.size) > self.max_side:
            image.thumbnail((self.max_side, self.max_side), Image.Resampling.LANCZOS)
        return image

    def close(self) -> None:
        self.processor = None
        super().close()


def processor_messages(messages, *, strings: bool = False) -> list[dict[str, Any]]:
    """OpenAI-shaped messages in a processor's shape: content a list of ``text`` and ``image`` parts
    (or, with ``strings``, the text alone for a tokenizer's template)."""
    out = []
    for message in messages:
        content = message.get("content")
        if strings:
            out.append({**message, "content": content_text(content)})
            continue
        if isinstance(content, list):
            parts: list[dict[str, Any]] = []
            for part in content:
                if is_image_part(part):
                    parts.append({"type": "image"})
                elif isinstance(part, dict) and part.get("type") == "text":
                    parts.append({"type": "text", "text": part.get("text", "")})
        else:
            parts = [{"type": "text", "text": content_text(content)}]
        out.append({**message, "content": parts})
    return out


def processor_max_side(processor) -> int:
    """The longest side the model's image processor reads an image at (Idefics3's ``longest_edge``, a fixed
    ``height`` × ``width`` …), at most ``DEFAULT_MAX_SIDE``; larger images are scaled down to it first."""
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)  # a dict, or transformers 5's SizeDict

    def field(key: str):
        value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
        return value if isinstance(value, int) else 0

    side = field("longest_edge") or max(field("height"), field("width"))
    if side <= 0 or side > DEFAULT_MAX_SIDE:
        return DEFAULT_MAX_SIDE  # a pixel budget (Qwen2-VL's longest_edge), a shortest edge, or nothing
    return side
