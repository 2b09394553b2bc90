"""Where threat detection looks: the path and the query string of every request, and JSON bodies.

Two kinds of JSON value are never inspected:

- the free text of the inference endpoints (`FREE_TEXT`): prompts, messages, inputs, stop
  sequences (and an edit's base64 image) are data handed to a model, never to SQL or to a page
  unescaped, and people legitimately ask a model about `SELECT … OR 1=1` or `<script>`. An
  endpoint that hands text to a model adds its fields there.
- secrets (`password`, `token`, …, as the audit log names them): they are hashed or compared,
  never interpreted, and a random password may well contain `../` or `'--`.

Form-encoded and multipart bodies (the browser's forms, image uploads) are not inspected: forms are
CSRF-protected and validated field by field, and the ORM and template autoescaping hold the line
behind every field.
"""

import json
from dataclasses import dataclass
from urllib.parse import parse_qsl

from accounts.audit import SECRET_FIELDS

from .patterns import KINDS, find_threat

# Per endpoint, the JSON fields (and everything under them) that are text for a model.
# `[]` stands for any list index: `messages[].content` covers `messages[2].content[0].text`.
FREE_TEXT = {
    "/v1/chat/completions": {"messages[].content", "stop", "tools", "functions"},
    "/v1/completions": {"prompt", "suffix", "stop"},
    "/v1/embeddings": {"input"},
    "/v1/images/generations": {"prompt", "negative_prompt"},
    "/v1/images/edits": {"prompt", "negative_prompt", "image"},
}


@dataclass(frozen=True)
class Detection:
    """A threat found in a request: what (`kind`, `label`, `sample`) and where (`where` for a person,
    `param` for an API client: the query parameter or JSON field, None for the path)."""

    kind: str
    label: str
    sample: str
    where: str
    param: str | None

    @property
    def message(self):
        return (
            f"Refused: {self.where} looks like {KINDS[self.kind]} ({self.label}). Requests that look like attacks "
            "are logged, and repeated ones block the sender's address."
        )


def detect(request, body):
    """The first threat in the request's path, query string or JSON `body` (bytes), or None."""
    threat = find_threat(request.path)
    if threat:
        return _found(threat, "the path", None)
    for name, value in parse_qsl(request.META.get("QUERY_STRING", ""), keep_blank_values=True):
        if threat := find_threat(name):
            return _found(threat, "a query parameter name", name[:100])
        if name.lower() not in SECRET_FIELDS and (threat := find_threat(value)):
            return _found(threat, f"the query parameter '{name}'", name)
    document = _json(body)
    if document is not None:
        return _inspect_json(document, FREE_TEXT.get(request.path.rstrip("/"), set()))
    return None


def _found(threat, where, param):
    return Detection(threat.kind, threat.label, threat.sample, where, param)


def _json(body):
    """The body as JSON when it is an object or array, else None (the view will say what is wrong)."""
    if not body or body.lstrip()[:1] not in (b"{", b"["):
        return None
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _inspect_json(document, free_text):
    # Iterative, not recursive: a body nested ten thousand deep must not crash the check.
    stack = [(document, "", "")]
    while stack:
        value, path, generic = stack.pop()
        if generic in free_text:
            continue
        if isinstance(value, dict):
            for key, item in value.items():
                child = f"{path}.{key}" if path else key
                if threat := find_threat(key):
                    return _found(threat, f"the name of the JSON field '{child}'", child)
                if key.lower() not in SECRET_FIELDS:
                    stack.append((item, child, f"{generic}.{key}" if generic else key))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{index}]", f"{generic}[]") for index, item in enumerate(value))
        elif isinstance(value, str) and (threat := find_threat(value)):
            return _found(threat, f"the JSON field '{path}'" if path else "the JSON body", path or None)
    return None
