"""`mevbackup drill` (issue 19): the newest complete set restored into scratch targets on the
test servers (a database on the drill server, a throwaway redis-server on loopback, a scratch
directory), proved there, timed against the RTO and the set's age against the RPO; every
scratch target removed, also those a killed drill left behind."""

import gzip
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from test_drill_report import GREEN, WINDOW, _near, _screenshot
from test_plan import sets


def drill_section(pg, scratch: Path) -> str:
    scratch.mkdir(exist_ok=True)
    return f'''
[drill]
postgres = "{pg.conninfo("postgres")}"
redis = "spawn"
files = "{scratch}"
'''


def scratch_databases(pg) -> list:
    out = pg.psql("SELECT datname FROM pg_database WHERE datname LIKE 'mevb\\_drill\\_%'")
    return [line for line in out.split() if line]


def running(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def processes(text: str) -> list:
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmd:
            found.append((int(d.name), cmd))
    return found


def test_drill_proves_the_newest_set_and_writes_its_report(cli, pg, service, tmp_path):
    scratch = tmp_path / "scratch"
    plan = service["plan"](extra=drill_section(pg, scratch))
    assert cli("run", "--plan", plan).returncode == 0
    report = tmp_path / "report"
    r = cli("drill", "--plan", plan, "--report", report, "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    rep = json.loads(r.stdout)
    assert rep["operation"] == "drill" and rep["ok"] and rep["set"] == sets(cli, plan)[-1]["id"]
    names = [s["name"] for s in rep["steps"]]
    assert names == ["cleanup", "set", "postgres.main restore", "postgres.main checks", "redis.cache restore",
                     "redis.cache checks", "files.config restore", "files.config checks", "scratch cleanup"]
    assert all(s["status"] == "ok" for s in rep["steps"]), rep["steps"]
    steps = {s["name"]: s for s in rep["steps"]}

    # Every table's rows and the verify query, in the scratch database.
    pgc = steps["postgres.main checks"]["detail"]["checks"]
    assert {"rows public.mev_threats", "rows public.transaction_protections"} <= {c["check"] for c in pgc}
    assert all(c["ok"] for c in pgc)
    q = [c for c in pgc if c["check"] == "query"]
    assert q and q[0]["query"] == "SELECT COUNT(*) FROM mev_threats" and q[0]["detail"] == "300"
    # Redis: key counts per logical database and a sample of values and TTLs.
    rc = {c["check"]: c for c in steps["redis.cache checks"]["detail"]["checks"]}
    assert "keys db0" in rc and rc["keys db0"]["ok"]
    assert rc["sample"]["ok"] and "DEBUG DIGEST-VALUE" in rc["sample"]["detail"]
    # Files: every SHA-256.
    fc = steps["files.config checks"]["detail"]["checks"]
    assert fc[0]["ok"] and fc[0]["detail"].startswith("3 files")

    # Objectives: far below the 4 h RTO, a fresh set within the 24 h RPO.
    assert rep["rto_seconds"] == 14400 and rep["rto_ok"] and 0 < rep["seconds"] < 14400
    assert rep["rpo_seconds"] == 86400 and rep["rpo_ok"] and 0 <= rep["set_age_seconds"] < 3600

    # Nothing of the drill is left: no scratch database, directory or redis-server (its
    # process title names its port).
    port = steps["redis.cache restore"]["message"].rsplit(":", 1)[1]
    assert scratch_databases(pg) == []
    assert list(scratch.iterdir()) == []
    assert not [c for _, c in processes("redis-server") if f":{port}" in c]

    # The report: JSON, summary, a Prometheus textfile promtool accepts, the HTML page.
    files = rep["report_files"]
    assert json.loads(Path(files["json"]).read_text())["set"] == rep["set"]
    assert "PASSED" in Path(files["summary"]).read_text()
    prom = Path(files["prometheus"]).read_text()
    chk = subprocess.run(["promtool", "check", "metrics"], input=prom, capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    for series in ("mevbackup_drill_last_success_timestamp_seconds", "mevbackup_drill_duration_seconds",
                   "mevbackup_drill_rto_seconds", "mevbackup_drill_step_duration_seconds"):
        assert series + "{" in prom
    assert Path(files["html"]).read_text().lstrip().lower().startswith("<!doctype html>")
    # The page of a real drill renders in headless Chromium: the window's size, drawn, with
    # the green of its passed steps.
    from PIL import Image

    with Image.open(_screenshot(files["html"], tmp_path)) as im:
        assert im.size == WINDOW
        rgb = im.convert("RGB")
        pixels = [rgb.getpixel((x, y)) for y in range(0, WINDOW[1], 4) for x in range(0, WINDOW[0], 4)]
    background = max(set(pixels), key=pixels.count)
    assert sum(1 for p in pixels if p != background) > len(pixels) // 20
    assert sum(1 for p in pixels if _near(p, GREEN)) > 100


def test_a_failed_check_and_missed_objectives_fail_the_drill(cli, pg, service, tmp_path):
    scratch = tmp_path / "scratch"
    plan = service["plan"](extra=drill_section(pg, scratch))
    assert cli("run", "--plan", plan).returncode == 0
    text = plan.read_text()
    # A query that fails in the restored copy: a table the database never had.
    broken = text.replace('verify_queries = ["SELECT COUNT(*) FROM mev_threats"]',
                          'verify_queries = ["SELECT COUNT(*) FROM mev_threats_gone"]')
    assert broken != text
    plan.write_text(broken)
    r = cli("drill", "--plan", plan, "--json")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert not rep["ok"] and not rep["checks_ok"]
    failed = [s for s in rep["steps"] if s["status"] == "failed"]
    assert [s["name"] for s in failed] == ["postgres.main checks"]
    assert "mev_threats_gone" in failed[0]["message"]
    assert "postgres.main checks failed" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # The other sources were still proved, and everything was cleaned up.
    assert {s["name"]: s["status"] for s in rep["steps"]}["files.config checks"] == "ok"
    assert scratch_databases(pg) == [] and list(scratch.iterdir()) == []

    # An RTO the drill cannot meet (a verify query alone takes 1.5 s) and an RPO the set has
    # outlived (it is older than 1 s): both are named, and the exit status is 1.
    slow = text.replace('rpo = "24h"', 'rpo = "1s"').replace('rto = "4h"', 'rto = "1s"').replace(
        'verify_queries = ["SELECT COUNT(*) FROM mev_threats"]', 'verify_queries = ["SELECT pg_sleep(1.5)"]')
    plan.write_text(slow)
    time.sleep(1.1)
    r = cli("drill", "--plan", plan, "--json")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    assert rep["checks_ok"] and not rep["rto_ok"] and not rep["rpo_ok"] and not rep["ok"]
    assert "longer than the RTO of 1.0 s" in rep["message"] and "older than the RPO of 1.0 s" in rep["message"]


def test_the_next_drill_removes_what_a_killed_drill_left(cli, pg, service, tools, tmp_path):
    scratch = tmp_path / "scratch"
    plan = service["plan"](extra=drill_section(pg, scratch))
    assert cli("run", "--plan", plan).returncode == 0
    # Stopped (SIGSTOP, so nothing changes while we look) as soon as its scratch Redis has
    # written its pid file, then killed with SIGKILL: the scratch database (restored
    # before Redis), the directory and the running redis-server are left behind.
    p = subprocess.Popen([tools["cli"], "drill", "--plan", str(plan)], env=pg.env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    left = None
    while time.monotonic() < deadline and p.poll() is None:
        pids = list(scratch.glob("mevb_drill_*/redis/redis.pid"))
        if pids and pids[0].read_text().strip():
            os.kill(p.pid, signal.SIGSTOP)
            left = pids[0].parent.parent
            break
        time.sleep(0.01)
    assert left is not None, "the drill finished before its scratch Redis was seen"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert left.is_dir() and left.name.endswith(f"_{p.pid}")
    assert scratch_databases(pg) == [left.name]
    # redis-server rewrites its process title (no path in it): its pid file names it.
    rpid = int((left / "redis" / "redis.pid").read_text())
    assert running(rpid) and Path(f"/proc/{rpid}/comm").read_text().startswith("redis-server")

    r = cli("drill", "--plan", plan, "--json")
    assert r.returncode == 0, r.stderr
    cleanup = json.loads(r.stdout)["steps"][0]
    assert cleanup["name"] == "cleanup" and cleanup["status"] == "ok"
    assert f"database {left.name}" in cleanup["detail"]["removed"]
    assert f"directory {left}" in cleanup["detail"]["removed"]
    assert scratch_databases(pg) == [] and list(scratch.iterdir()) == []
    assert not running(rpid)


def test_a_drill_without_a_complete_set_or_scratch_server_says_so(cli, pg, service, tmp_path):
    scratch = tmp_path / "scratch"
    plan = service["plan"](extra=drill_section(pg, scratch))
    r = cli("drill", "--plan", plan)
    assert r.returncode != 0
    assert "no complete backup set" in r.stderr.lower() or "no backup set" in r.stderr.lower(), r.stderr
    assert list(scratch.iterdir()) == []

    assert cli("run", "--plan", plan).returncode == 0
    # A drill server that refuses connections: the PostgreSQL steps fail, the rest is proved.
    down = plan.read_text().replace(f'postgres = "{pg.conninfo("postgres")}"',
                                    'postgres = "host=127.0.0.1 port=1 user=postgres dbname=postgres connect_timeout=2"')
    plan.write_text(down)
    r = cli("drill", "--plan", plan, "--json")
    assert r.returncode == 1
    rep = json.loads(r.stdout)
    st = {s["name"]: s["status"] for s in rep["steps"]}
    assert st["cleanup"] == "failed" and st["postgres.main restore"] == "failed"
    assert st["postgres.main checks"] == "skipped" and st["redis.cache checks"] == "ok"
    assert st["files.config checks"] == "ok" and st["scratch cleanup"] == "ok"
    assert list(scratch.iterdir()) == []


def test_drill_of_an_encrypted_set_proves_the_plan_identity_decrypts_it(cli, pg, service, tmp_path):
    """The plan's recipients encrypt every member of the set; the drill restores it with the
    plan's identity, and a plan whose identity is another key fails the drill, naming it,
    with nothing of it left."""
    from test_encryption import keygen

    keys = tmp_path / "keys"
    keys.mkdir()
    recipient = keygen(keys / "backup.key")
    keygen(keys / "other.key")
    scratch = tmp_path / "scratch"
    repo_keys = f'recipients = ["{recipient}"]\nidentity = ["{keys / "backup.key"}"]'
    plan = service["plan"](extra=drill_section(pg, scratch), repository=repo_keys)
    r = cli("run", "--plan", plan, "--json")
    assert r.returncode == 0, r.stderr
    set_id = json.loads(r.stdout)["set"]
    members = json.loads((service["repo"] / "sets" / (set_id + ".set.json")).read_text())["members"]
    assert len(members) == 3
    for m in members:
        stored = service["repo"] / m["path"]
        assert stored.name.endswith(".age") and stored.read_bytes().startswith(b"age-encryption.org/v1\n"), m
    # The dump opens with stock age and gunzip.
    dump = [service["repo"] / m["path"] for m in members if m["kind"] == "postgres"][0]
    plain = subprocess.run(["age", "-d", "-i", str(keys / "backup.key"), str(dump)], capture_output=True)
    assert plain.returncode == 0 and gzip.decompress(plain.stdout).startswith(b"PGDMP")

    r = cli("drill", "--plan", plan, "--json")
    assert r.returncode == 0, r.stderr + r.stdout
    assert json.loads(r.stdout)["ok"]

    wrong = service["plan"](extra=drill_section(pg, scratch), name="wrong.toml",
                            repository=f'identity = ["{keys / "other.key"}"]')
    r = cli("drill", "--plan", wrong, "--json")
    assert r.returncode != 0
    assert "no identity matches" in r.stdout + r.stderr
    assert scratch_databases(pg) == []
    assert list(scratch.iterdir()) == []


def test_restore_and_drill_from_the_off_site_copy_alone(cli, pg, service, tmp_path):
    """A new host with only the copy: the set and its members were synced there by `run`;
    with the repository gone, `restore --plan --from` brings back a dropped table and the
    drill passes reading the copy."""
    copy = tmp_path / "offsite"
    scratch = tmp_path / "scratch"
    plan = service["plan"](extra=f'[[copy]]\nlocation = "{copy}"\n' + drill_section(pg, scratch))
    r = cli("run", "--plan", plan, "--json")
    assert r.returncode == 0, r.stderr
    set_id = json.loads(r.stdout)["set"]
    assert (copy / "sets" / (set_id + ".set.json")).read_bytes() == \
        (service["repo"] / "sets" / (set_id + ".set.json")).read_bytes()
    # The primary repository is lost.
    gone = tmp_path / "primary-was-here"
    service["repo"].rename(gone)
    pg.psql("DROP TABLE transaction_protections", service["db"])
    r = cli("restore", "--plan", plan, "--from", copy, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["set"] == set_id
    assert pg.psql("SELECT count(*) FROM transaction_protections", service["db"]) == "150"
    r = cli("drill", "--plan", plan, "--from", copy, "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    assert rep["ok"] and rep["set"] == set_id
    assert not service["repo"].exists()  # nothing read or wrote the missing repository
    assert scratch_databases(pg) == []


def test_a_full_scratch_directory_fails_the_drill_with_no_space_and_leaves_nothing(cli, pg, service, tools,
                                                                                   tmp_path):
    """The drill's scratch space is full (a 1 MiB tmpfs in a private mount namespace): the
    files step fails naming the lack of space, the other steps' scratch targets are removed
    and the set is untouched."""
    scratch = tmp_path / "tiny"
    scratch.mkdir()
    plan = service["plan"](extra=drill_section(pg, scratch))
    # Large enough that the files cannot fit in the scratch space.
    (service["app"] / "nginx" / "nginx.conf").write_bytes(os.urandom(3 << 20))
    assert cli("run", "--plan", plan).returncode == 0
    before = sorted(p.name for p in (service["repo"] / "sets").iterdir())
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            f'mount -t tmpfs -o size=1m tmpfs "{scratch}" && exec "$0" "$@"', tools["cli"],
            "drill", "--plan", str(plan), "--json"]
    r = subprocess.run(argv, capture_output=True, text=True, env=pg.env(), timeout=300)
    assert r.returncode != 0, r.stdout + r.stderr
    rep = json.loads(r.stdout)
    steps = {s["name"]: s for s in rep["steps"]}
    assert steps["files.config restore"]["status"] == "failed"
    # Not a restore that looks complete: libarchive's failed write is the step's failure.
    assert "No space left on device" in steps["files.config restore"]["message"], steps["files.config restore"]
    assert steps["files.config checks"]["status"] == "skipped"
    assert steps["postgres.main restore"]["status"] == "ok"
    assert steps["scratch cleanup"]["status"] == "ok"
    assert scratch_databases(pg) == []
    assert list(scratch.iterdir()) == []  # the tmpfs was private: here the directory stayed empty
    assert sorted(p.name for p in (service["repo"] / "sets").iterdir()) == before
