"""Shared by the benchmark scripts: the embedded chat model as a float32 Hugging Face folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def make_hf_dir(work: Path) -> Path:
    """Convert the embedded GGUF with transformers' GGUF loader (in a subprocess: its memory goes with it)."""
    from internlocal.hub.embedded import CHAT_MODEL

    out = work / "smollm2-hf"
    if out.exists():
        return out
    code = f"""
import torch
from pathlib import Path
from transformers import AutoModelForCausalLM, AutoTokenizer
p = Path({str(CHAT_MODEL.locate())!r})
m = AutoModelForCausalLM.from_pretrained(str(p.parent), gguf_file=p.name, dtype=torch.float32)
t = AutoTokenizer.from_pretrained(str(p.parent), gguf_file=p.name)
m.hf_quantizer = None
del m.config.quantization_config
m.save_pretrained({str(out)!r}); t.save_pretrained({str(out)!r})
"""
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    return out
