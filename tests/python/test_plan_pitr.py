"""A plan with a [pitr] source (issue 19): `run` takes a base backup of a server that archives
its WAL into the plan's repository; `restore --plan --target-time T` brings PostgreSQL back to
T in a new data directory (a real PostgreSQL 15 replaying the archived WAL) and the other
members from the newest set that finished at or before T, not from a later one."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from pgserver import PgServer, free_port


def chown_postgres(path):
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def wait_until(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def as_postgres(argv):
    return ["runuser", "-u", "postgres", "--"] + argv if os.geteuid() == 0 else argv


@pytest.fixture
def world(tools):
    cli = tools["cli"]
    work = tempfile.mkdtemp(prefix="mevb-plan-pitr-")
    os.chmod(work, 0o755)
    repo = os.path.join(work, "backups")
    os.mkdir(repo, 0o700)
    chown_postgres(repo)  # the archiver runs as postgres
    app = os.path.join(work, "app")
    os.mkdir(app)
    pg = PgServer(extra_opts="-c archive_mode=on -c wal_level=replica -c archive_timeout=0")
    pg.start()
    restored = os.path.join(work, "restored")
    try:
        pg.psql(f"ALTER SYSTEM SET archive_command = '{cli} wal-push --repo {repo} %p'")
        pg.psql("SELECT pg_reload_conf()")
        yield {"cli": cli, "work": work, "repo": repo, "app": app, "pg": pg, "restored": restored}
    finally:
        if os.path.exists(os.path.join(restored, "postmaster.pid")):
            subprocess.run(as_postgres([f"{pg.bindir}/pg_ctl", "-D", restored, "-m", "immediate", "-w", "stop"]),
                           capture_output=True, timeout=60)
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def write_plan(w, port, extra=""):
    owner = 'owner = "postgres"' if os.geteuid() == 0 else ""
    text = f'''
[plan]
name = "mev"
[repository]
location = "{w["repo"]}"
[pitr.main]
dbname = "{w["pg"].conninfo()}"
data_dir = "{w["restored"]}"
{owner}
settings = ["port={port}", "listen_addresses=127.0.0.1", "unix_socket_directories="]
timeout = "120s"
[files.config]
base = "{w["app"]}"
paths = ["app.conf"]
{extra}
'''
    path = os.path.join(w["work"], "plan.toml")
    with open(path, "w") as f:
        f.write(text)
    return path


def run(w, *args):
    return subprocess.run([w["cli"], *map(str, args)], capture_output=True, text=True, env=w["pg"].env(),
                          timeout=300)


def archived(w, seg):
    return os.path.exists(os.path.join(w["repo"], "wal", seg[:8], seg + ".gz"))


def test_restore_plan_to_a_point_in_time(world):
    w, pg = world, world["pg"]
    conf = os.path.join(w["app"], "app.conf")
    with open(conf, "w") as f:
        f.write("version = 1\n")
    port = free_port()
    plan = write_plan(w, port)
    pg.psql("CREATE TABLE accounts (id int PRIMARY KEY, note text NOT NULL)")
    pg.psql("INSERT INTO accounts SELECT g, 'before ' || g FROM generate_series(1, 1000) g")

    r = run(w, "run", "--plan", plan, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    first = json.loads(r.stdout)
    members = json.loads(open(os.path.join(w["repo"], "sets", first["set"] + ".set.json")).read())["members"]
    assert {m["source"]: m["kind"] for m in members} == {"pitr.main": "basebackup", "files.config": "files"}

    pg.psql("INSERT INTO accounts SELECT g, 'after ' || g FROM generate_series(1001, 1500) g")
    time.sleep(1.1)  # the second set must finish after the target, to a second's precision
    target = pg.psql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') || '+00'")
    time.sleep(1.1)
    pg.psql("DELETE FROM accounts WHERE id <= 1200")  # the accident
    with open(conf, "w") as f:
        f.write("version = 2\n")
    # A later set: the restore to the target must not take its members.
    r = run(w, "run", "--plan", plan, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    second = json.loads(r.stdout)["set"]
    assert second != first["set"]
    seg = pg.psql("SELECT pg_walfile_name(pg_current_wal_lsn())")
    pg.psql("SELECT pg_switch_wal()")
    wait_until(lambda: archived(w, seg), 60, f"archiving of {seg}")

    # A dry run names the steps and changes nothing.
    r = run(w, "restore", "--plan", plan, "--target-time", target, "--dry-run", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["set"] == first["set"]
    planned = {s["name"]: s for s in rep["steps"]}
    assert planned["pitr.main"]["status"] == "planned" and target in planned["pitr.main"]["message"]
    assert not os.path.exists(w["restored"])

    r = run(w, "restore", "--plan", plan, "--target-time", target, "--json")
    log = os.path.join(w["restored"], "pitr_recovery.log")
    assert r.returncode == 0, r.stdout + r.stderr + (open(log).read() if os.path.exists(log) else "")
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["set"] == first["set"] and rep["target_time"] == target
    steps = {s["name"]: s for s in rep["steps"]}
    assert steps["pitr.main"]["status"] == "ok" and steps["files.config"]["status"] == "ok"
    # PostgreSQL at the target: the rows written after the first set, none of the deletion.
    q = subprocess.run([f"{pg.bindir}/psql", "-X", "-t", "-A", "-d",
                        f"host=127.0.0.1 port={port} user=postgres dbname=postgres",
                        "-c", "SELECT count(*), min(id), max(id) FROM accounts"],
                       capture_output=True, text=True, env=pg.env())
    assert q.returncode == 0, q.stderr
    assert q.stdout.strip() == "1500|1|1500"
    # The config from the set before the target, not from the later one.
    assert open(conf).read() == "version = 1\n"


def test_target_time_needs_a_pitr_source_and_a_set_before_it(world):
    w = world
    with open(os.path.join(w["app"], "app.conf"), "w") as f:
        f.write("x = 1\n")
    plain = os.path.join(w["work"], "plain.toml")
    with open(plain, "w") as f:
        f.write(f'[repository]\nlocation = "{w["repo"]}"\n[files.config]\nbase = "{w["app"]}"\npaths = ["app.conf"]\n')
    r = run(w, "restore", "--plan", plain, "--target-time", "2026-11-27 07:50:00+00")
    assert r.returncode != 0 and "--target-time needs a [pitr.NAME] source" in r.stderr, r.stderr

    scratch = os.path.join(w["work"], "scratch")
    os.mkdir(scratch)
    plan = write_plan(w, free_port(), extra=f'[drill]\nfiles = "{scratch}"\n')
    assert run(w, "run", "--plan", plan).returncode == 0
    # The drill reads the base backup whole (checksums, tar members) and checks its WAL.
    r = run(w, "drill", "--plan", plan, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    steps = {s["name"]: s for s in json.loads(r.stdout)["steps"]}
    assert steps["pitr.main checks"]["status"] == "ok" and "not replayed" in steps["pitr.main checks"]["message"]
    r = run(w, "restore", "--plan", plan, "--target-time", "2020-01-01 00:00:00+00")
    assert r.returncode != 0 and "no complete backup set that finished at or before 2020-01-01" in r.stdout + r.stderr
    assert not os.path.exists(w["restored"])
    r = run(w, "restore", "--plan", plan, "--target-time", "yesterday")
    assert r.returncode != 0 and "yesterday" in r.stderr
