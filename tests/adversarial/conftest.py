"""Attack tests report figures (what was tried, what happened), printed after the run.

Set HUSHWIRE_FIGURES=FILE to also append them as JSON lines, for docs/security.md.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

import pytest


@dataclass(frozen=True)
class Figure:
    test: str
    tried: str
    result: str


_FIGURES: list[Figure] = []


class Figures:
    def __init__(self, test: str) -> None:
        self.test = test

    def add(self, tried: str, result: str) -> None:
        _FIGURES.append(Figure(self.test, tried, result))


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    return Figures(request.node.name)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _FIGURES:
        return
    terminalreporter.section("hushwire attack figures")
    for f in _FIGURES:
        terminalreporter.write_line(f"{f.test}: {f.tried} -> {f.result}")
    path = os.environ.get("HUSHWIRE_FIGURES")
    if path:
        with open(path, "a", encoding="utf-8") as out:
            for f in _FIGURES:
                out.write(json.dumps(asdict(f)) + "\n")
