"""A whole-service plan in process, through the Python bindings (mevbackup.Plan over the C
API's mevb_plan_*): a run writes a complete set and reports timed steps as structs, a
restore (dry or real) brings the service back, a failure raises with the report, and a
cancel from another thread stops a run. Real PostgreSQL and Redis on 127.0.0.1."""

import datetime
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import mevbackup

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from redisserver import free_port, same_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MEMBERS = {"postgres.main", "redis.cache", "files.config"}


def table_exists(pg, db, table):
    return pg.psql(f"SELECT to_regclass('public.{table}') IS NOT NULL", db).strip() == "t"


def test_run_writes_a_complete_set_and_reports_timed_steps(pgenv, service):
    seen = []
    with mevbackup.Plan(service["plan"]()) as plan:
        assert plan.name == "mev"
        rep = plan.run(progress=seen.append)
        assert isinstance(rep, mevbackup.PlanReport)
        assert rep.ok and rep.code == 0 and rep.operation == "run" and rep.plan == "mev"
        assert rep.set_id.startswith("mev_") and rep.data["set"] == rep.set_id
        names = [s.name for s in rep.steps]
        assert names == ["hook before_backup[1]", "postgres.main", "redis.cache", "files.config", "set",
                         "hook after_backup[1]"]
        for s in rep.steps:
            assert s.status == "ok" and 0 <= s.seconds <= rep.seconds, s
            assert datetime.datetime.strptime(s.started_at, "%Y-%m-%dT%H:%M:%SZ")
        assert [s.name for s in rep.steps] == [s["name"] for s in rep.data["steps"]]
        assert rep.steps[1].detail["kind"] == "postgres" and rep.steps[1].message.startswith(rep.steps[1].detail["id"])
        assert seen and any(p.done for p in seen)
        assert service["log"].read_text().split() == ["before_backup", "after_backup"]

        sets = plan.sets()
        assert [s.id for s in sets] == [rep.set_id]
        assert sets[0].complete and sets[0].problem == "" and sets[0].plan == "mev"
        assert {m.source for m in sets[0].members} == MEMBERS and len(sets[0].members) == 3
        assert sets[0].data["objectives"] == {"rpo_seconds": 86400, "rto_seconds": 14400}

        # The plan's repository, as a Repository: its catalog holds exactly the members.
        with plan.repository() as repo:
            by_id = {b.id: b for b in repo.list()}
            assert {m.id: m.sha256 for m in sets[0].members} == {i: b.sha256 for i, b in by_id.items()}
            assert [s.id for s in repo.backup_sets()] == [rep.set_id]
        with pytest.raises(mevbackup.NotFound) as e:
            plan.repository(1)
        assert "0 copies" in e.value.message

        # A member's manifest removed by hand: the set is listed as incomplete, naming it,
        # and a restore of it is refused before anything is touched, with the report.
        redis_member = next(m for m in sets[0].members if m.source == "redis.cache")
        (service["repo"] / (redis_member.path + ".manifest.json")).unlink()
        (listed,) = plan.sets()
        assert not listed.complete and "redis.cache" in listed.problem
        with pytest.raises(mevbackup.Error) as e:
            plan.restore(listed, dry_run=True)
        assert e.value.report is not None and not e.value.report.ok
        assert e.value.report.code == e.value.code != 0
        assert "not complete" in e.value.message and "redis.cache" in e.value.message


def test_restore_dry_run_changes_nothing_and_a_restore_brings_the_service_back(pgenv, plan_redis, service):
    db = service["db"]
    with mevbackup.Plan(service["plan"]()) as plan:
        ran = plan.run()
        counts = pgenv.row_counts(db)
        keys = plan_redis.snapshot()

        pgenv.psql("DROP TABLE transaction_protections", db)
        (service["app"] / "nginx" / "nginx.conf").unlink()
        service["log"].write_text("")

        dry = plan.restore(dry_run=True)
        assert dry.ok and dry.operation == "restore" and dry.set_id == ran.set_id
        assert dry.steps[0].name == "set" and dry.steps[0].status == "ok"
        assert [s.status for s in dry.steps[1:]] == ["planned"] * 6
        assert {s.name for s in dry.steps} >= MEMBERS
        assert not table_exists(pgenv, db, "transaction_protections")
        assert not (service["app"] / "nginx" / "nginx.conf").exists()
        assert service["log"].read_text() == ""

        rep = plan.restore(ran.set_id)
        assert rep.ok and rep.code == 0 and rep.set_id == ran.set_id
        assert [s.name for s in rep.steps] == [
            "set", "hook before_restore[1]", "postgres.main", "redis.cache", "files.config",
            "hook after_restore[1]", "hook after_restore[2]"]
        assert all(s.status == "ok" for s in rep.steps)
        assert table_exists(pgenv, db, "transaction_protections")
        assert pgenv.row_counts(db) == counts
        same_data(keys, plan_redis.snapshot())
        assert (service["app"] / "nginx" / "nginx.conf").read_text().startswith("events")
        assert service["log"].read_text().split() == ["before_restore", "after_restore", "health"]


def test_a_failing_member_raises_with_the_report_naming_it(pgenv, service):
    with mevbackup.Plan(service["plan"]()) as good:
        first = good.run()
    with mevbackup.Plan(service["plan"](redis_url=f"redis://127.0.0.1:{free_port()}", name="broken.toml")) as plan:
        with pytest.raises(mevbackup.Error) as e:
            plan.run()
        rep = e.value.report
        assert rep is not None and not rep.ok and rep.code == e.value.code != 0
        assert type(e.value) is not mevbackup.Error  # the subclass of the code
        status = {s.name: s.status for s in rep.steps}
        assert status["redis.cache"] == "failed" and status["postgres.main"] == "ok"
        assert status["files.config"] == "ok" and status["set"] == "skipped"
        assert status["hook after_backup[1]"] == "ok"  # the after-hooks undid the before-hooks
        failed = next(s for s in rep.steps if s.status == "failed")
        assert failed.name == "redis.cache" and failed.message
        assert "redis.cache" in rep.message and "no backup set was written" in rep.message
        assert rep.set_id == ""
        # No set was written: the earlier one is still the only, and complete.
        assert [(s.id, s.complete) for s in plan.sets()] == [(first.set_id, True)]


def test_cancel_from_another_thread_kills_the_running_hook(pgenv, service, tmp_path):
    started = tmp_path / "hook-started"
    # The hook sleeps only the first time: the second run shows the plan runs again.
    hooks = f'[hooks]\nbefore_backup = ["if [ ! -e {started} ]; then touch {started}; sleep 60; fi"]\n'
    with mevbackup.Plan(service["plan"](hooks=hooks)) as plan:

        def cancel_once_the_hook_runs():
            deadline = time.monotonic() + 60
            while not started.exists() and time.monotonic() < deadline:
                time.sleep(0.02)
            plan.cancel()

        canceller = threading.Thread(target=cancel_once_the_hook_runs)
        t = time.monotonic()
        canceller.start()
        try:
            with pytest.raises(mevbackup.Cancelled) as e:
                plan.run()
        finally:
            canceller.join()
        assert time.monotonic() - t < 30  # not the hook's 60 s
        rep = e.value.report
        assert rep is not None and not rep.ok and rep.code == mevbackup.Cancelled.code
        assert rep.steps[0].name == "hook before_backup[1]" and rep.steps[0].status == "failed"
        assert "cancelled" in rep.steps[0].message
        assert not {s.name for s in rep.steps} & MEMBERS  # no member was backed up
        assert plan.sets() == []

        again = plan.run()
        assert again.ok and [s.complete for s in plan.sets()] == [True]


def test_an_exception_in_progress_cancels_and_is_raised_with_the_report_behind_it(pgenv, service):
    def progress(p):
        raise ValueError("stop here")

    with mevbackup.Plan(service["plan"]()) as plan:
        with pytest.raises(ValueError, match="stop here") as e:
            plan.run(progress=progress)
        behind = e.value.__context__
        assert isinstance(behind, mevbackup.Error) and behind.report is not None
        assert not behind.report.ok and any(s.status == "failed" for s in behind.report.steps)
        assert plan.sets() == []


def test_bad_plans_and_misuse_raise_clearly(service, tmp_path):
    bad = service["plan"](extra='[postgres.other]\ndbname = "dbname=x"\nverify_querys = ["SELECT 1"]\n')
    with pytest.raises(mevbackup.InvalidArgument) as e:
        mevbackup.Plan(bad)
    assert f"{bad}:" in e.value.message and "postgres.other.verify_querys" in e.value.message
    with pytest.raises(mevbackup.NotFound) as e:
        mevbackup.Plan(tmp_path / "missing.toml")
    assert "missing.toml" in e.value.message
    with pytest.raises(TypeError, match="Plan\\(\\) got an unexpected keyword argument 'bucket'"):
        mevbackup.Plan(service["plan"](), bucket="x")

    plan = mevbackup.Plan(service["plan"](), no_lock=True, stall_timeout_seconds=60)
    repo = plan.repository()
    plan.close()
    plan.close()
    with pytest.raises(mevbackup.InvalidArgument, match="closed"):
        plan.run()
    with repo:  # the repository outlives its plan
        assert repo.backup_sets() == []


def test_the_plan_run_example(pg, service):
    env = pg.env()
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "bindings" / "python"), env.get("PYTHONPATH", ""))
                                        if p)
    example = ROOT / "examples" / "python" / "plan_run.py"
    r = subprocess.run([sys.executable, str(example), str(service["plan"]())], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1].startswith("set mev_") and "3 members, complete" in lines[-1], r.stdout
    assert any(line.startswith("ok") and "postgres.main" in line for line in lines), r.stdout

    broken = service["plan"](redis_url=f"redis://127.0.0.1:{free_port()}", name="broken.toml")
    r = subprocess.run([sys.executable, str(example), str(broken)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1
    assert any(line.startswith("failed") and "redis.cache" in line for line in r.stdout.splitlines()), r.stdout
    assert "redis.cache" in r.stderr and "no backup set was written" in r.stderr
