"""Source rules: common/ stays sans-I/O, and common/crypto/ also takes no randomness
from `random` and no time from the clock (time is passed in; keys come from secrets)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

COMMON = Path(__file__).resolve().parents[2] / "common"
IO = {
    "asyncio",
    "socket",
    "ssl",
    "sqlite3",
    "aiosqlite",
    "prompt_toolkit",
    "uvloop",
    "selectors",
    "subprocess",
}
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


def test_sympy_is_imported_only_for_finite_field_groups():
    """The relay and an x25519 client never load sympy (0.4 s, ~38 MB); checking a
    finite-field public value (Jacobi symbol) or a custom group's primes does."""
    code = (
        "import sys, relay.server, relay.cli, client.service, client.cli\n"
        "from common.crypto.dh import group_by_name\n"
        "x = group_by_name('x25519')\n"
        "x.agree(x.generate().private, x.generate().public)\n"
        "assert 'sympy' not in sys.modules, 'loaded without a finite-field group'\n"
        "ff = group_by_name('ffdhe3072')\n"
        "ff.agree(ff.generate().private, ff.generate().public)\n"
        "assert 'sympy' in sys.modules\n"
    )
    root = COMMON.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)
