"""After training: merge the adapter into its base, prove the merge did something, save a model folder.

The merged model must (1) give the same logits as the base with the adapter applied on a probe
prompt, within a tolerance, and (2) answer the probe differently from the base: an adapter
that changes nothing (a wrong target module, a merge into the wrong weights) is an error, not
a new model. A QLoRA adapter is merged into the base as training saw it: each linear weight
NF4-quantized (double quantization, bitsandbytes' blocks) and dequantized again, so the merged
model computes what the trained model computed — the adapter learnt to correct those weights, not
the original ones. On the CPU by default, in fp32; refused up front when memory or disk is short.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from internlocal.errors import UserError
from internlocal.i18n import _

LOGIT_TOLERANCE = 1e-3  # max |merged − (base + adapter)| over the probe's logits, relative to their scale


@dataclass
class MergeCheck:
    base_answer: str
    adapter_answer: str
    merged_answer: str
    max_logit_diff: float
    logit_scale: float
    base_weights: str = "as stored"  # or "NF4, dequantized" for a QLoRA adapter

    def as_dict(self) -> dict[str, Any]:
        return {
            "base_answer": self.base_answer,
            "adapter_answer": self.adapter_answer,
            "merged_answer": self.merged_answer,
            "max_logit_diff": self.max_logit_diff,
            "logit_scale": self.logit_scale,
            "base_weights": self.base_weights,
        }


def dequantize_like_qlora(model) -> int:
    """Replace every linear weight that QLoRA loaded in NF4 (all but the output head) by its NF4
    round trip; returns how many were replaced."""
    import bitsandbytes.functional as bnbf
    import torch

    head = model.get_output_embeddings()
    replaced = 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module is not head:
                weight = module.weight.data
                packed, state = bnbf.quantize_4bit(
                    weight.contiguous(), blocksize=64, compress_statistics=True, quant_type="nf4"
                )
                module.weight.data = bnbf.dequantize_4bit(packed, state).to(weight.dtype).reshape(weight.shape)
                replaced += 1
    return replaced


def check_merge_fits(base_path: Path, out_dir: Path) -> None:
    """The merge holds the base in fp32 (plus the adapter) and writes it in fp32: refuse before loading
    when free memory or disk cannot take that."""
    import shutil

    import psutil

    weights = sum(f.stat().st_size for f in Path(base_path).glob("*.safetensors")) or sum(
        f.stat().st_size for f in Path(base_path).glob("*.bin")
    )
    dtype_bytes = _stored_dtype_bytes(base_path)
    fp32 = weights * 4 // dtype_bytes
    need_ram, free_ram = int(fp32 * 1.15), psutil.virtual_memory().available
    parent = Path(out_dir).parent
    parent.mkdir(parents=True, exist_ok=True)
    free_disk = shutil.disk_usage(parent).free
    gib = 1024**3
    if need_ram > free_ram:
        raise UserError(
            _(
                "Merging needs about {need:.1f} GiB of memory (the base in fp32) and "
                "{free:.1f} GiB is free; set export.merge=false to keep the adapter, "
                "or merge on a machine with more memory."
            ).format(need=need_ram / gib, free=free_ram / gib)
        )
    if fp32 > free_disk:
        raise UserError(
            _(
                "The merged model needs about {need:.1f} GiB on disk and {free:.1f} GiB is "
                "free under {parent}; free some space or set export.merge=false."
            ).format(need=fp32 / gib, free=free_disk / gib, parent=parent)
        )


def _stored_dtype_bytes(base_path: Path) -> int:
    import json

    try:
        config = json.loads((Path(base_path) / "config.json").read_text())
    except (OSError, ValueError):
        return 4
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return 2 if dtype in ("bfloat16", "float16") else 4


def _prompt_ids(tokenizer, probe: str):
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": probe}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )["input_ids"]
    return tokenizer(probe, return_tensors="pt")["input_ids"]


def _answer(model, tokenizer, ids, max_new_tokens: int = 32) -> str:
    import torch

    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
        )
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()


def merge_adapter(
    base_path: Path,
    adapter_path: Path,
    out_dir: Path,
    probe: str,
    *,
    device: str = "cpu",
    trust_remote_code: bool = False,
    qlora: bool = False,
) -> MergeCheck:
    """Merge, check, and save the merged model (safetensors + tokenizer) to ``out_dir``; ``qlora``: the adapter
    was trained on the NF4 base, so it is merged into that base's dequantized weights."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from internlocal.data.tokenizer import hf_tokenizer

    check_merge_fits(base_path, out_dir)
    tokenizer = hf_tokenizer(adapter_path, trust_remote_code=trust_remote_code)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=dtype, trust_remote_code=trust_remote_code).to(
        device
    )
    base.eval()
    ids = _prompt_ids(tokenizer, probe).to(device)
    base_answer = _answer(base, tokenizer, ids)  # the base as the user knows it, before any quantization
    if qlora:
        dequantize_like_qlora(base)
    model = PeftModel.from_pretrained(base, str(adapter_path)).to(device)
    model.eval()
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits.float()
    adapter_answer = _answer(model, tokenizer, ids)
    merged = model.merge_and_unload()
    merged.eval()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits.float()
    merged_answer = _answer(merged, tokenizer, ids)
    diff = float((merged_logits - adapter_logits).abs().max())
    scale = float(adapter_logits.abs().max())
    check = MergeCheck(
        base_answer, adapter_answer, merged_answer, diff, scale, "NF4, dequantized" if qlora else "as stored"
    )
    if diff > LOGIT_TOLERANCE * max(1.0, scale):
        raise UserError(
            _(
                "The merged model's logits differ from base + adapter by {diff:.4g} on the probe "
                "(tolerance {tolerance:.4g}); the merge is wrong, nothing was saved."
            ).format(diff=diff, tolerance=LOGIT_TOLERANCE * max(1.0, scale))
        )
    if merged_answer == base_answer:
        raise UserError(
            _(
                "The merged model answers the probe {probe!r} exactly like the base ({base_answer!r}): the "
                "adapter changed nothing visible. Train longer or with a higher lr, or set a probe the data "
                "teaches; nothing was saved."
            ).format(probe=probe, base_answer=base_answer)
        )
    out_dir = Path(out_dir)
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return check
