import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from pgserver import PgServer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _built(var: str, name: str) -> str:
    path = os.environ.get(var)
    if path:
        return path
    for build in ("build", "build-meson"):
        for cand in (ROOT / build / name, ROOT / build / "examples" / name, ROOT / build / "tests" / name):
            if cand.exists():
                return str(cand)
    raise RuntimeError(f"{name} not built; set {var}")


@pytest.fixture(scope="session")
def pg():
    with PgServer() as server:
        server.create_sample("mev_protection", rows=2000)
        yield server


@pytest.fixture(scope="session")
def tools():
    return {
        "cli": _built("MEVBACKUP_CLI", "mevbackup"),
        "c_backup": _built("MEVBACKUP_C_BACKUP", "mevb_example_backup"),
        "c_restore": _built("MEVBACKUP_C_RESTORE", "mevb_example_restore"),
        "capi_test": _built("MEVBACKUP_CAPI_TEST", "mevb_capi_test"),
    }


@pytest.fixture
def repo(tmp_path):
    return tmp_path / "repo"


@pytest.fixture
def cli(pg, tools):
    """Runs the mevbackup CLI with the server's password in the environment."""

    def run(*args, env=None, check=None):
        full_env = pg.env()
        full_env.update(env or {})
        r = subprocess.run([tools["cli"], *map(str, args)], capture_output=True, text=True,
                           env=full_env, timeout=300)
        if check is True:
            assert r.returncode == 0, r.stderr
        return r

    return run


_counter = [0]


@pytest.fixture
def newdb():
    """A fresh database name for a restore target."""

    def make(prefix="restored"):
        _counter[0] += 1
        return f"{prefix}_{os.getpid()}_{_counter[0]}"

    return make


@pytest.fixture(scope="session")
def bigdb(pg):
    """A larger database, so that a dump lasts long enough to be interrupted."""
    pg.create_sample("mev_big", rows=60000)
    return "mev_big"
