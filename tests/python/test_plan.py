"""A whole-service plan (issue 19): `run` writes a backup set of PostgreSQL + Redis + files,
`restore --plan` brings everything back in order around the hooks, and a broken member,
a failing or hanging hook, or a member pruned by hand never leaves an incomplete set
counted as complete. Real servers on 127.0.0.1; stock tools check the artifacts."""

import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from redisserver import free_port, same_data  # noqa: E402


def sets(cli, plan):
    r = cli("list", "--sets", "--plan", plan, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["sets"]


def test_run_writes_a_complete_set_readable_by_stock_tools(cli, service, tmp_path):
    plan = service["plan"]()
    r = cli("run", "--plan", plan, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["operation"] == "run" and rep["set"].startswith("mev_")
    names = [s["name"] for s in rep["steps"]]
    assert names[:5] == ["hook before_backup[1]", "postgres.main", "redis.cache", "files.config", "set"]
    assert all(s["status"] == "ok" and s["seconds"] >= 0 for s in rep["steps"])
    assert service["log"].read_text().split() == ["before_backup", "after_backup"]

    # The set manifest, written last, names each member with the SHA-256 its own manifest has.
    listed = sets(cli, plan)
    assert [s["id"] for s in listed] == [rep["set"]] and listed[0]["complete"]
    raw = json.loads((service["repo"] / "sets" / (rep["set"] + ".set.json")).read_text())
    assert raw["type"] == "backup-set" and raw["objectives"] == {"rpo_seconds": 86400, "rto_seconds": 14400}
    assert {m["source"] for m in raw["members"]} == {"postgres.main", "redis.cache", "files.config"}
    for m in raw["members"]:
        man = json.loads((service["repo"] / (m["path"] + ".manifest.json")).read_text())
        assert man["id"] == m["id"] and man["sha256"] == m["sha256"] and man["kind"] == m["kind"]
    assert raw["started_at"] <= raw["finished_at"]

    # Stock tools read every member.
    by = {m["kind"]: service["repo"] / m["path"] for m in raw["members"]}
    dump = tmp_path / "db.dump"
    dump.write_bytes(gzip.decompress(by["postgres"].read_bytes()))
    toc = subprocess.run(["pg_restore", "-l", str(dump)], capture_output=True, text=True)
    assert toc.returncode == 0 and "mev_threats" in toc.stdout
    rdb = tmp_path / "dump.rdb"
    rdb.write_bytes(gzip.decompress(by["redis"].read_bytes()))
    chk = subprocess.run(["redis-check-rdb", str(rdb)], capture_output=True, text=True)
    assert chk.returncode == 0 and "RDB looks OK" in chk.stdout
    tar = subprocess.run(["tar", "tzf", str(by["files"])], capture_output=True, text=True)
    assert tar.returncode == 0 and "nginx/nginx.conf" in tar.stdout.split()

    # The ordinary listing shows the members, and the set directory is not an incomplete backup.
    r = cli("list", "--plan", plan, "--json")
    assert r.returncode == 0, r.stderr
    assert {b["id"] for b in json.loads(r.stdout)} == {m["id"] for m in raw["members"]}
    r = cli("check", "--repo", service["repo"], "--max-age", "1h")
    assert "incomplete" not in r.stdout.lower(), r.stdout


def test_restore_plan_brings_back_table_keys_and_files_in_order(cli, pg, plan_redis, service):
    plan = service["plan"]()
    assert cli("run", "--plan", plan).returncode == 0
    before_keys = plan_redis.snapshot()
    db = service["db"]
    counts = pg.row_counts(db)

    # The disaster: a dropped table, flushed Redis, a deleted and a changed config file.
    pg.psql("DROP TABLE transaction_protections", db)
    plan_redis.cli("FLUSHALL")
    (service["app"] / "nginx" / "nginx.conf").unlink()
    (service["app"] / "alembic.ini").write_text("broken\n")
    service["log"].write_text("")

    # A dry run changes nothing and lists each step.
    r = cli("restore", "--plan", plan, "--set", "latest", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert [s["status"] for s in rep["steps"]][1:] == ["planned"] * 6
    assert plan_redis.dbsizes() == {} and not (service["app"] / "nginx" / "nginx.conf").exists()
    assert service["log"].read_text() == ""

    r = cli("restore", "--plan", plan, "--set", "latest", "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"]
    assert [s["name"] for s in rep["steps"]] == [
        "set", "hook before_restore[1]", "postgres.main", "redis.cache", "files.config",
        "hook after_restore[1]", "hook after_restore[2]"]
    assert pg.row_counts(db) == counts
    same_data(before_keys, plan_redis.snapshot())
    assert (service["app"] / "nginx" / "nginx.conf").read_text().startswith("events")
    assert (service["app"] / "alembic.ini").read_text().startswith("[alembic]")
    assert service["log"].read_text().split() == ["before_restore", "after_restore", "health"]


def test_a_broken_member_fails_the_run_and_writes_no_set(cli, service):
    good = service["plan"]()
    assert cli("run", "--plan", good).returncode == 0
    first = sets(cli, good)
    assert len(first) == 1

    broken = service["plan"](redis_url=f"redis://127.0.0.1:{free_port()}")
    r = cli("run", "--plan", broken)
    assert r.returncode == 1
    assert "redis.cache" in r.stderr and "no backup set was written" in r.stderr
    assert r.stderr.count("\n") == 1, r.stderr  # one line
    after = sets(cli, good)
    assert [s["id"] for s in after] == [first[0]["id"]] and after[0]["complete"]
    # The after-hooks undid the before-hooks even so.
    assert service["log"].read_text().split()[-2:] == ["before_backup", "after_backup"]
    # The earlier set still restores.
    assert cli("restore", "--plan", good, "--dry-run").returncode == 0


def test_failing_and_hanging_hooks(cli, service):
    plan = service["plan"](hooks='[hooks]\nbefore_backup = ["echo nope >&2; exit 3"]\n')
    r = cli("run", "--plan", plan)
    assert r.returncode == 1
    assert "exited with status 3" in r.stderr and "nope" in r.stderr
    assert not (service["repo"] / "sets").exists() or sets(cli, plan) == []

    plan = service["plan"](hooks='[hooks]\nbefore_backup = ["sleep 60"]\ntimeout = "1s"\n')
    t = time.monotonic()
    r = cli("run", "--plan", plan)
    assert r.returncode == 1
    assert time.monotonic() - t < 30
    assert "did not finish within 1 s and was killed" in r.stderr
    assert not (service["repo"] / "sets").exists() or sets(cli, plan) == []


def test_a_member_pruned_by_hand_makes_its_set_incomplete(cli, service):
    plan = service["plan"]()
    assert cli("run", "--plan", plan).returncode == 0
    time.sleep(1.1)  # a second set, a second later
    assert cli("run", "--plan", plan).returncode == 0
    old, new = sets(cli, plan)
    member = next(m for m in new["members"] if m["kind"] == "redis")
    (service["repo"] / (member["path"] + ".manifest.json")).unlink()

    old2, new2 = sets(cli, plan)
    assert old2["complete"] and not new2["complete"]
    assert "redis.cache" in new2["problem"] and member["id"] in new2["problem"]
    r = cli("list", "--sets", "--plan", plan)
    assert "INCOMPLETE" in r.stdout

    r = cli("restore", "--plan", plan, "--set", new["id"], "--dry-run")
    assert r.returncode == 1 and "not complete" in r.stderr and "redis.cache" in r.stderr
    r = cli("restore", "--plan", plan, "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["set"] == old["id"]
    assert "passing over newer incomplete backup sets" in r.stderr


def test_retention_keeps_and_prunes_sets_whole(cli, service):
    plan = service["plan"]()
    ids = []
    for _ in range(2):
        r = cli("run", "--plan", plan, "--json")
        assert r.returncode == 0, r.stderr
        ids.append(json.loads(r.stdout)["set"])
        time.sleep(1.1)
    # Plain prune never breaks a set: every member belongs to one.
    r = cli("prune", "--repo", service["repo"], "--keep-last", "1", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["deleted"] == 0
    assert [s["complete"] for s in sets(cli, plan)] == [True, True]

    # The plan's retention: keep_last 1 leaves the newest set, the older goes members and all.
    plan = service["plan"](extra="[retention]\nkeep_last = 1\n")
    r = cli("run", "--plan", plan, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    ret = next(s for s in rep["steps"] if s["name"] == "retention")
    assert sorted(ret["detail"]["deleted_sets"]) == sorted(ids)
    left = sets(cli, plan)
    assert [s["id"] for s in left] == [rep["set"]] and left[0]["complete"]
    r = cli("list", "--plan", plan, "--json")
    assert {b["id"] for b in json.loads(r.stdout)} == {m["id"] for m in left[0]["members"]}


def test_bad_plans_name_file_line_and_key(cli, service, tmp_path):
    plan = service["plan"](extra='[postgres.other]\ndbname = "dbname=x"\nverify_querys = ["SELECT 1"]\n')
    r = cli("run", "--plan", plan)
    assert r.returncode == 1
    assert f"{plan}:" in r.stderr and "postgres.other.verify_querys" in r.stderr
    r = cli("run", "--plan", tmp_path / "missing.toml")
    assert r.returncode == 1 and "missing.toml" in r.stderr
    r = cli("list", "--sets")
    assert r.returncode == 2 and "--plan" in r.stderr
