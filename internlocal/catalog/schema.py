"""SQLModel mappings of the catalog tables.

The tables themselves are created by ``migrations.py``; these classes mirror them column for
column (a test checks that they agree). Timestamps are ISO-8601 UTC strings.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from sqlmodel import Field, SQLModel


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Model(SQLModel, table=True):
    __tablename__ = "model"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    name: str = Field(unique=True)
    family: str | None = None
    kind: str = "chat"
    format: str
    architecture: str | None = None
    quantization: str | None = None
    parameters: int | None = None
    context_length: int | None = None
    path: str
    storage: str = "reference"
    size_bytes: int | None = None
    sha256: str | None = None
    source: str | None = None
    chat_template: str | None = None
    metadata_json: str = "{}"
    created_at: str = Field(default_factory=utcnow)

    @property
    def metadata_dict(self) -> dict[str, Any]:
        return json.loads(self.metadata_json or "{}")

    @property
    def sampling(self) -> dict[str, Any]:
        """The sampling the model's authors recommend (registry, generation_config.json or GGUF keys), as
        ``GenerationParams`` fields; used where the user set none. ``metadata_dict["sampling"]["source"]`` says
        where it is from."""
        found = self.metadata_dict.get("sampling") or {}
        return {k: v for k, v in found.items() if k in ("temperature", "top_p", "top_k", "min_p", "repeat_penalty")}

    @property
    def vision(self) -> bool:
        """The model reads images: a GGUF with its projector (``metadata.projector``), or an HF vision folder."""
        return bool(self.metadata_dict.get("vision"))

    @property
    def projector_path(self) -> str | None:
        """A GGUF vision model's projector file (mmproj), linked in the catalog by a ``projector`` lineage edge."""
        return self.metadata_dict.get("projector")

    def summary(self) -> dict[str, Any]:
        """The fields a listing shows (``models list --json``)."""
        return {
            "id": self.id,
            "name": self.name,
            "family": self.family,
            "kind": self.kind,
            "format": self.format,
            "architecture": self.architecture,
            "quantization": self.quantization,
            "parameters": self.parameters,
            "context_length": self.context_length,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "path": self.path,
            "storage": self.storage,
            "source": self.source,
            "created_at": self.created_at,
            "vision": self.vision,
        }


class Lineage(SQLModel, table=True):
    """One edge of the artefact graph: ``parent --operation--> child``.

    Artefacts are named by (type, id): ``("model", 3)``, later ``("dataset", 5)``, ``("run", 2)``…
    """

    __tablename__ = "lineage"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    parent_type: str
    parent_id: int
    child_type: str
    child_id: int
    operation: str
    params_json: str = "{}"
    created_at: str = Field(default_factory=utcnow)


class ChatSession(SQLModel, table=True):
    __tablename__ = "chat_session"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    title: str
    model_name: str | None = None
    system_prompt: str
    params_json: str = "{}"
    kb_name: str | None = None  # the knowledge base a `kb` or `agent` chat answers from
    mode: str = "chat"  # chat | kb | agent
    tools_json: str = "[]"  # tools that act (["python"]) the user enabled in an agent chat; each call is confirmed
    created_at: str = Field(default_factory=utcnow)
    updated_at: str = Field(default_factory=utcnow)

    @property
    def tools(self) -> list[str]:
        return json.loads(self.tools_json or "[]")


class ChatMessage(SQLModel, table=True):
    __tablename__ = "chat_message"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    session_id: int = Field(foreign_key="chat_session.id")
    role: str
    content: str
    model_name: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft_ms: float | None = None
    tokens_per_s: float | None = None
    finish_reason: str | None = None
    sources_json: str | None = None  # knowledge-base passages the answer was given ([n] → file and span), agent steps
    created_at: str = Field(default_factory=utcnow)

    @property
    def sources(self) -> dict[str, Any]:
        return json.loads(self.sources_json) if self.sources_json else {}


class ChatImage(SQLModel, table=True):
    """An image attached to a chat message; its bytes are ``<home>/images/<sha256[:2]>/<sha256>`` (chat/images.py)."""

    __tablename__ = "chat_image"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    message_id: int = Field(foreign_key="chat_message.id")
    position: int
    sha256: str
    mime: str
    width: int
    height: int
    size_bytes: int
    name: str
    created_at: str = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    __tablename__ = "job"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    kind: str
    target: str
    title: str
    status: str
    params_json: str = "{}"
    result_json: str | None = None
    error: str | None = None
    pid: int | None = None
    events_path: str
    attempts: int = 0
    created_at: str = Field(default_factory=utcnow)
    started_at: str | None = None
    finished_at: str | None = None

    @property
    def params(self) -> dict[str, Any]:
        return json.loads(self.params_json or "{}")

    @property
    def result(self) -> Any:
        return json.loads(self.result_json) if self.result_json else None


class EvalRun(SQLModel, table=True):
    __tablename__ = "eval_run"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    model_name: str
    model_sha256: str | None = None
    quantization: str | None = None
    engine: str | None = None
    task: str
    task_version: str
    prompt_hash: str
    chat_template_hash: str | None = None
    n_items: int
    n_skipped: int = 0
    metrics_json: str = "{}"
    stderr_json: str = "{}"
    config_json: str = "{}"
    job_id: int | None = None
    created_at: str = Field(default_factory=utcnow)

    @property
    def metrics(self) -> dict[str, float]:
        return json.loads(self.metrics_json or "{}")

    @property
    def stderr(self) -> dict[str, float]:
        return json.loads(self.stderr_json or "{}")


class EvalItem(SQLModel, table=True):
    __tablename__ = "eval_item"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    run_id: int = Field(default=None, foreign_key="eval_run.id")  # set by Catalog.add_eval_run with its run
    idx: int
    prompt: str
    target: str | None = None
    response: str | None = None
    scores_json: str = "{}"


class EvalCache(SQLModel, table=True):
    __tablename__ = "eval_cache"

    key: str = Field(primary_key=True)
    value_json: str
    created_at: str = Field(default_factory=utcnow)


JOB_ACTIVE = ("queued", "running")
JOB_FINISHED = ("succeeded", "failed", "cancelled")


class Dataset(SQLModel, table=True):
    __tablename__ = "dataset"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    name: str = Field(unique=True)
    form: str
    path: str
    source: str | None = None
    sha256: str | None = None
    train_rows: int
    validation_rows: int
    stats_json: str = "{}"
    created_at: str = Field(default_factory=utcnow)

    @property
    def stats(self) -> dict[str, Any]:
        return json.loads(self.stats_json or "{}")


class TrainRun(SQLModel, table=True):
    __tablename__ = "train_run"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    name: str = Field(unique=True)
    recipe: str
    config_json: str = "{}"
    base_model: str
    dataset: str | None = None
    run_dir: str
    job_id: int | None = None
    status: str = "created"
    estimate_json: str = "{}"
    summary_json: str = "{}"
    created_at: str = Field(default_factory=utcnow)
    updated_at: str = Field(default_factory=utcnow)

    @property
    def config(self) -> dict[str, Any]:
        return json.loads(self.config_json or "{}")

    @property
    def estimate(self) -> dict[str, Any]:
        return json.loads(self.estimate_json or "{}")

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.summary_json or "{}")


class KnowledgeBase(SQLModel, table=True):
    __tablename__ = "knowledge_base"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    name: str = Field(unique=True)
    path: str
    folders_json: str = "[]"
    embedder: str
    dimension: int
    chunk_size: int
    chunk_overlap: int
    threshold: float
    stats_json: str = "{}"
    pipeline_json: str = "{}"  # the answer pipeline's switches that differ from the defaults (kb/answer.py)
    created_at: str = Field(default_factory=utcnow)
    updated_at: str = Field(default_factory=utcnow)

    @property
    def folders(self) -> list[str]:
        return json.loads(self.folders_json or "[]")

    @property
    def pipeline(self) -> dict[str, Any]:
        return json.loads(self.pipeline_json or "{}")

    @property
    def stats(self) -> dict[str, Any]:
        return json.loads(self.stats_json or "{}")


class AnswerFeedback(SQLModel, table=True):
    """A user's verdict on a knowledge-base answer. When the threshold is fitted again (HuixiangDou's bad cases),
    a bad answer counts as a question to refuse, a bad refusal as one to answer."""

    __tablename__ = "answer_feedback"

    id: int = Field(default=None, primary_key=True)  # None until inserted; every stored row has one
    kb_name: str
    message_id: int | None = None
    question: str
    answer: str
    verdict: str  # bad | good
    refused: bool = False  # the answer judged was the refusal (a bad one: it should have been answered)
    created_at: str = Field(default_factory=utcnow)
