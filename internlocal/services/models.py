"""Model actions: pull, convert, quantize and verify, each as a job."""

from __future__ import annotations

from typing import TYPE_CHECKING

from internlocal.errors import UserError
from internlocal.services import Services

if TYPE_CHECKING:
    from internlocal.catalog.schema import Job


def start_pull(svc: Services, spec: str, *, name: str | None = None, hub: str | None = None, parts: int = 4) -> Job:
    """Download a model (registry name, ``hf:``, ``modelscope:`` or a URL) into the store and the catalog."""
    from internlocal.hub.pull import pull_model

    params = {"spec": spec, "name": name, "hub": hub, "parts": parts}
    return svc.jobs.submit(pull_model, params, kind="models.pull", title=f"Pull {spec}")


def start_convert(
    svc: Services, model: str, to: str | None = None, *, outtype: str = "", name: str | None = None
) -> Job:
    """GGUF → Hugging Face folder (``to="hf"``) or HF → GGUF (``to="gguf"``); by default the other format."""
    from internlocal.hub.convert import gguf_to_hf, hf_to_gguf

    found = svc.catalog.get_model(model)
    to = to or ("hf" if found.format == "gguf" else "gguf")
    if to == "hf":
        params = {"model": model, "name": name, "dtype": outtype or "bfloat16"}
        return svc.jobs.submit(gguf_to_hf, params, kind="models.convert", title=f"Convert {model} to HF")
    if to == "gguf":
        params = {"model": model, "name": name, "outtype": outtype or "f16"}
        return svc.jobs.submit(hf_to_gguf, params, kind="models.convert", title=f"Convert {model} to GGUF")
    raise UserError(f"--to {to!r}: convert to hf or gguf.")


def start_quantize(
    svc: Services, model: str, qtype: str = "Q4_K_M", *, method: str = "gguf", name: str | None = None
) -> Job:
    """llama.cpp quantization of a GGUF (``method="gguf"``), or AWQ W4A16 with LMDeploy (``"awq"``, NVIDIA)."""
    from internlocal.hub.convert import quantize_awq, quantize_gguf

    svc.catalog.get_model(model)
    if method == "awq":
        return svc.jobs.submit(
            quantize_awq, {"model": model, "name": name}, kind="models.quantize", title=f"AWQ {model}"
        )
    if method == "gguf":
        return svc.jobs.submit(
            quantize_gguf,
            {"model": model, "qtype": qtype, "name": name},
            kind="models.quantize",
            title=f"Quantize {model} to {qtype.upper()}",
        )
    raise UserError(f"--method {method!r}: use gguf or awq.")


def start_verify(svc: Services, names: list[str] | None = None) -> Job:
    """Re-hash model files (all, or ``names``) and report any that changed or went missing."""
    from internlocal.hub.verify import verify_models

    for name in names or []:
        svc.catalog.get_model(name)  # fail now, not in the job, on a typo
    return svc.jobs.submit(verify_models, {"names": names or None}, kind="models.verify", title="Verify models")
