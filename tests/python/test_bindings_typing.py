"""The Python bindings stay typed: mypy (strict, by bindings/python/mypy.ini) finds nothing,
the package says it is typed (py.typed), and methods are defined in their class."""

from __future__ import annotations

import importlib.util
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

import mevbackup

ROOT = Path(__file__).resolve().parents[2]
BINDINGS = ROOT / "bindings" / "python"
CONFIG = BINDINGS / "mypy.ini"


def _mypy(tmp_path: Path, *targets: str) -> subprocess.CompletedProcess:
    if importlib.util.find_spec("mypy") is None:
        pytest.fail(f"mypy is not installed for {sys.executable} (Debian: python3-mypy, see scripts/install-deps.sh)")
    # mypy loads no libmevbackup: a sanitizer build's runtime (tests/sanitize) stays out of it.
    env = {k: v for k, v in os.environ.items() if k not in ("MEVB_ASAN_RUNTIME", "LD_PRELOAD")}
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(CONFIG),
                           "--cache-dir", str(tmp_path / "mypy-cache"), *targets],
                          cwd=BINDINGS, env=env, capture_output=True, text=True, timeout=600)


def test_mypy_finds_nothing_in_the_package(tmp_path):
    r = _mypy(tmp_path, "-p", "mevbackup")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success: no issues found" in r.stdout


def test_the_mypy_config_is_strict(tmp_path):
    # The check above is only as strict as the config: an unannotated function and a bare
    # generic, which plain mypy accepts, must be reported under it.
    sample = tmp_path / "sample.py"
    sample.write_text("from typing import Dict\n\n\ndef untyped(x):\n    return x\n\n\n"
                      "def bare(d: Dict) -> int:\n    return len(d)\n")
    r = _mypy(tmp_path, str(sample))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "[no-untyped-def]" in r.stdout and "[type-arg]" in r.stdout, r.stdout


def test_the_package_is_marked_typed():
    marker = Path(mevbackup.__file__).with_name("py.typed")
    assert marker.is_file(), f"{marker} missing: type checkers would ignore the package's hints"


def test_methods_are_defined_in_their_class():
    """No function attached to a class after its definition (Repository.x = _x): each
    function a class of the package holds was written in that class's body."""
    attached = []
    for cls_name, cls in vars(mevbackup).items():
        if not inspect.isclass(cls) or cls.__module__ != "mevbackup":
            continue
        for name, member in vars(cls).items():
            func = member.__func__ if isinstance(member, (classmethod, staticmethod)) else member
            if inspect.isfunction(func) and not func.__qualname__.startswith(cls.__qualname__ + "."):
                attached.append(f"{cls_name}.{name} is {func.__qualname__}")
    assert not attached, attached
    # The methods once attached that way are there, as methods of Repository.
    for name in ("backup_redis", "restore_redis", "wal_push", "wal_fetch", "backup_basebackup", "restore_pitr"):
        assert getattr(mevbackup.Repository, name).__qualname__ == f"Repository.{name}"
