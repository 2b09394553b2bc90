"""A chat request's messages as a model's chat template takes them, tools and tool turns included.

A template that renders `tools` (Qwen, Llama 3, Hermes, …) gets them as transformers passes them, and
the assistant's `tool_calls` (arguments as objects) and the tool answers (`tool_call_id`) as they are.
A template that does not (SmolLM2's, the tiny test model's) gets Blaze's documented default: the tools
in a system message that asks for `<tool_call>{"name": …, "arguments": {…}}</tool_call>` blocks (the
Hermes convention most small open chat models were tuned on), the assistant's earlier calls written
back as such blocks, and a tool's answer as a `tool` turn.
"""

import json
from typing import Any

from engines.contract import Message

DEFAULT_TOOLS_PROMPT = (
    "You may call these functions. To call one, answer only with <tool_call>{{\"name\": <function name>, "
    "\"arguments\": <arguments as a JSON object>}}</tool_call>, one block per call.\n"
    "Functions (JSON schema):\n{tools}"
)


def renders_tools(tokenizer: Any) -> bool:
    return "tools" in (tokenizer.chat_template or "")


def template_messages(messages: list[Message], tools: list[dict[str, Any]] | None,
                      native: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """(messages, tools to pass the template): `native` when the template renders tools itself."""
    rendered = []
    for message in messages:
        entry: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
        calls = message.get("tool_calls") or []
        if native:
            if calls:
                entry["tool_calls"] = [{**call, "function": {**call["function"],
                                                              "arguments": _loaded(call["function"]["arguments"])}}
                                       for call in calls]
            if message.get("tool_call_id"):
                entry["tool_call_id"] = message["tool_call_id"]
        elif calls:
            entry["content"] += "".join(
                "<tool_call>" + json.dumps({"name": call["function"]["name"],
                                            "arguments": _loaded(call["function"]["arguments"])}) + "</tool_call>"
                for call in calls)
        rendered.append(entry)
    if not tools or native:
        return rendered, tools or None
    shown = DEFAULT_TOOLS_PROMPT.format(tools="\n".join(json.dumps(tool) for tool in tools))
    if rendered and rendered[0]["role"] == "system":
        rendered[0] = {**rendered[0], "content": f"{rendered[0]['content']}\n\n{shown}"}
    else:
        rendered.insert(0, {"role": "system", "content": shown})
    return rendered, None


def plain_prompt(messages: list[Message], tools: list[dict[str, Any]] | None) -> str:
    """A chat as plain text, for a model without a chat template: `role: content` lines, then `assistant:`."""
    rendered, _ = template_messages(messages, tools, native=False)
    return "\n".join(f"{message['role']}: {message['content']}" for message in rendered) + "\nassistant:"


def _loaded(arguments: str) -> Any:
    try:
        return json.loads(arguments)
    except (TypeError, json.JSONDecodeError):
        return arguments
