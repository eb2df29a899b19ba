import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from pgserver import PgServer  # noqa: E402
from redisserver import RedisServer  # noqa: E402

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
def pgenv(pg, monkeypatch):
    """The server, its password in this process's PGPASSWORD (for the library, in process)."""
    monkeypatch.setenv("PGPASSWORD", pg.password)
    return pg


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


@pytest.fixture(scope="module")
def plan_redis():
    """A Redis server with sample keys, one per test module, for plans."""
    with RedisServer() as server:
        server.fill_sample(50)
        yield server


@pytest.fixture
def service(pg, plan_redis, tmp_path, newdb):
    """A whole service for a plan: a database of its own, the module's Redis, config files,
    and plan(...) writing a plan file naming them (repository tmp_path/backups; hooks
    appending to the file "log")."""
    db = newdb("plan")
    pg.create_sample(db, rows=300)
    app = tmp_path / "app"
    (app / "nginx").mkdir(parents=True)
    (app / "docker-compose.yml").write_text("services:\n  mev-protection:\n    image: mev:1\n")
    (app / "nginx" / "nginx.conf").write_text("events {}\nhttp { server { listen 80; } }\n")
    (app / "alembic.ini").write_text("[alembic]\nscript_location = migrations\n")
    log = tmp_path / "hooks.log"

    def plan(extra="", redis_url=None, hooks=None, name="plan.toml", repository=""):
        hooks = hooks if hooks is not None else f'''
[hooks]
before_backup = ["echo before_backup >> {log}"]
after_backup = ["echo after_backup >> {log}"]
before_restore = ["echo before_restore >> {log}"]
after_restore = ["echo after_restore >> {log}", "test -f docker-compose.yml && echo health >> {log}"]
workdir = "{app}"
'''
        text = f'''
[plan]
name = "mev"
[repository]
location = "{tmp_path / 'backups'}"
{repository}
[objectives]
rpo = "24h"
rto = "4h"
[postgres.main]
dbname = "{pg.conninfo(db)}"
verify_queries = ["SELECT COUNT(*) FROM mev_threats"]
[redis.cache]
url = "{redis_url or plan_redis.url()}"
[files.config]
base = "{app}"
paths = ["docker-compose.yml", "nginx/nginx.conf", "alembic.ini"]
{hooks}
{extra}
'''
        p = tmp_path / name
        p.write_text(text)
        return p

    return {"db": db, "app": app, "log": log, "plan": plan, "repo": tmp_path / "backups"}
