"""Source rules for common/crypto: no non-cryptographic randomness, no I/O, no clock."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CRYPTO = Path(__file__).resolve().parents[3] / "common" / "crypto"
FORBIDDEN = {
    "random",
    "time",
    "datetime",
    "asyncio",
    "socket",
    "ssl",
    "sqlite3",
    "aiosqlite",
    "prompt_toolkit",
}


def imported_modules(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


SOURCES = sorted(CRYPTO.glob("*.py"))


def test_sources_found():
    assert {p.name for p in SOURCES} >= {"groups.py", "x3dh.py", "ratchet.py", "envelope.py"}


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_no_forbidden_imports(path):
    assert not imported_modules(path.read_text()) & FORBIDDEN


def test_checker_sees_random():
    assert imported_modules("import random\nfrom time import time\n") == {"random", "time"}
