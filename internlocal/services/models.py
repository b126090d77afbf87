"""Model actions: pull, convert, quantize and verify, each as a job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.services import Services

if TYPE_CHECKING:
    from internlocal.catalog.schema import Job
    from internlocal.hub.registry import RegistryModel

GB = 1e9  # the registry states sizes in decimal gigabytes, as the hubs do
BIG_PULL_GB = 1.0  # the Models screen asks before a download larger than this


@dataclass
class RegistryRow:
    """A registry model as the Models screen lists it: its default tag, and whether that fits this machine."""

    model: RegistryModel
    tag: str
    size_gb: float | None
    memory_gb: float | None
    fits: bool | None  # None: the registry does not say how much memory it needs

    @property
    def name(self) -> str:
        return self.model.name


def memory_for_models() -> int:
    """Bytes a model can use here: free RAM, or the first GPU's free memory where that is more (llama.cpp
    offloads the layers there)."""
    from internlocal.train.plan import free_memory

    ram, __ = free_memory("cpu")
    gpu, __ = free_memory("cuda")
    return max(ram or 0, gpu or 0)


def registry_rows(text: str = "", *, available: int | None = None) -> list[RegistryRow]:
    """Registry models matching ``text``, those that fit in ``available`` bytes (this machine's by default)
    first, in registry order within each group."""
    from internlocal.hub.registry import load_registry

    available = memory_for_models() if available is None else available
    rows = []
    for __, model in load_registry().search(text):
        tag = model.default
        memory = model.memory_gb(tag)
        fits = None if memory is None else memory * GB <= available
        rows.append(RegistryRow(model, tag, model.size_gb(tag), memory, fits))
    rows.sort(key=lambda row: {True: 0, None: 1, False: 2}[row.fits])
    return rows


def pull_question(spec: str) -> str | None:
    """What to ask before pulling ``spec`` when it is a registry model over ``BIG_PULL_GB``: its download size
    and the memory it needs against what is free. None: small, or not a registry name (its size is unknown)."""
    from internlocal.hub.registry import load_registry

    name, __, tag = spec.partition(":")
    registry = load_registry()
    if name not in registry.models:
        return None
    model = registry.get(name)
    tag = (tag or model.default).lower()
    size = model.size_gb(tag)
    if size is None and tag in model.tags and model.parameters_b >= 2:
        # the registry does not state this download's size (unverified); 2B parameters are over 1 GB at 4 bits
        return _(
            "Pull {name}:{tag}? The registry does not state its download size ({parameters:g}B parameters)."
        ).format(name=name, tag=tag, parameters=model.parameters_b)
    if size is None or size <= BIG_PULL_GB:
        return None
    memory = model.memory_gb(tag)
    free = memory_for_models() / GB
    need = ""
    if memory is not None:
        verdict = _("it fits") if memory <= free else _("more than is free, so it would not run here")
        need = _(" To run it needs about {memory:g} GB of memory; {free:.1f} GB is free ({verdict}).").format(
            memory=memory, free=free, verdict=verdict
        )
    return _("Pull {name}:{tag}? It is a {size:g} GB download.{need}").format(name=name, tag=tag, size=size, need=need)


def start_pull(svc: Services, spec: str, *, name: str | None = None, hub: str | None = None, parts: int = 4) -> Job:
    """Download a model (registry name, ``hf:``, ``modelscope:`` or a URL) into the store and the catalog."""
    from internlocal.hub.pull import pull_model

    params = {"spec": spec, "name": name, "hub": hub, "parts": parts}
    return svc.jobs.submit(pull_model, params, kind="models.pull", title=_("Pull {spec}").format(spec=spec))


def start_convert(
    svc: Services, model: str, to: str | None = None, *, outtype: str = "", name: str | None = None
) -> Job:
    """GGUF → Hugging Face folder (``to="hf"``) or HF → GGUF (``to="gguf"``); by default the other format."""
    from internlocal.hub.convert import gguf_to_hf, hf_to_gguf

    found = svc.catalog.get_model(model)
    to = to or ("hf" if found.format == "gguf" else "gguf")
    if to == "hf":
        params = {"model": model, "name": name, "dtype": outtype or "bfloat16"}
        return svc.jobs.submit(
            gguf_to_hf, params, kind="models.convert", title=_("Convert {model} to HF").format(model=model)
        )
    if to == "gguf":
        params = {"model": model, "name": name, "outtype": outtype or "f16"}
        return svc.jobs.submit(
            hf_to_gguf, params, kind="models.convert", title=_("Convert {model} to GGUF").format(model=model)
        )
    raise UserError(_("--to {to!r}: convert to hf or gguf.").format(to=to))


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
            title=_("Quantize {model} to {qtype}").format(model=model, qtype=qtype.upper()),
        )
    raise UserError(_("--method {method!r}: use gguf or awq.").format(method=method))


def start_verify(svc: Services, names: list[str] | None = None) -> Job:
    """Re-hash model files (all, or ``names``) and report any that changed or went missing."""
    from internlocal.hub.verify import verify_models

    for name in names or []:
        svc.catalog.get_model(name)  # fail now, not in the job, on a typo
    return svc.jobs.submit(verify_models, {"names": names or None}, kind="models.verify", title=_("Verify models"))
