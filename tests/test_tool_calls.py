"""Tool calls through the engine: a template's native <tool_call> format, and the grammar fallback."""

from __future__ import annotations

import json

import pytest

from internlocal.engines.base import GenerationParams
from internlocal.engines.tool_calls import native_history, parse_fallback, parse_native, plan_tools
from internlocal.errors import UserError

# A Hermes-style template (the shape Qwen2.5's uses), applied to the embedded model to exercise the
# native path; the embedded model's own template has no tool syntax.
HERMES_TEMPLATE = """{%- if tools %}<|im_start|>system
{{ messages[0]['content'] if messages[0]['role'] == 'system' else 'You are a helpful assistant.' }}

# Tools

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' and tools %}
{%- elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{%- for tc in message.tool_calls %}
<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["C", "F"]}},
            "required": ["city", "unit"],
        },
    },
}
ASK = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in Paris?"},
]


@pytest.fixture(scope="module")
def hermes_engine(gguf_path):
    from internlocal.engines.llamacpp import LlamaCppEngine

    with LlamaCppEngine(gguf_path, n_ctx=1024, chat_template=HERMES_TEMPLATE) as engine:
        yield engine


def test_native_format_with_a_required_call(hermes_engine):
    generation = hermes_engine.chat(
        ASK, GenerationParams.greedy(max_tokens=80), tools=[WEATHER], tool_choice="required"
    )
    result = generation.collect()
    assert result.finish_reason == "tool_calls"
    [call] = result.tool_calls
    arguments = json.loads(call["function"]["arguments"])
    assert (
        call["function"]["name"] == "get_weather" and isinstance(arguments["city"], str) and arguments["unit"] in "CF"
    )


def test_native_history_renders_calls_and_results_through_the_template(hermes_engine):
    history = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
    ]
    prompt = hermes_engine.render_chat(native_history(history), tools=[WEATHER])
    assert '"name": "get_weather"' in prompt and "<tool_response>\nSunny, 21 C\n</tool_response>" in prompt
    assert '{"name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}' in prompt  # arguments as an object
    answer = hermes_engine.chat(history, GenerationParams.greedy(max_tokens=40), tools=[WEATHER]).collect()
    assert answer.finish_reason in ("stop", "length", "tool_calls")


def test_fallback_on_a_template_without_tools(engine):
    result = engine.chat(ASK, GenerationParams.greedy(max_tokens=80), tools=[WEATHER], tool_choice="required").collect()
    [call] = result.tool_calls
    assert call["function"]["name"] == "get_weather"
    assert set(json.loads(call["function"]["arguments"])) == {"city", "unit"}
    named = engine.chat(
        ASK,
        GenerationParams.greedy(max_tokens=80),
        tools=[WEATHER],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    ).collect()
    assert named.tool_calls[0]["function"]["name"] == "get_weather"


def test_parsers_and_bad_choices():
    content, calls = parse_native('Let me check.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>')
    assert content == "Let me check." and calls[0]["function"] == {"name": "f", "arguments": '{"x": 1}'}
    assert parse_native("plain answer") == ("plain answer", None)
    assert parse_fallback('{"answer": "Paris"}') == ("Paris", None)
    assert parse_fallback('{"tool": "f", "arguments": {}}')[1][0]["function"]["name"] == "f"
    assert parse_fallback('{"tool": "f", "argu') == ('{"tool": "f", "argu', None)
    with pytest.raises(UserError, match="not among the tools"):
        plan_tools(ASK, [WEATHER], {"type": "function", "function": {"name": "nope"}}, None)
    with pytest.raises(UserError, match="needs a function"):
        plan_tools(ASK, [{"type": "function"}], "auto", None)
