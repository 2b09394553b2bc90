"""The threat patterns: attack syntax is caught, ordinary text that merely mentions SQL or HTML is not."""

import pytest

from security.patterns import find_threat


@pytest.mark.parametrize("text, kind", [
    ("' OR 1=1 --", "sql_injection"),
    ("1 UNION SELECT username, password FROM users", "sql_injection"),
    ("1 union/**/select 1", "sql_injection"),
    ("admin'--", "sql_injection"),
    ("1; DROP TABLE users", "sql_injection"),
    ("1' AND pg_sleep(5)", "sql_injection"),
    ("<script>alert(1)</script>", "xss"),
    ("javascript:alert(document.domain)", "xss"),
    ("<img src=x onerror=alert(1)>", "xss"),
    ("onerror=alert(1)", "xss"),
    ("<svg/onload=alert(1)>", "xss"),
    ("&lt;script&gt;alert(1)", "xss"),
    ("../../etc/passwd", "path_traversal"),
    ("..\\..\\windows\\win.ini", "path_traversal"),
    ("%2e%2e%2f%2e%2e%2fsecret", "path_traversal"),
    ("%252e%252e%252fsecret", "path_traversal"),
    ("report.pdf%00.png", "path_traversal"),
])
def test_attack_syntax_is_caught(text, kind):
    assert find_threat(text).kind == kind


@pytest.mark.parametrize("text", [
    "select the best option",
    "<b>bold</b> in a prompt to an LLM",
    "a..b.txt",
    "Wait... what?",
    "O'Brien -- our best customer",
    "the union of two sets",
    "rock and roll",
    "online=true",
    "50% off",
    "/srv/models/tiny-llm",
    "https://example.com/docs?page=2",
])
def test_ordinary_text_passes(text):
    assert find_threat(text) is None
