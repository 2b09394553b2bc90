"""A GGUF engine on the llama.cpp runtime, registered over the native API and answered through the
official `openai` client: chat, completions, streams, JSON schema and tool calls, on a real worker."""

import json

import jsonschema
import pytest

from engines.models import Engine

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CITY = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                         "country": {"type": "string", "maxLength": 20}},
        "required": ["city", "country"], "additionalProperties": False}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}},
                   "required": ["city"], "additionalProperties": False}}}


@pytest.fixture
def operator(operator_user, client_for):
    return client_for(operator_user)


@pytest.fixture
def smol(db, smollm2_gguf_path):
    return Engine.objects.create(name="smol", kind="llm", model=smollm2_gguf_path,
                                 config={"max_new_tokens": 64, "max_batch_size": 8, "batch_wait_ms": 2,
                                         "context_length": 1024})


def test_a_gguf_path_registers_as_llama_cpp_and_wrong_settings_are_named(operator, smollm2_gguf_path, tmp_path,
                                                                         engine_worker):
    created = operator.post("/api/engines/", {"name": "g", "kind": "llm", "model": smollm2_gguf_path}, format="json")
    assert created.status_code == 201 and created.json()["config"]["runtime"] == "llama.cpp"
    stored = Engine.objects.get(name="g").config
    assert stored["runtime"] == "llama.cpp" and "precision" not in stored and stored["prefix_cache_mb"] == 256

    fp16 = operator.post("/api/engines/", {"name": "h", "kind": "llm", "model": smollm2_gguf_path,
                                           "config": {"precision": "fp16"}}, format="json")
    assert fp16.status_code == 400 and "Leave precision out" in fp16.json()["fields"]["config.precision"][0]
    missing = operator.post("/api/engines/", {"name": "m", "kind": "llm", "model": str(tmp_path / "x.gguf")},
                            format="json")
    assert missing.status_code == 400  # the worker, asked, has no such file
    assert "the path does not exist" in missing.json()["fields"]["model"][0]
    not_gguf = operator.post("/api/engines/", {"name": "n", "kind": "llm", "model": str(tmp_path),
                                               "config": {"runtime": "llama.cpp"}}, format="json")
    assert not_gguf.status_code == 400 and "No GGUF file" in not_gguf.json()["fields"]["model"][0]
    hf_with_context = operator.post("/api/engines/", {"name": "t", "kind": "llm", "model": "some-hub-id",
                                                      "config": {"context_length": 512}}, format="json")
    assert hf_with_context.status_code == 400 and "config.context_length" in hf_with_context.json()["fields"]


def test_chat_completion_and_stream_agree(engine_worker, smol, openai_client):
    ask = [{"role": "user", "content": "What is the capital of France?"}]
    whole = openai_client.chat.completions.create(model="smol", messages=ask, max_tokens=24, temperature=0)
    text = whole.choices[0].message.content
    assert text and whole.usage.completion_tokens > 2 and whole.usage.prompt_tokens > 10
    pieces = [chunk.choices[0].delta.content or "" for chunk in openai_client.chat.completions.create(
        model="smol", messages=ask, max_tokens=24, temperature=0, stream=True) if chunk.choices]
    assert "".join(pieces) == text and len([piece for piece in pieces if piece]) > 2

    completion = openai_client.completions.create(model="smol", prompt="The capital of France is", max_tokens=8,
                                                  temperature=0)
    assert completion.choices[0].text.strip() and completion.usage.completion_tokens <= 8


def test_json_schema_and_a_forced_tool_call(engine_worker, smol, openai_client):
    answer = openai_client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "Paris, as JSON."}], max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": CITY, "strict": True}})
    jsonschema.validate(json.loads(answer.choices[0].message.content), CITY)

    called = openai_client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "What is the weather in Paris?"}], max_tokens=60,
        temperature=0, tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}})
    [call] = called.choices[0].message.tool_calls
    assert called.choices[0].finish_reason == "tool_calls" and call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
