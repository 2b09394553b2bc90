"""OpenAI depth on a local engine, with the official `openai` client: structured outputs, tool calls
(forced, streamed, a second turn), logprobs, n choices, echo, and no parameter silently ignored."""

import json

import jsonschema
import openai
import pytest

from engines.models import Engine

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Bounded strings and arrays: a random-weight model would otherwise ramble inside a string until
# max_tokens (then finish_reason is "length", as OpenAI's would be).
SCHEMAS = {
    "nested": {"type": "object", "properties": {
        "name": {"type": "string", "maxLength": 8},
        "address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 8},
                                                     "zip": {"type": "integer"}},
                    "required": ["city", "zip"], "additionalProperties": False}},
        "required": ["name", "address"], "additionalProperties": False},
    "enum": {"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]},
                                              "sure": {"type": "boolean"}},
             "required": ["colour", "sure"], "additionalProperties": False},
    "array": {"type": "object", "properties": {"items": {"type": "array", "maxItems": 3, "items": {
        "type": "object", "properties": {"sku": {"type": "string", "maxLength": 6}, "qty": {"type": "integer"}},
        "required": ["sku", "qty"], "additionalProperties": False}}},
        "required": ["items"], "additionalProperties": False},
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                                    "unit": {"enum": ["celsius", "fahrenheit"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "parameters": {"type": "object", "properties": {"zone": {"enum": ["UTC", "CET"]}},
                                       "required": ["zone"], "additionalProperties": False}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def long_tiny_path(tmp_path_factory):
    """The tiny random GPT-2 with 2048 positions: tool schemas shown in a prompt take hundreds of its tokens."""
    from engines.demo.build import build_tiny_llm

    return str(build_tiny_llm(tmp_path_factory.mktemp("tiny-2048"), positions=2048))


@pytest.fixture
def tiny(db, long_tiny_path):
    return Engine.objects.create(name="tiny", kind="llm", model=long_tiny_path,
                                 config={"max_new_tokens": 200, "max_batch_size": 8, "batch_wait_ms": 20})


def chat(client, **kwargs):
    return client.chat.completions.create(model="tiny", messages=ASK, **{"max_tokens": 150, **kwargs})


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_json_schema_answer_validates_across_seeds(engine_worker, tiny, openai_client, name):
    schema, validated = SCHEMAS[name], 0
    for seed in (0, 1, 2):
        response = chat(openai_client, temperature=1.0, seed=seed, response_format={
            "type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}})
        choice = response.choices[0]
        if choice.finish_reason == "length":
            continue  # cut short, as OpenAI's would be: no promise of complete JSON then
        jsonschema.validate(json.loads(choice.message.content), schema)
        validated += 1
    assert validated >= 2


def test_json_object_answers_parse_as_an_object(engine_worker, tiny, openai_client):
    response = chat(openai_client, temperature=0, response_format={"type": "json_object"}, max_tokens=200)
    if response.choices[0].finish_reason != "length":
        assert isinstance(json.loads(response.choices[0].message.content), dict)
    assert response.choices[0].message.content.startswith("{")


def test_a_forced_call_has_parsable_arguments_and_a_second_turn_completes(engine_worker, tiny, openai_client):
    response = chat(openai_client, temperature=0, tools=[WEATHER, TIME],
                    tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = response.choices[0]
    [call] = choice.message.tool_calls
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])

    follow_up = openai_client.chat.completions.create(model="tiny", max_tokens=8, temperature=0, tools=[WEATHER],
                                                      messages=[
        *ASK, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": '{"temperature": 21}'},
    ])
    assert follow_up.choices[0].finish_reason in ("stop", "length") and follow_up.usage.prompt_tokens > 0


def test_required_picks_one_of_the_tools_with_valid_arguments(engine_worker, tiny, openai_client):
    response = chat(openai_client, temperature=0, tools=[WEATHER, TIME], tool_choice="required")
    [call] = response.choices[0].message.tool_calls
    tool = {"get_weather": WEATHER, "get_time": TIME}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_streamed_tool_call_deltas_reassemble_into_the_same_call(engine_worker, tiny, openai_client):
    forced = {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
              "temperature": 0, "seed": 3}
    whole = chat(openai_client, **forced).choices[0].message.tool_calls[0]
    name, arguments, finish, pieces = None, "", None, 0
    for chunk in chat(openai_client, stream=True, **forced):
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                name = delta.function.name or name
                arguments += delta.function.arguments or ""
                pieces += 1
            finish = choice.finish_reason or finish
    assert (name, arguments) == (whole.function.name, whole.function.arguments)
    assert finish == "tool_calls" and pieces > 2  # streamed as it was generated, not in one piece


def test_logprobs_are_there_and_sum_sensibly(engine_worker, tiny, openai_client):
    response = chat(openai_client, temperature=0, max_tokens=6, logprobs=True, top_logprobs=3)
    content = response.choices[0].logprobs.content
    assert len(content) == response.usage.completion_tokens
    for entry in content:
        alternatives = [alt.logprob for alt in entry.top_logprobs]
        assert entry.logprob <= 0 and len(alternatives) == 3
        assert alternatives == sorted(alternatives, reverse=True)
        assert entry.logprob == pytest.approx(alternatives[0])  # greedy: the chosen token is the likeliest
    # A token may hold part of a UTF-8 character: its bytes, joined, are the answer's (a random model's
    # answer may hold bytes that are no UTF-8 at all: replaced there as here).
    joined = bytes(b for entry in content for b in entry.bytes)
    assert joined.decode(errors="replace") == response.choices[0].message.content

    completion = openai_client.completions.create(model="tiny", prompt="the cat", max_tokens=4, temperature=0,
                                                  logprobs=2)
    logprobs = completion.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == completion.usage.completion_tokens
    assert all(lp <= 0 for lp in logprobs.token_logprobs) and all(len(top) <= 2 for top in logprobs.top_logprobs)


def test_n_choices_are_rows_of_one_request_with_usage_counted(engine_worker, tiny, openai_client):
    response = chat(openai_client, n=3, temperature=1.0, seed=11, max_tokens=12)
    assert [choice.index for choice in response.choices] == [0, 1, 2]
    texts = {choice.message.content for choice in response.choices}
    assert len(texts) > 1  # each row sampled with its own seed
    alone = chat(openai_client, temperature=1.0, seed=11, max_tokens=12)
    assert alone.choices[0].message.content == response.choices[0].message.content
    assert response.usage.completion_tokens <= 36 and response.usage.prompt_tokens == alone.usage.prompt_tokens

    streamed = {}
    for chunk in chat(openai_client, n=2, temperature=1.0, seed=11, max_tokens=12, stream=True):
        for choice in chunk.choices:
            streamed[choice.index] = streamed.get(choice.index, "") + (choice.delta.content or "")
    assert streamed == {0: response.choices[0].message.content, 1: response.choices[1].message.content}


def test_echo_puts_the_prompt_before_the_completion(engine_worker, tiny, openai_client):
    plain = openai_client.completions.create(model="tiny", prompt="the cat", max_tokens=4, temperature=0)
    echoed = openai_client.completions.create(model="tiny", prompt="the cat", max_tokens=4, temperature=0, echo=True)
    assert echoed.choices[0].text == "the cat" + plain.choices[0].text


@pytest.mark.parametrize("field, value", [
    ("audio", {"voice": "alloy", "format": "wav"}), ("functions", [{"name": "f"}]), ("service_tier", "flex"),
    ("metadata", {"a": "b"}), ("prediction", {"type": "content", "content": "x"}), ("reasoning_effort", "low"),
    ("totally_unknown", 1), ("store", True), ("stream_options", {"include_obfuscation": True}),
])
def test_each_field_once_ignored_is_now_a_400_naming_it(engine_worker, tiny, openai_client, field, value):
    with pytest.raises(openai.BadRequestError) as refused:
        chat(openai_client, extra_body={field: value})
    assert refused.value.body["param"] == field


def test_a_remote_engine_gets_the_fields_it_was_sent(engine_worker, upstream, openai_client):
    Engine.objects.create(name="far", kind="llm", backend="remote", base_url=upstream.base_url("ok"),
                          model="upstream-model")
    openai_client.chat.completions.create(model="far", messages=ASK, extra_body={"top_k": 5, "repetition_penalty": 1.1})
    assert upstream.bodies[-1]["top_k"] == 5 and upstream.bodies[-1]["repetition_penalty"] == 1.1


def test_auto_tool_calls_are_read_from_the_text_and_parallel_false_keeps_one():
    from engines.openai.answers import chat_choice

    text = ('<tool_call>{"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}</tool_call>'
            '<tool_call>{"name": "get_time", "arguments": {"zone": "CET"}}</tool_call>'
            '<tool_call>{"name": "launch_rockets", "arguments": {}}</tool_call>')
    data = {"tool_mode": "auto", "tools": [WEATHER, TIME], "tool_choice": "auto", "parallel_tool_calls": True}
    row = {"text": text, "finish_reason": "stop"}
    choice = chat_choice(0, row, data)
    assert [call["function"]["name"] for call in choice["message"]["tool_calls"]] == ["get_weather", "get_time"]
    assert json.loads(choice["message"]["tool_calls"][0]["function"]["arguments"])["city"] == "Paris"
    assert choice["finish_reason"] == "tool_calls"
    assert "launch_rockets" in choice["message"]["content"]  # not one of the tools: left as text
    single = chat_choice(0, row, {**data, "parallel_tool_calls": False})
    assert len(single["message"]["tool_calls"]) == 1
