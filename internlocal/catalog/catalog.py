"""The catalog: the single source of truth for models, their lineage, chats and jobs."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy.exc
from sqlalchemy import event
from sqlmodel import Session, col, create_engine, select

from internlocal.catalog import db
from internlocal.catalog.schema import (
    AnswerFeedback,
    ChatImage,
    ChatMessage,
    ChatSession,
    Dataset,
    EvalCache,
    EvalItem,
    EvalRun,
    Job,
    KnowledgeBase,
    Lineage,
    Model,
    TrainRun,
    utcnow,
)
from internlocal.errors import NotFound, UserError
from internlocal.i18n import _

Artefact = tuple[str, int]  # ("model", 3)


class Catalog:
    """Typed access to one catalog file. Safe to share between threads; each call is its own transaction."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.previous_version = db.migrate(self.path)
        self.engine = create_engine(
            f"sqlite:///{self.path}",
            connect_args={"timeout": db.BUSY_TIMEOUT_S, "check_same_thread": False},
        )
        event.listen(self.engine, "connect", _on_connect)

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                yield session
                session.commit()
        except sqlalchemy.exc.IntegrityError:
            raise
        except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.DatabaseError) as exc:
            raise db._explain(self.path, exc.orig if exc.orig is not None else exc) from None  # type: ignore[arg-type]  # .orig: the DB-API error, typed BaseException

    # -- models -----------------------------------------------------------------------------------

    def add_model(self, model: Model) -> Model:
        try:
            with self.session() as s:
                s.add(model)
        except sqlalchemy.exc.IntegrityError:
            raise UserError(
                _("A model named {name!r} is already in the catalog; choose another name.").format(name=model.name)
            ) from None
        return model

    def find_model(self, ref: str | int) -> Model | None:
        """A model by id, exact name, or unambiguous name prefix."""
        with self.session() as s:
            if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
                found = s.get(Model, int(ref))
                if found:
                    return found
            ref = str(ref)
            found = s.exec(select(Model).where(Model.name == ref)).first()
            if found:
                return found
            matches = s.exec(select(Model).where(col(Model.name).startswith(ref))).all()
            return matches[0] if len(matches) == 1 else None

    def has_model(self, name: str) -> bool:
        with self.session() as s:
            return s.exec(select(Model.id).where(Model.name == name)).first() is not None

    def delete_model(self, model_id: int) -> None:
        """Remove the row; lineage edges stay as history of what was derived from what."""
        with self.session() as s:
            model = s.get(Model, model_id)
            if model is None:
                raise NotFound(_("No model with id {model_id} in the catalog.").format(model_id=model_id))
            s.delete(model)

    def get_model(self, ref: str | int) -> Model:
        found = self.find_model(ref)
        if found is None:
            raise NotFound(
                _("No model {ref!r} in the catalog; `internlocal models list` shows the ones there are.").format(
                    ref=ref
                )
            )
        return found

    def list_models(self, kind: str | None = None) -> list[Model]:
        with self.session() as s:
            query = select(Model).order_by(col(Model.id))
            if kind:
                query = query.where(Model.kind == kind)
            return list(s.exec(query).all())

    def update_model(self, model_id: int, **fields: Any) -> Model:
        with self.session() as s:
            model = s.get(Model, model_id)
            if model is None:
                raise NotFound(_("No model with id {model_id} in the catalog.").format(model_id=model_id))
            for key, value in fields.items():
                setattr(model, key, value)
            s.add(model)
            return model

    # -- lineage ----------------------------------------------------------------------------------

    def add_lineage(self, parent: Artefact, child: Artefact, operation: str, params: dict | None = None) -> Lineage:
        edge = Lineage(
            parent_type=parent[0],
            parent_id=parent[1],
            child_type=child[0],
            child_id=child[1],
            operation=operation,
            params_json=json.dumps(params or {}, sort_keys=True),
        )
        with self.session() as s:
            s.add(edge)
        return edge

    def parents(self, child: Artefact) -> list[Lineage]:
        with self.session() as s:
            query = select(Lineage).where(Lineage.child_type == child[0], Lineage.child_id == child[1])
            return list(s.exec(query.order_by(col(Lineage.id))).all())

    def children(self, parent: Artefact) -> list[Lineage]:
        with self.session() as s:
            query = select(Lineage).where(Lineage.parent_type == parent[0], Lineage.parent_id == parent[1])
            return list(s.exec(query.order_by(col(Lineage.id))).all())

    # -- chats ------------------------------------------------------------------------------------

    def create_chat(
        self, title: str, system_prompt: str, model_name: str | None, params: dict | None = None
    ) -> ChatSession:
        chat = ChatSession(
            title=title, system_prompt=system_prompt, model_name=model_name, params_json=json.dumps(params or {})
        )
        with self.session() as s:
            s.add(chat)
        return chat

    def list_chats(self) -> list[ChatSession]:
        with self.session() as s:
            return list(
                s.exec(
                    select(ChatSession).order_by(col(ChatSession.updated_at).desc(), col(ChatSession.id).desc())
                ).all()
            )

    def get_chat(self, chat_id: int) -> ChatSession:
        with self.session() as s:
            chat = s.get(ChatSession, chat_id)
        if chat is None:
            raise NotFound(_("No chat with id {chat_id}.").format(chat_id=chat_id))
        return chat

    def update_chat(self, chat_id: int, **fields: Any) -> ChatSession:
        with self.session() as s:
            chat = s.get(ChatSession, chat_id)
            if chat is None:
                raise NotFound(_("No chat with id {chat_id}.").format(chat_id=chat_id))
            for key, value in fields.items():
                setattr(chat, key, value)
            chat.updated_at = utcnow()
            s.add(chat)
            return chat

    def delete_chat(self, chat_id: int) -> list[str]:
        """Delete the chat, its messages and their image rows; returns the sha256 of images no message names
        any more (their files can go)."""
        with self.session() as s:
            chat = s.get(ChatSession, chat_id)
            if chat is None:
                raise NotFound(_("No chat with id {chat_id}.").format(chat_id=chat_id))
            messages = s.exec(select(ChatMessage).where(ChatMessage.session_id == chat_id)).all()
            ids = [m.id for m in messages]
            images = s.exec(select(ChatImage).where(col(ChatImage.message_id).in_(ids))).all() if ids else []
            shas = {image.sha256 for image in images}
            for image in images:
                s.delete(image)
            for message in messages:
                s.delete(message)
            s.delete(chat)
            s.flush()
            still = (
                set(s.exec(select(ChatImage.sha256).where(col(ChatImage.sha256).in_(shas))).all()) if shas else set()
            )
        return sorted(shas - still)

    def add_images(self, message_id: int, images: Sequence[ChatImage]) -> list[ChatImage]:
        with self.session() as s:
            for position, image in enumerate(images):
                image.message_id, image.position = message_id, position
                s.add(image)
        return list(images)

    def message_images(self, message_ids: Sequence[int]) -> dict[int, list[ChatImage]]:
        """The images of each of ``message_ids`` (those that have any), in order."""
        if not message_ids:
            return {}
        with self.session() as s:
            rows = s.exec(
                select(ChatImage)
                .where(col(ChatImage.message_id).in_(list(message_ids)))
                .order_by(col(ChatImage.message_id), col(ChatImage.position))
            ).all()
        out: dict[int, list[ChatImage]] = {}
        for row in rows:
            out.setdefault(row.message_id, []).append(row)
        return out

    def image_shas(self) -> set[str]:
        """Every image sha256 a message names (what the image store must keep)."""
        with self.session() as s:
            return set(s.exec(select(ChatImage.sha256)).all())

    def add_message(self, session_id: int, role: str, content: str, **stats: Any) -> ChatMessage:
        """Append one complete message; the chat's ``updated_at`` moves with it (same transaction)."""
        message = ChatMessage(session_id=session_id, role=role, content=content, **stats)
        with self.session() as s:
            chat = s.get(ChatSession, session_id)
            if chat is None:
                raise NotFound(_("No chat with id {chat_id}.").format(chat_id=session_id))
            chat.updated_at = utcnow()
            s.add(chat)
            s.add(message)
        return message

    def messages(self, session_id: int) -> list[ChatMessage]:
        with self.session() as s:
            query = select(ChatMessage).where(ChatMessage.session_id == session_id).order_by(col(ChatMessage.id))
            return list(s.exec(query).all())

    # -- jobs -------------------------------------------------------------------------------------

    def add_job(self, job: Job) -> Job:
        with self.session() as s:
            s.add(job)
        return job

    def get_job(self, job_id: int) -> Job:
        with self.session() as s:
            job = s.get(Job, job_id)
        if job is None:
            raise NotFound(
                _("No job with id {job_id}; `internlocal jobs list` shows the ones there are.").format(job_id=job_id)
            )
        return job

    def update_job(self, job_id: int, **fields: Any) -> Job:
        with self.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(_("No job with id {job_id}.").format(job_id=job_id))
            for key, value in fields.items():
                setattr(job, key, value)
            s.add(job)
            return job

    def list_jobs(self, status: tuple[str, ...] | None = None, limit: int = 200) -> list[Job]:
        with self.session() as s:
            query = select(Job).order_by(col(Job.id).desc()).limit(limit)
            if status:
                query = query.where(col(Job.status).in_(status))
            return list(s.exec(query).all())

    # -- evaluation -------------------------------------------------------------------------------

    def add_eval_run(self, run: EvalRun, items: list[EvalItem]) -> EvalRun:
        """A finished run and its items, in one transaction (a half-written run never shows)."""
        with self.session() as s:
            s.add(run)
            s.flush()
            for item in items:
                item.run_id = run.id
                s.add(item)
        return run

    def eval_runs(self, task: str | None = None, model: str | None = None, job_id: int | None = None) -> list[EvalRun]:
        with self.session() as s:
            query = select(EvalRun).order_by(col(EvalRun.id))
            if task:
                query = query.where(EvalRun.task == task)
            if model:
                query = query.where(EvalRun.model_name == model)
            if job_id is not None:
                query = query.where(EvalRun.job_id == job_id)
            return list(s.exec(query).all())

    def eval_items(self, run_id: int) -> list[EvalItem]:
        with self.session() as s:
            return list(s.exec(select(EvalItem).where(EvalItem.run_id == run_id).order_by(col(EvalItem.idx))).all())

    def cache_get(self, keys: list[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        with self.session() as s:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                for row in s.exec(select(EvalCache).where(col(EvalCache.key).in_(chunk))).all():
                    found[row.key] = json.loads(row.value_json)
        return found

    def cache_put(self, values: dict[str, Any]) -> None:
        if not values:
            return
        now = utcnow()
        rows = [{"key": key, "value_json": json.dumps(value), "created_at": now} for key, value in values.items()]
        with self.session() as s:  # one executemany: a task's token counts are thousands of rows
            s.connection().execute(
                sqlalchemy.text(
                    "INSERT OR REPLACE INTO eval_cache (key, value_json, created_at) "
                    "VALUES (:key, :value_json, :created_at)"
                ),
                rows,
            )

    # -- datasets ---------------------------------------------------------------------------------

    def add_dataset(self, dataset: Dataset) -> Dataset:
        try:
            with self.session() as s:
                s.add(dataset)
        except sqlalchemy.exc.IntegrityError:
            raise UserError(
                _("A dataset named {name!r} is already in the catalog; choose another name.").format(name=dataset.name)
            ) from None
        return dataset

    def find_dataset(self, name: str) -> Dataset | None:
        with self.session() as s:
            return s.exec(select(Dataset).where(Dataset.name == name)).first()

    def get_dataset(self, name: str) -> Dataset:
        found = self.find_dataset(name)
        if found is None:
            raise NotFound(
                _("No dataset {name!r} in the catalog; `internlocal data list` shows the ones there are.").format(
                    name=name
                )
            )
        return found

    def list_datasets(self) -> list[Dataset]:
        with self.session() as s:
            return list(s.exec(select(Dataset).order_by(col(Dataset.id))).all())

    def delete_dataset(self, name: str) -> Dataset:
        with self.session() as s:
            found = s.exec(select(Dataset).where(Dataset.name == name)).first()
            if found is None:
                raise NotFound(_("No dataset {name!r} in the catalog.").format(name=name))
            s.delete(found)
            return found

    # -- knowledge bases --------------------------------------------------------------------------

    def add_kb(self, kb: KnowledgeBase) -> KnowledgeBase:
        try:
            with self.session() as s:
                s.add(kb)
        except sqlalchemy.exc.IntegrityError:
            raise UserError(
                _("A knowledge base named {name!r} exists already; choose another name.").format(name=kb.name)
            ) from None
        return kb

    def find_kb(self, name: str) -> KnowledgeBase | None:
        with self.session() as s:
            return s.exec(select(KnowledgeBase).where(KnowledgeBase.name == name)).first()

    def get_kb(self, name: str) -> KnowledgeBase:
        found = self.find_kb(name)
        if found is None:
            raise NotFound(
                _("No knowledge base {name!r}; `internlocal kb list` shows the ones there are.").format(name=name)
            )
        return found

    def list_kbs(self) -> list[KnowledgeBase]:
        with self.session() as s:
            return list(s.exec(select(KnowledgeBase).order_by(col(KnowledgeBase.id))).all())

    def update_kb(self, name: str, **values: Any) -> KnowledgeBase:
        with self.session() as s:
            found = s.exec(select(KnowledgeBase).where(KnowledgeBase.name == name)).one()
            for key, value in values.items():
                setattr(found, key, value)
            found.updated_at = utcnow()
            s.add(found)
        return self.get_kb(name)

    def delete_kb(self, name: str) -> KnowledgeBase:
        with self.session() as s:
            found = s.exec(select(KnowledgeBase).where(KnowledgeBase.name == name)).first()
            if found is None:
                raise NotFound(_("No knowledge base {name!r}.").format(name=name))
            s.delete(found)
            return found

    def add_feedback(self, feedback: AnswerFeedback) -> AnswerFeedback:
        if feedback.verdict not in ("bad", "good"):
            raise UserError(_("A verdict is bad or good, not {verdict!r}.").format(verdict=feedback.verdict))
        self.get_kb(feedback.kb_name)
        with self.session() as s:
            s.add(feedback)
        return feedback

    def list_feedback(self, kb_name: str) -> list[AnswerFeedback]:
        with self.session() as s:
            query = select(AnswerFeedback).where(AnswerFeedback.kb_name == kb_name)
            return list(s.exec(query.order_by(col(AnswerFeedback.id))).all())

    # -- training runs ----------------------------------------------------------------------------

    def add_train_run(self, run: TrainRun) -> TrainRun:
        try:
            with self.session() as s:
                s.add(run)
        except sqlalchemy.exc.IntegrityError:
            raise UserError(
                _("A training run named {name!r} exists already; choose another name.").format(name=run.name)
            ) from None
        return run

    def get_train_run(self, ref: str | int) -> TrainRun:
        with self.session() as s:
            found = s.get(TrainRun, int(ref)) if str(ref).isdigit() else None
            found = found or s.exec(select(TrainRun).where(TrainRun.name == str(ref))).first()
            if found is None:
                raise NotFound(_("No training run {ref!r}; `internlocal train runs` lists them.").format(ref=ref))
            return found

    def list_train_runs(self) -> list[TrainRun]:
        with self.session() as s:
            return list(s.exec(select(TrainRun).order_by(col(TrainRun.id))).all())

    def update_train_run(self, run_id: int, **fields: Any) -> TrainRun:
        with self.session() as s:
            run = s.get(TrainRun, run_id)
            if run is None:
                raise NotFound(_("No training run with id {run_id}.").format(run_id=run_id))
            for key, value in fields.items():
                setattr(run, key, value)
            run.updated_at = utcnow()
            s.add(run)
            return run


def _on_connect(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    cursor.execute(f"PRAGMA busy_timeout = {int(db.BUSY_TIMEOUT_S * 1000)}")
    cursor.close()
