"""Chats: replies saved with their statistics, cancel keeps the partial reply, titles, faults."""

from __future__ import annotations

import pytest

from internlocal.engines.base import GenerationParams
from internlocal.errors import NotFound, UserError
from tests.conftest import QUESTION


@pytest.fixture
def chats(services, engine):
    """The chat service, sharing the session's loaded engine instead of loading the model again."""
    cache = services.chats.engines
    model = services.chats.default_model()
    cache._engine, cache._name = engine, model.name
    yield services.chats
    cache._engine, cache._name = None, None  # the session engine outlives this test


def test_reply_is_streamed_and_saved_with_stats(chats):
    chat = chats.new_chat(params=GenerationParams.greedy(max_tokens=32))
    assert chat.system_prompt == "You are a helpful assistant."
    reply = chats.send(chat.id, QUESTION)
    pieces = list(reply)
    assert len(pieces) > 1 and "Paris" in "".join(pieces)
    user, assistant = chats.catalog.messages(chat.id)
    assert (user.role, user.content) == ("user", QUESTION)
    assert assistant.role == "assistant" and "Paris" in assistant.content
    assert assistant.finish_reason == "stop" and assistant.completion_tokens > 0 and assistant.prompt_tokens > 10
    assert assistant.tokens_per_s > 0 and assistant.ttft_ms > 0
    assert assistant.model_name == "smollm2-135m-instruct-q4_1"
    assert chats.catalog.get_chat(chat.id).title == QUESTION[:48] + "…"


def test_follow_up_sees_the_history(chats):
    chat = chats.new_chat(params=GenerationParams.greedy(max_tokens=32))
    list(chats.send(chat.id, QUESTION))
    history = chats.history(chats.catalog.get_chat(chat.id))
    assert [m["role"] for m in history] == ["system", "user", "assistant"]
    reply = chats.send(chat.id, "Repeat your last answer.")
    list(reply)
    assert reply.result.prompt_tokens > len(chats.engines.get(reply.model).tokenize(QUESTION)) + 10
    assert len(chats.catalog.messages(chat.id)) == 4


def test_cancel_keeps_the_partial_reply(chats):
    chat = chats.new_chat(params=GenerationParams(max_tokens=300, seed=5))
    reply = chats.send(chat.id, "Write a long story about a dragon.")
    pieces = []
    for piece in reply:
        pieces.append(piece)
        if len(pieces) == 4:
            reply.cancel()
    assistant = chats.catalog.messages(chat.id)[-1]
    assert assistant.finish_reason == "cancelled"
    assert assistant.content == "".join(pieces) and assistant.content


def test_settings_per_chat(chats):
    chat = chats.new_chat(system_prompt="Always answer in French.")
    chats.set_params(chat.id, GenerationParams(temperature=0.2, max_tokens=64))
    stored = chats.catalog.get_chat(chat.id)
    assert stored.system_prompt == "Always answer in French."
    from internlocal.chat.service import chat_params

    assert chat_params(stored) == GenerationParams(temperature=0.2, max_tokens=64)


def test_bad_input_is_refused_and_nothing_is_lost(chats):
    chat = chats.new_chat(params=GenerationParams.greedy(max_tokens=16))
    list(chats.send(chat.id, QUESTION))
    with pytest.raises(UserError, match="empty"):
        chats.send(chat.id, "   ")
    with pytest.raises(UserError, match="Invalid temperature"):
        GenerationParams.from_user(temperature="hot")
    with pytest.raises(NotFound):
        chats.send(9999, "hi")
    chats.catalog.update_chat(chat.id, model_name="deleted-model")
    with pytest.raises(NotFound, match="no longer in the catalog"):
        chats.send(chat.id, "hi")
    assert len(chats.catalog.messages(chat.id)) == 2
