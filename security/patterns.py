"""What a threat looks like: SQL injection, cross-site scripting and path traversal patterns.

`find_threat(text)` decodes the text the way a careless server might (URL encoding, twice over;
HTML entities; SQL comments used as spaces) and returns the first pattern it matches. The patterns
aim at attack syntax, not at words: "select the best option", "<b>bold</b>" or a file named
"a..b.txt" pass; `' OR 1=1 --`, `UNION SELECT`, `<script>`, `javascript:`, `onerror=` and
`../../etc/passwd` do not. Where they are applied (and where not) is security/detection.py's business.
"""

import html
import re
from dataclasses import dataclass
from urllib.parse import unquote

KINDS = {"sql_injection": "SQL injection", "xss": "cross-site scripting", "path_traversal": "path traversal"}

_HANDLERS = (
    "abort|afterprint|animation\\w+|auxclick|beforeprint|beforeunload|begin|blur|change|click|contextmenu|copy|cut|"
    "dblclick|drag\\w*|drop|end|error|finish|focus\\w*|hashchange|input|invalid|key\\w+|load|message|mouse\\w+|"
    "pageshow|paste|pause|play\\w*|pointer\\w+|popstate|readystatechange|repeat|reset|resize|scroll|search|select|"
    "show|start|submit|toggle|touch\\w+|transition\\w+|unload|wheel"
)

PATTERNS = [
    ("sql_injection", "UNION SELECT", r"\bunion(?:\s+(?:all|distinct))?\s+select\b"),
    # A quote that closes the application's string, then a condition of the attacker's: ' OR 1=1, " and x>0
    ("sql_injection", "quote then OR/AND condition",
     r"['\"`]\s*\)*\s*(?:or|and|\|\||&&)\s+\(*\s*['\"]?\w+['\"]?\s*(?:=|<>|!=|<|>|\blike\b)"),
    ("sql_injection", "always-true condition", r"\b(?:or|and)\s+(['\"]?)(\w+)\1\s*=\s*\1\2\1(?!\w)"),
    ("sql_injection", "quote then comment", r"['\"]\s*\)*\s*(?:--|#|/\*)\s*$"),
    ("sql_injection", "stacked statement",
     r";\s*(?:drop\s+(?:table|database|schema|user)|truncate\s+table|delete\s+from|insert\s+into|"
     r"update\s+\w+\s+set|alter\s+table|create\s+(?:table|user)|exec(?:ute)?\s*[\s(]|shutdown\b)"),
    ("sql_injection", "time delay",
     r"\bpg_sleep\s*\(|\bwaitfor\s+delay\s+['\"]|\b(?:and|or)\s+sleep\s*\(|\bbenchmark\s*\(\s*\d+\s*,"),
    ("sql_injection", "system catalogue", r"\binformation_schema\s*\.|\bxp_cmdshell\b|\bsqlite_master\b"),
    ("xss", "<script>", r"<\s*/?\s*script\b"),
    ("xss", "script URL", r"\b(?:j\s*a\s*v\s*a|v\s*b)\s*s\s*c\s*r\s*i\s*p\s*t\s*:|\bdata\s*:\s*text/html\b"),
    ("xss", "event handler attribute", rf"\bon(?:{_HANDLERS})\s*=|<[a-z][^>]*[\s/]on[a-z]+\s*="),
    ("xss", "embedding tag", r"<\s*(?:iframe|frameset|object|embed|applet)\b|<\s*meta\s[^>]*http-equiv"),
    ("xss", "document.cookie", r"\bdocument\s*\.\s*(?:cookie|domain)\b"),
    # \ufffd: an overlong UTF-8 slash (%c0%af) after decoding.
    ("path_traversal", "../", r"(?:^|[\\/\ufffd])\.\.(?:[\\/\ufffd]|$)"),
    ("path_traversal", "system file",
     r"(?:^|[\\/])(?:etc[\\/](?:passwd|shadow|group)\b|proc[\\/]self[\\/]|windows[\\/]win\.ini\b|boot\.ini\b)"),
    ("path_traversal", "NUL byte", r"\x00"),
]
_COMPILED = [(kind, label, re.compile(pattern, re.IGNORECASE)) for kind, label, pattern in PATTERNS]
_SQL_COMMENT = re.compile(r"/\*.*?\*/", re.DOTALL)


@dataclass(frozen=True)
class Threat:
    kind: str  # a key of KINDS
    label: str  # which pattern: "UNION SELECT"
    sample: str  # the text that matched, shortened


def decode(text):
    """`text` as a server that decodes too often would see it: URL-decoded up to three times (so
    `%252e` becomes `.`), HTML entities resolved, SQL comments turned into spaces."""
    for _ in range(3):
        if "%" not in text:
            break
        decoded = unquote(text, errors="replace")
        if decoded == text:
            break
        text = decoded
    if "&" in text:
        text = html.unescape(text)
    if "/*" in text:
        text = _SQL_COMMENT.sub(" ", text)
    return text


def find_threat(text):
    """The first threat pattern `text` matches once decoded, or None."""
    decoded = decode(text)
    for kind, label, pattern in _COMPILED:
        match = pattern.search(decoded)
        if match:
            return Threat(kind, label, match.group(0)[:100])
    return None
