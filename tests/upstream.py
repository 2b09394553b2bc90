"""A real OpenAI-compatible HTTP server on loopback, standing in for vLLM, TGI or another Blaze in the
router tests and in bench/router.py. Its behaviour is the first path segment of the base URL:

    server = OpenAIUpstream()
    server.base_url("ok")    → http://127.0.0.1:PORT/ok/v1    answers chat, completions (streamed too),
                                                              embeddings and /models
    server.base_url("fail")  → 500 on every call
    server.base_url("bad")   → 400 on every call (the client's fault: never to be retried)
    server.base_url("slow")  → answers after `slow_seconds` (longer than the timeouts the tests set)
    server.base_url("reset")      → the connection reset, nothing answered
    server.base_url("garbage")    → 200 with a body that is not JSON
    server.base_url("truncated")  → a body cut short (a stream: two chunks, then the connection drops)
    server.base_url("stream_error") → a streamed chat fails after its 200: two chunks, an SSE error
                                      event, then [DONE] (as Blaze ends a stream that fails midway)
    server.base_url("tools")      → a streamed chat answers with a call of get_weather, in OpenAI's deltas

`hits[behaviour]` counts the POSTs each behaviour received, `arrivals` lists them as (behaviour,
time.monotonic() on arrival) and `peak[behaviour]` is the most it was answering at once. A refused
connection needs no server: use `refused_base_url()`.
"""

import asyncio
import json
import socket
import struct
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WORDS = ["Hello", " from", " upstream", "."]
GARBAGE = b"<html>502 Bad gateway</html>"
# What a hostile or broken model may answer (behaviour "markup"): it must reach a page as text only.
MARKUP = ["<script>window.__pwned = 1</script>", ' <img src=x onerror="window.__pwned = 2">',
          " [click](javascript:window.__pwned=3)"]


def run(coroutine):
    """asyncio.run(coroutine), closing the loop's pooled upstream sessions before the loop ends."""
    from engines.serving.resilience import http

    async def and_close():
        try:
            return await coroutine
        finally:
            await http.aclose_all()

    return asyncio.run(and_close())


def refused_base_url():
    """A URL on a port where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def send_json(handler, status, payload):
    """Answer a BaseHTTPRequestHandler's request with JSON (keep-alive safe: the length is sent)."""
    data = json.dumps(payload).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    try:
        handler.wfile.write(data)
    except (BrokenPipeError, ConnectionResetError):
        pass  # the client gave up waiting (a timeout test)


def serve(handler_class, port=0):
    """A ThreadingHTTPServer on a loopback port (a free one unless given), serving in a daemon thread;
    returns (server, url)."""
    server = ThreadingHTTPServer(("127.0.0.1", port), handler_class)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def chat_answer(body, text):
    return {
        "id": "chatcmpl-upstream", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": len(WORDS), "total_tokens": 3 + len(WORDS),
                  "prompt_tokens_details": {"cached_tokens": 2}},  # as vLLM reports its prefix cache's
    }


class OpenAIUpstream:
    def __init__(self, slow_seconds=3.0):
        self.hits = Counter()
        self.bodies = []
        self.traceparents = []  # the W3C `traceparent` header of each POST that carried one
        self.arrivals, self.peak, busy, counting = [], Counter(), Counter(), threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                behaviour, _, rest = self.path.strip("/").partition("/")
                if behaviour == "ok" and rest.endswith("models"):
                    return self._json(200, {"object": "list", "data": [{"id": "up", "object": "model"}]})
                return self._refuse(behaviour) or self._json(404, {"error": {"message": "not found"}})

            def do_POST(self):
                behaviour = self.path.strip("/").partition("/")[0]
                with counting:
                    upstream.arrivals.append((behaviour, time.monotonic()))
                    busy[behaviour] += 1
                    upstream.peak[behaviour] = max(upstream.peak[behaviour], busy[behaviour])
                try:
                    self._post()
                finally:
                    with counting:
                        busy[behaviour] -= 1

            def _post(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                behaviour, _, rest = self.path.strip("/").partition("/")
                upstream.hits[behaviour] += 1
                if self.headers.get("traceparent"):
                    upstream.traceparents.append(self.headers["traceparent"])
                body = json.loads(raw or b"{}")
                upstream.bodies.append(body)
                if self._refuse(behaviour):
                    return
                if rest.endswith("chat/completions"):
                    words = MARKUP if behaviour == "markup" else WORDS
                    if body.get("stream") and behaviour == "tools":
                        return self._stream_call(body)
                    if body.get("stream"):
                        return self._stream(body, words, cut_after=2 if behaviour == "truncated" else None,
                                            fail_after=2 if behaviour == "stream_error" else None)
                    if behaviour == "truncated":
                        whole = json.dumps(chat_answer(body, "".join(words))).encode()
                        self.send_response(200)
                        self.send_header("Content-Type", "application/json")
                        self.send_header("Content-Length", str(len(whole)))
                        self.end_headers()
                        self.wfile.write(whole[:len(whole) // 2])
                        return self._reset()
                    return self._json(200, chat_answer(body, "".join(words)))
                if rest.endswith("completions"):
                    return self._json(200, {"id": "cmpl-upstream", "object": "text_completion",
                                            "model": body.get("model"),
                                            "choices": [{"index": 0, "text": "".join(WORDS), "finish_reason": "stop"}],
                                            "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5}})
                if rest.endswith("embeddings"):
                    inputs = body.get("input") if isinstance(body.get("input"), list) else [body.get("input")]
                    return self._json(200, {"object": "list", "model": body.get("model"),
                                            "usage": {"prompt_tokens": 1, "total_tokens": 1},
                                            "data": [{"object": "embedding", "index": i, "embedding": [0.5, 0.5]}
                                                     for i, _ in enumerate(inputs)]})
                return self._json(404, {"error": {"message": f"no route {self.path}"}})

            def _refuse(self, behaviour):
                if behaviour == "fail":
                    self._json(500, {"error": {"message": "upstream exploded", "type": "server_error"}})
                    return True
                if behaviour == "bad":
                    self._json(400, {"error": {"message": "max_tokens is too large", "type": "invalid_request_error",
                                               "param": "max_tokens", "code": None}})
                    return True
                if behaviour == "slow":
                    time.sleep(upstream.slow_seconds)
                    self._json(200, chat_answer({}, "late"))
                    return True
                if behaviour == "reset":
                    self._reset()
                    return True
                if behaviour == "garbage":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(GARBAGE)))
                    self.end_headers()
                    self.wfile.write(GARBAGE)
                    return True
                return False

            def _reset(self):
                """Close with a TCP reset (SO_LINGER 0), as a crashed proxy does."""
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()

            def _stream(self, body, words=WORDS, cut_after=None, fail_after=None):
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for index, word in enumerate(words):
                    if index == cut_after:
                        time.sleep(0.2)  # the chunks sent reach the client before the reset discards the rest
                        return self._reset()
                    if index == fail_after:
                        error = {"message": "the worker died", "type": "server_error", "param": None,
                                 "code": "target_failed"}
                        self._chunk(f"data: {json.dumps({'error': error})}\n\n".encode())
                        break
                    chunk = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "model": body.get("model"),
                             "choices": [{"index": 0, "delta": {"content": word},
                                          "finish_reason": "stop" if index == len(words) - 1 else None}]}
                    self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

            def _stream_call(self, body):
                """As OpenAI streams a call: its id and name first, then the arguments in pieces."""
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                named = {"index": 0, "id": "call_upstream", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}
                deltas = [{"role": "assistant", "content": None, "tool_calls": [named]},
                          *({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                            for piece in ('{"city"', ': "Par', 'is"}')), {}]
                for index, delta in enumerate(deltas):
                    chunk = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk", "model": body.get("model"),
                             "choices": [{"index": 0, "delta": delta,
                                          "finish_reason": "tool_calls" if index == len(deltas) - 1 else None}]}
                    self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                self._chunk(b"data: [DONE]\n\n")
                self._chunk(b"")

            def _chunk(self, data):
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _json(self, status, payload):
                send_json(self, status, payload)

            def log_message(self, *args):
                pass

        self.slow_seconds = slow_seconds
        self.server, self.url = serve(Handler)

    def base_url(self, behaviour):
        return f"{self.url}/{behaviour}/v1"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()
