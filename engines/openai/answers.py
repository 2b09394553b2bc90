"""A local engine's results in OpenAI's shapes: choices (n of them), tool calls, logprobs, and the
deltas of a streamed answer.

A worker's result is one row's {"text", "finish_reason", "prompt_tokens", "cached_tokens"?,
"completion_tokens", "logprobs"?}, or {"choices": [row, …], "prompt_tokens", "cached_tokens"?, …} for
n > 1. `data` is the validated request (protocol.py): its `tool_mode` says how tool calls are read
from the text (tools.py).
"""

import json

from engines.openai import tools


def rows(result):
    return result.get("choices") or [result]


def chat_choice(index, row, data):
    text, finish = row["text"], row["finish_reason"]
    message, mode = {"role": "assistant", "content": text}, data.get("tool_mode")
    calls = []
    if mode in ("named", "required"):
        try:
            calls = tools.forced_calls(text, mode, data["tool_choice"])
        except (json.JSONDecodeError, KeyError, TypeError):
            calls = []  # cut short by max_tokens: the text as it is, finish_reason "length"
    elif mode == "auto":
        text, calls = tools.parse_calls(text, data["tools"])
        if not data.get("parallel_tool_calls", True):
            calls = calls[:1]  # parallel_tool_calls: false, one call at most
    if calls:
        message = {"role": "assistant", "content": text if mode == "auto" and text else None, "tool_calls": calls}
        finish = "tool_calls" if finish != "length" else finish
    logprobs = {"content": row["logprobs"], "refusal": None} if "logprobs" in row else None
    return {"index": index, "message": message, "logprobs": logprobs, "finish_reason": finish}


def completion_choice(index, row, data):
    text = (data["prompt"] + row["text"]) if data.get("echo") else row["text"]
    logprobs = None
    if "logprobs" in row:
        offsets, at = [], len(data["prompt"]) if data.get("echo") else 0
        for entry in row["logprobs"]:
            offsets.append(at)
            at += len(entry["token"])
        logprobs = {
            "tokens": [entry["token"] for entry in row["logprobs"]],
            "token_logprobs": [entry["logprob"] for entry in row["logprobs"]],
            "top_logprobs": [{alt["token"]: alt["logprob"] for alt in entry["top_logprobs"]}
                             for entry in row["logprobs"]],
            "text_offset": offsets,
        }
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": row["finish_reason"]}


def choices(result, data, chat):
    shape = chat_choice if chat else completion_choice
    return [shape(index, row, data) for index, row in enumerate(rows(result))]


class Deltas:
    """A streamed chat answer's deltas, choice by choice: content as it comes; a named forced call's
    arguments as they come (after one delta naming the call); a "required" or "auto" answer whole at
    its end (whether it is a call is only known then)."""

    def __init__(self, data, chat):
        self.data, self.chat = data, chat
        self.mode = data.get("tool_mode") if chat else None
        self.held = {}  # choice index → text held back until the end
        self.announced = set()

    def token(self, index, text):
        """The deltas for a token event of choice `index`: [(index, delta)]."""
        if not self.chat:
            return [(index, {"text": text})]
        if self.mode == "named":
            deltas = []
            if index not in self.announced:
                self.announced.add(index)
                call = tools.call(self.data["tool_choice"]["function"]["name"], "")
                deltas.append((index, {"tool_calls": [{"index": 0, **call}]}))
            deltas.append((index, {"tool_calls": [{"index": 0, "function": {"arguments": text}}]}))
            return deltas
        if self.mode in ("required", "auto"):
            self.held[index] = self.held.get(index, "") + text
            return []
        return [(index, {"content": text})]

    def finish(self, index, row):
        """(deltas, finish_reason) for the end of choice `index`, whose result is `row`."""
        if self.mode == "named":
            return [], "tool_calls" if row["finish_reason"] != "length" else "length"
        if self.chat and self.mode in ("required", "auto"):
            choice = chat_choice(index, {**row, "text": self.held.pop(index, "")}, self.data)
            message, deltas = choice["message"], []
            if message.get("content"):
                deltas.append((index, {"content": message["content"]}))
            for position, call in enumerate(message.get("tool_calls") or []):
                deltas.append((index, {"tool_calls": [{"index": position, **call}]}))
            return deltas, choice["finish_reason"]
        return [], row["finish_reason"]
