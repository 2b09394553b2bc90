"""The code's own rules, run with the suite so CI enforces them: ruff's lint (pyproject.toml), the
import-linter contracts of the layout by process (the web side never imports the worker side, the
worker never imports the web side, the core never imports the HTTP layer), and mypy's type check of
the core, the web↔worker contract, the worker and the serving path."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def run(*command, timeout=120):
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_ruff_finds_nothing():
    result = run(str(BIN / "ruff"), "check", "--output-format", "concise", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_import_contracts_are_kept():
    result = run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_types_check():
    # Its cache (.mypy_cache) makes a later run take a second; the first reads torch's types (about 25 s here).
    result = run(str(BIN / "mypy"), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
