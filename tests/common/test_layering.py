"""Source rules: common/ stays sans-I/O, and common/crypto/ also takes no randomness
from `random` and no time from the clock (time is passed in; keys come from secrets)."""

import ast
from pathlib import Path

import pytest

COMMON = Path(__file__).resolve().parents[2] / "common"
IO = {"asyncio", "socket", "ssl", "sqlite3", "aiosqlite", "prompt_toolkit", "uvloop",
      "selectors", "subprocess"}
CRYPTO_EXTRA = {"random", "time", "datetime"}


def imported_modules(source: str) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


SOURCES = sorted(COMMON.rglob("*.py"))


def forbidden_for(path: Path) -> set[str]:
    return IO | CRYPTO_EXTRA if path.parent.name == "crypto" else IO


def test_there_are_sources_to_check():
    names = {p.name for p in SOURCES}
    assert {"frames.py", "messages.py", "x3dh.py", "ratchet.py", "envelope.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(COMMON)))
def test_common_module_imports_nothing_forbidden(path):
    assert not imported_modules(path.read_text(encoding="utf-8")) & forbidden_for(path)


def test_checker_catches_forbidden_imports():
    found = imported_modules("import asyncio\nfrom sqlite3 import connect\nimport random\n")
    assert found & IO == {"asyncio", "sqlite3"}
    assert found & CRYPTO_EXTRA == {"random"}
    assert forbidden_for(COMMON / "crypto" / "x.py") >= {"random", "time", "asyncio"}
    assert "random" not in forbidden_for(COMMON / "frames.py")
