"""The wheel as a user gets it: one import package, three commands that run anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("hushwire", "hushwire-relay", "hushwire-admin")


def run(*argv: str | Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str], dict[str, str]]:
    """A fresh venv with the built wheel installed: (its bin dir, names it added, env)."""
    work = tmp_path_factory.mktemp("wheel")
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "-w", work / "dist", ROOT,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "dist").glob("hushwire-*.whl")
    env_dir = work / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    site = Path(
        run(
            bin_dir / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"
        ).stdout.strip()
    )
    before = {p.name for p in site.iterdir()}
    # --no-deps: the dependencies come from this test run's own environment (PYTHONPATH
    # below), which holds no hushwire package of its own (it is an editable install).
    result = run(bin_dir / "python", "-m", "pip", "install", "--no-deps", "-q", wheel)
    assert result.returncode == 0, result.stderr
    added = {p.name for p in site.iterdir()} - before
    env = {**os.environ, "PYTHONPATH": sysconfig.get_path("purelib")}
    return bin_dir, added, env


def test_only_hushwire_lands_at_the_top_of_site_packages(installed) -> None:
    _, added, _ = installed
    tops = {name for name in added if not name.endswith(".dist-info")}
    assert tops == {"hushwire"}, tops
    assert not any(name in {"common", "relay", "client", "migrations"} for name in added)


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_print_their_version_from_another_directory(installed, command, tmp_path):
    bin_dir, _, env = installed
    result = run(bin_dir / command, "--version", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [command, "0.1.0"]


def test_installed_admin_applies_the_shipped_migrations(installed, tmp_path):
    """The SQL files travel as package data: a new db is built from them."""
    bin_dir, _, env = installed
    result = run(
        bin_dir / "hushwire-admin", "--db", tmp_path / "x.db", "add-user", "alice",
        cwd=tmp_path, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "alice" in result.stdout
    result = run(bin_dir / "hushwire-admin", "--db", tmp_path / "x.db", "list-users", env=env)
    assert "alice" in result.stdout


def test_installed_client_ships_its_profile_schema(installed, tmp_path):
    bin_dir, _, env = installed
    code = (
        "from importlib import resources; import hushwire.client.store as s; "
        "print(s.__file__); print(sorted(e.name for e in "
        "resources.files('hushwire.client.schema').iterdir() if e.name.endswith('.sql')))"
    )
    result = run(bin_dir / "python", "-c", code, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    where, schemas = result.stdout.splitlines()
    assert where.startswith(str(bin_dir.parent))  # the wheel's copy, not the checkout
    assert "0001_init.sql" in schemas


def test_relay_help_runs_from_the_installed_wheel(installed, tmp_path):
    bin_dir, _, env = installed
    result = run(bin_dir / "hushwire-relay", "--help", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "--db" in result.stdout and "--version" in result.stdout


def test_installed_client_has_every_module(installed, tmp_path):
    """Each client subpackage is listed in pyproject (a missing one imports only here)."""
    bin_dir, _, env = installed
    code = "import hushwire.client.tui as t; print(t.ChatApp.__module__, t.__file__)"
    result = run(bin_dir / "python", "-c", code, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    module, where = result.stdout.split()
    assert module == "hushwire.client.tui.app" and where.startswith(str(bin_dir.parent))
