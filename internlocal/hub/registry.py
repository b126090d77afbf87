"""The curated model registry: ``models/<family>.yaml`` manifests, validated by a schema.

A registry name pulls a GGUF quantization (``internlm2_5-7b-chat:q4_k_m``; the entry's default
tag when none is given) or the Hugging Face weights folder (``:hf``), from the Hugging Face Hub
or, with ``--hub modelscope`` / ``INTERNLOCAL_HUB=modelscope``, from ModelScope.

A vision model's GGUF comes with its projector (``gguf.projector``: the "mmproj" file of the same
repository); a pull takes both, and the registry model says ``vision: true``.

The registry only turns a name into a ``RegistryChoice`` (hub, repository, file pattern, metadata); it
fetches nothing and imports no source: ``sources.resolve`` turns a choice into remote files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from internlocal.errors import UserError
from internlocal.i18n import _
from internlocal.resources import resource_dir

REGISTRY_DIR = resource_dir("models")  # the curated registry shipped with the package (in a clone: models/)


class QuantFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: str = Field(description="file name (or glob for a split GGUF) in the GGUF repository")
    size_gb: float | None = Field(gt=0, description="download size; null (stated, not omitted) when unverified")
    ram_gb: float | None = Field(None, gt=0, description="memory to run it at 4k context; default size + 15% + 0.5")

    @property
    def memory_gb(self) -> float | None:
        if self.ram_gb:
            return self.ram_gb
        return round(self.size_gb * 1.15 + 0.5, 1) if self.size_gb else None


class Projector(BaseModel):
    """A vision model's projector ("mmproj", GGUF architecture ``clip``): one file beside the quantizations,
    used with each of them."""

    model_config = ConfigDict(extra="forbid")

    file: str = Field(min_length=1, description="file name in the GGUF repository")
    size_gb: float | None = Field(gt=0, description="download size; null (stated, not omitted) when unverified")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="checked against the hub's when known")


class Sampling(BaseModel):
    """The sampling a model's authors recommend, used when the user sets none; ``source`` says where it is from."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0.5, le=2)
    source: str = Field(min_length=1, description="the model card, generation_config.json, … this comes from")

    def values(self) -> dict[str, Any]:
        """The parameters set, as ``GenerationParams`` fields."""
        return self.model_dump(exclude_none=True, exclude={"source"})


class GgufRepos(BaseModel):
    model_config = ConfigDict(extra="forbid")

    hf: str | None = None
    modelscope: str | None = None
    files: dict[str, QuantFile]
    projector: Projector | None = None  # a vision model's mmproj, pulled with every quantization

    @field_validator("files")
    @classmethod
    def _lower_tags(cls, files: dict[str, QuantFile]) -> dict[str, QuantFile]:
        return {tag.lower(): f for tag, f in files.items()}


class RegistryModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]+$")
    description: str
    parameters_b: float = Field(gt=0, description="parameters, billions")
    context_length: int = Field(gt=0)
    license: str
    gated: bool = False
    hf: str | None = Field(None, description="Hugging Face repository of the weights (safetensors)")
    modelscope: str | None = Field(None, description="ModelScope id of the same weights")
    hf_size_gb: float | None = Field(None, gt=0)
    gguf: GgufRepos | None = None
    default_tag: str | None = None
    sampling: Sampling | None = None  # the family's when absent
    vision: bool = Field(False, description="reads images: its GGUF needs gguf.projector")

    @model_validator(mode="after")
    def _check(self) -> RegistryModel:
        if not (self.hf or self.modelscope or self.gguf):
            raise ValueError(f"{self.name}: give at least one of hf, modelscope, gguf")
        if self.default_tag and self.default_tag != "hf" and (not self.gguf or self.default_tag not in self.gguf.files):
            raise ValueError(f"{self.name}: default_tag {self.default_tag!r} is not one of its gguf files")
        if self.gguf and self.gguf.projector and not self.vision:
            raise ValueError(f"{self.name}: a gguf projector is for a vision model; set vision: true")
        if self.vision and self.gguf and not self.gguf.projector:
            raise ValueError(f"{self.name}: a vision model's GGUF needs its projector (gguf.projector)")
        return self

    @property
    def tags(self) -> list[str]:
        tags = list(self.gguf.files) if self.gguf else []
        if self.hf or self.modelscope:
            tags.append("hf")
        return tags

    @property
    def default(self) -> str:
        return self.default_tag or (next(iter(self.gguf.files)) if self.gguf else "hf")

    def size_gb(self, tag: str) -> float | None:
        """The download: the folder, or the quantization plus its projector (None when either size is unknown)."""
        if tag == "hf":
            return self.hf_size_gb
        if not self.gguf or tag not in self.gguf.files:
            return None
        return self._with_projector(self.gguf.files[tag].size_gb, digits=3)

    def memory_gb(self, tag: str) -> float | None:
        if tag == "hf":
            return round(self.hf_size_gb * 1.2 + 1, 1) if self.hf_size_gb else None
        if not self.gguf or tag not in self.gguf.files:
            return None
        return self._with_projector(self.gguf.files[tag].memory_gb, digits=1)

    def _with_projector(self, gb: float | None, *, digits: int) -> float | None:
        """``gb`` plus the projector's size (a vision GGUF is both files); None when either is unknown."""
        projector = self.gguf.projector if self.gguf else None
        extra = projector.size_gb if projector is not None else 0.0
        return None if gb is None or extra is None else round(gb + extra, digits)


class Family(BaseModel):
    model_config = ConfigDict(extra="forbid")

    family: str
    description: str
    homepage: str | None = None
    sampling: Sampling | None = None  # recommended for every model of the family (a model may override it)
    models: list[RegistryModel]


@dataclass(frozen=True)
class RegistryChoice:
    """What a registry name stands for: a repository on one hub, and the files to take from it."""

    hub: str  # hf | modelscope
    repo: str  # org/name on that hub
    pattern: str | None  # file (or glob, for a split GGUF) of a quantization; None: the safetensors folder
    default_name: str  # the catalog name a pull gives the model
    metadata: dict[str, Any] = field(default_factory=dict)  # registry name, tag, license, context length
    projector: str | None = None  # a vision GGUF's mmproj file in the same repository, pulled with it
    projector_sha256: str | None = None  # what the registry states for it, checked against the hub's


class Registry:
    def __init__(self, families: list[Family]):
        self.families = families
        self.models = {m.name: (f, m) for f in families for m in f.models}

    def get(self, name: str) -> RegistryModel:
        if name not in self.models:
            close = [n for n in self.models if name.lower() in n]
            if close:
                raise UserError(
                    _("{name!r} is not in the model registry. Did you mean {names}?").format(
                        name=name, names=", ".join(close[:3])
                    )
                )
            raise UserError(
                _("{name!r} is not in the model registry. `internlocal models search` lists them.").format(name=name)
            )
        return self.models[name][1]

    def search(self, text: str = "") -> list[tuple[Family, RegistryModel]]:
        words = text.lower().split()
        out = []
        for family, model in self.models.values():
            hay = " ".join(
                [family.family, model.name, model.description, model.license, "vision" if model.vision else ""]
            ).lower()
            if all(w in hay for w in words):
                out.append((family, model))
        return out

    def choose(self, spec: str, hub: str = "hf") -> RegistryChoice:
        """``name[:tag]`` → the repository on ``hub`` (hf or modelscope) and the files to take from it.
        Nothing is fetched: ``sources.resolve`` turns the choice into remote files."""
        name, __, tag = spec.partition(":")
        model = self.get(name)
        recommended = self.sampling(name)
        tag = (tag or model.default).lower()
        if tag not in model.tags:
            raise UserError(
                _("{name} has no tag {tag!r}; choose one of {tags}.").format(
                    name=name, tag=tag, tags=", ".join(model.tags)
                )
            )
        if hub not in ("hf", "modelscope"):
            raise UserError(_("Unknown hub {hub!r}; use hf or modelscope.").format(hub=hub))
        projector = None
        if tag == "hf":
            repo = model.hf if hub == "hf" else model.modelscope
            pattern = None
        else:
            if model.gguf is None:  # tags other than hf are GGUF quantizations: validated with the file
                raise UserError(_("{name} has no GGUF files in the registry; pull {name}:hf.").format(name=name))
            repo = model.gguf.hf if hub == "hf" else model.gguf.modelscope
            pattern = model.gguf.files[tag].file
            projector = model.gguf.projector
        if not repo:
            raise UserError(
                _("{name}:{tag} is not published on {hub}; try the other hub (--hub).").format(
                    name=name, tag=tag, hub=hub
                )
            )
        return RegistryChoice(
            hub=hub,
            repo=repo,
            pattern=pattern,
            default_name=f"{name}-{tag}" if tag != "hf" else name,
            metadata={
                "registry": name,
                "tag": tag,
                "license": model.license,
                "context_length": model.context_length,
                **({"sampling": recommended.model_dump(exclude_none=True)} if recommended else {}),
                **({"vision": True} if model.vision else {}),
            },
            projector=projector.file if projector else None,
            projector_sha256=projector.sha256 if projector else None,
        )

    def sampling(self, name: str) -> Sampling | None:
        """The recommended sampling of a registry model (its own, else its family's)."""
        family, model = self.models[name]
        return model.sampling or family.sampling


def load_registry(directory: Path = REGISTRY_DIR) -> Registry:
    return _load(str(directory))


@lru_cache(maxsize=4)
def _load(directory: str) -> Registry:
    families = []
    for path in sorted(Path(directory).glob("*.yaml")):
        try:
            families.append(Family.model_validate(yaml.safe_load(path.read_text(encoding="utf-8"))))
        except (ValidationError, yaml.YAMLError) as exc:
            raise UserError(
                _("The registry file {path} is invalid: {exc}").format(path=path, exc=exc).replace("\n", " ")
            ) from None
    names = [m.name for f in families for m in f.models]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise UserError(
            _("The registry lists {names} more than once; fix models/*.yaml.").format(names=", ".join(sorted(dupes)))
        )
    return Registry(families)
