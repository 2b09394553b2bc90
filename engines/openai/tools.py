"""Tool calling on local LLMs: what the worker is asked to generate, and how its text becomes `tool_calls`.

- `tool_choice` "none": the tools are not shown to the model; it answers in text.
- "auto": the tools are shown (through the model's chat template when it renders `tools`, else in
  the worker's default system message, `engines/worker/runtimes/chat.py`) and the model may answer
  with `<tool_call>{"name": …, "arguments": {…}}</tool_call>` blocks, which `parse_calls` turns into
  `tool_calls`.
- "required", or a named function: the model is constrained by a grammar to a call: for a named
  function, its arguments (the function's `parameters` schema); for "required", `{"name", "arguments"}`
  of one of the tools. The answer is then always a call with arguments that parse.
"""

import json
import re
import uuid

ANY_OBJECT = {"type": "object"}
_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


def grammar_for(tools, tool_choice, response_format):
    """(the grammar the worker enforces or None, the forced mode: "named" / "required" / None)."""
    if tools and isinstance(tool_choice, dict):
        function = next(t["function"] for t in tools if t["function"]["name"] == tool_choice["function"]["name"])
        return {"json_schema": function.get("parameters") or ANY_OBJECT}, "named"
    if tools and tool_choice == "required":
        calls = [{"type": "object", "properties": {"name": {"const": t["function"]["name"]},
                                                   "arguments": t["function"].get("parameters") or ANY_OBJECT},
                  "required": ["name", "arguments"], "additionalProperties": False} for t in tools]
        return {"json_schema": calls[0] if len(calls) == 1 else {"anyOf": calls}}, "required"
    if response_format and response_format["type"] == "json_object":
        return {"json_object": True}, None
    if response_format and response_format["type"] == "json_schema":
        spec = response_format["json_schema"]
        return {"json_schema": spec.get("schema") or ANY_OBJECT, "strict": bool(spec.get("strict"))}, None
    return None, None


def call(name, arguments):
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def forced_calls(text, mode, tool_choice):
    """The calls in a forced answer (`mode` "named": the text is the arguments; "required": a call object)."""
    if mode == "named":
        return [call(tool_choice["function"]["name"], text)]
    parsed = json.loads(text)
    return [call(parsed["name"], json.dumps(parsed["arguments"]))]


def parse_calls(text, tools):
    """(the text left, the calls) of an "auto" answer: each well-formed `<tool_call>` block naming one of
    the tools becomes a call; anything else stays text."""
    names = {t["function"]["name"] for t in tools}
    calls = []

    def take(match):
        try:
            parsed = json.loads(match.group(1))
            if parsed.get("name") in names and isinstance(parsed.get("arguments", {}), dict):
                calls.append(call(parsed["name"], json.dumps(parsed.get("arguments", {}))))
                return ""
        except (json.JSONDecodeError, AttributeError):
            pass
        return match.group(0)

    left = _CALL.sub(take, text).strip()
    return left, calls
