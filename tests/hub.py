"""A Hugging Face hub on loopback, answering the two parts of its HTTP API that a model download uses,
for repositories a test makes from folders on disk:

    hub = LoopbackHub(token="hf_right")
    hub.add("acme/tiny", folder)                # the files under `folder`
    hub.add("acme/locked", folder, gated=True)  # its files need `token`
    hub.endpoint                                # http://127.0.0.1:PORT, a worker's HF_ENDPOINT

GET /api/models/<repo>/revision/<rev>?blobs=true → {"id", "sha", "gated", "siblings": [{"rfilename", "size",
"lfs"}]}, `lfs` ({"size", "sha256"}) for .safetensors files, as the hub lists files it keeps in LFS.
GET /<repo>/resolve/<rev>/<file> → the file, from `Range: bytes=N-` on (206) when asked so, at `pace`
bytes a second when set (a download is then observably in progress and can be cut mid-file).
As the real hub answers: an unknown repository is 401 (X-Error-Code RepoNotFound) without a token and
404 with one; a gated repository's file list is open to anyone, its files 401 (GatedRepo) without a
token and 403 with another than `token`; an unknown revision is 404 RevisionNotFound.

`requests` lists (path, Range header or None) of each file request, `served[file]` the bytes sent of it.
"""

import hashlib
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.upstream import send_json, serve


class LoopbackHub:
    def __init__(self, token="hf_right", pace=None):
        self.token, self.pace = token, pace  # pace: bytes a second of each file sent, None: at once
        self.repos = {}  # repo id → {"files": {name: bytes}, "gated": bool}
        self.requests, self.served, self._lock = [], Counter(), threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                path = unquote(urlsplit(self.path).path)
                if path.startswith("/api/models/"):
                    repo, _, revision = path.removeprefix("/api/models/").partition("/revision/")
                    return hub._info(self, repo, revision)
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                revision, _, name = rest.partition("/")
                return hub._file(self, repo, revision, name)

        self.server, self.endpoint = serve(Handler)

    def add(self, repo, folder, gated=False):
        files = {str(path.relative_to(folder)): path.read_bytes()
                 for path in sorted(Path(folder).rglob("*")) if path.is_file()}
        self.repos[repo] = {"files": files, "gated": gated}
        return files

    def stop(self):
        self.server.shutdown()
        self.server.server_close()

    def _authorized(self, handler):
        return handler.headers.get("Authorization") == f"Bearer {self.token}"

    def _refuse(self, handler, status, code, message):
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        handler.send_header("X-Error-Message", message)
        handler.send_header("Content-Type", "application/json")
        body = f'{{"error": "{message}"}}'.encode()
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _repo(self, handler, repo, revision):
        """The repository, or None once the refusal is sent."""
        if repo not in self.repos:
            has_token = handler.headers.get("Authorization") is not None
            self._refuse(handler, 404 if has_token else 401, "RepoNotFound", "Repository not found")
            return None
        if revision != "main":
            self._refuse(handler, 404, "RevisionNotFound", "Invalid rev id: " + revision)
            return None
        return self.repos[repo]

    def _info(self, handler, repo, revision):
        found = self._repo(handler, repo, revision)
        if found is None:
            return
        siblings = []
        for name, data in found["files"].items():
            sibling = {"rfilename": name, "size": len(data)}
            if name.endswith(".safetensors"):
                sibling["lfs"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "pointerSize": 134}
            siblings.append(sibling)
        send_json(handler, 200, {"id": repo, "sha": "0" * 40, "private": False,
                                 "gated": "manual" if found["gated"] else False, "siblings": siblings})

    def _file(self, handler, repo, revision, name):
        found = self._repo(handler, repo, revision)
        if found is None:
            return
        if found["gated"] and not self._authorized(handler):
            has_token = handler.headers.get("Authorization") is not None
            self._refuse(handler, 403 if has_token else 401, "GatedRepo", "Access to this model is restricted.")
            return
        if name not in found["files"]:
            self._refuse(handler, 404, "EntryNotFound", "Entry not found")
            return
        data, asked = found["files"][name], handler.headers.get("Range")
        with self._lock:
            self.requests.append((name, asked))
        start = int(asked.removeprefix("bytes=").partition("-")[0]) if asked else 0
        if start >= len(data) and data:
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(data)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(206 if asked else 200)
        if asked:
            handler.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        handler.send_header("Content-Length", str(len(data) - start))
        handler.send_header("Content-Type", "application/octet-stream")
        handler.end_headers()
        step = max(1024, self.pace // 20) if self.pace else len(data)
        try:
            for offset in range(start, len(data), step):
                piece = data[offset:offset + step]
                handler.wfile.write(piece)
                handler.wfile.flush()
                with self._lock:
                    self.served[name] += len(piece)
                if self.pace:
                    time.sleep(len(piece) / self.pace)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the downloader went away (a killed worker, a cancel)
