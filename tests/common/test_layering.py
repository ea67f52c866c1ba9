"""common/ stays sans-I/O: no module under it may import an I/O library."""

import ast
from pathlib import Path

import pytest

COMMON = Path(__file__).resolve().parents[2] / "common"
FORBIDDEN = {"asyncio", "socket", "ssl", "sqlite3", "aiosqlite", "prompt_toolkit", "uvloop",
             "selectors", "subprocess"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


SOURCES = sorted(COMMON.rglob("*.py"))


def test_there_are_sources_to_check():
    assert len(SOURCES) >= 5


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(COMMON)))
def test_common_module_does_no_io(path):
    assert not (_imports(path) & FORBIDDEN), f"{path} imports an I/O library"


def test_checker_catches_an_io_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import asyncio\nfrom sqlite3 import connect\n")
    assert _imports(bad) & FORBIDDEN == {"asyncio", "sqlite3"}
