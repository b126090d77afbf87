"""After training: merge the adapter into its base, prove the merge did something, save a model folder.

The merged model must (1) give the same logits as the base with the adapter applied on a probe
prompt, within a tolerance, and (2) answer the probe differently from the base: an adapter
that changes nothing (a wrong target module, a merge into the wrong weights) is an error, not
a new model. QLoRA adapters are merged into the unquantized base (the same weights the NF4 copy
was made from), on the CPU by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from internlocal.errors import UserError

LOGIT_TOLERANCE = 1e-3  # max |merged − (base + adapter)| over the probe's logits, relative to their scale


@dataclass
class MergeCheck:
    base_answer: str
    adapter_answer: str
    merged_answer: str
    max_logit_diff: float
    logit_scale: float

    def as_dict(self) -> dict[str, Any]:
        return {"base_answer": self.base_answer, "adapter_answer": self.adapter_answer, "merged_answer": self.merged_answer,
                "max_logit_diff": self.max_logit_diff, "logit_scale": self.logit_scale}


def _prompt_ids(tokenizer, probe: str):
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": probe}], add_generation_prompt=True,
                                             return_tensors="pt", return_dict=True)["input_ids"]
    return tokenizer(probe, return_tensors="pt")["input_ids"]


def _answer(model, tokenizer, ids, max_new_tokens: int = 32) -> str:
    import torch

    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def merge_adapter(base_path: Path, adapter_path: Path, out_dir: Path, probe: str, *, device: str = "cpu",
                  trust_remote_code: bool = False) -> MergeCheck:
    """Merge, check, and save the merged model (safetensors + tokenizer) to ``out_dir``."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from internlocal.data.tokenizer import hf_tokenizer

    tokenizer = hf_tokenizer(adapter_path, trust_remote_code=trust_remote_code)
    dtype = torch.float32 if device == "cpu" else torch.bfloat16
    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=dtype, trust_remote_code=trust_remote_code).to(device)
    base.eval()
    ids = _prompt_ids(tokenizer, probe).to(device)
    base_answer = _answer(base, tokenizer, ids)
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
    check = MergeCheck(base_answer, adapter_answer, merged_answer, diff, scale)
    if diff > LOGIT_TOLERANCE * max(1.0, scale):
        raise UserError(f"The merged model's logits differ from base + adapter by {diff:.4g} on the probe "
                        f"(tolerance {LOGIT_TOLERANCE * max(1.0, scale):.4g}); the merge is wrong, nothing was saved.")
    if merged_answer == base_answer:
        raise UserError(f"The merged model answers the probe {probe!r} exactly like the base ({base_answer!r}): the "
                        "adapter changed nothing visible. Train longer or with a higher lr, or set a probe the data "
                        "teaches; nothing was saved.")
    out_dir = Path(out_dir)
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return check
