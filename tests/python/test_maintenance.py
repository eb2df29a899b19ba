"""prune, verify and check through the CLI and Python against real backups."""

import json
import re
import subprocess
from pathlib import Path

import pytest

import mevbackup


def make_backups(cli, pg, repo, n):
    ids = []
    for _ in range(n):
        # not --quiet: the backup line names the new id
        r = cli("backup", "postgres", "--repo", repo, "--dbname", pg.conninfo("mev_protection"))
        assert r.returncode == 0, r.stderr
        ids.append(r.stdout.split()[1].rstrip(":"))
    return ids


def test_verify_with_restore_test_and_queries(pg, cli, repo):
    make_backups(cli, pg, repo, 1)
    r = cli("verify", "--repo", repo, "--backup", "latest", "--restore-test", pg.conninfo("postgres"),
            "--query", "SELECT COUNT(*) FROM mev_threats", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads(r.stdout)["results"][0]
    assert res["outcome"] == "ok"
    checks = {c["check"]: c for c in res["checks"]}
    assert checks["rows public.mev_threats"]["ok"] and "2000 rows, 2000 at dump time" in checks["rows public.mev_threats"]["detail"]
    assert checks["query"]["detail"] == "2000"
    # The scratch database is gone.
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'mevb_verify_%'") == "0"
    # The outcome is recorded beside the backup.
    rec = list((repo / "database").glob("*.verify.json"))
    assert len(rec) == 1 and json.loads(rec[0].read_text())["outcome"] == "ok"


def test_verify_fails_a_flipped_byte_naming_the_backup(pg, cli, repo):
    ids = make_backups(cli, pg, repo, 1)
    artifact = next((repo / "database").glob("*.dump.gz"))
    data = bytearray(artifact.read_bytes())
    data[100] ^= 0x04
    artifact.write_bytes(bytes(data))
    r = cli("verify", "--repo", repo, "--backup", "all")
    assert r.returncode == 1
    assert f"FAILED {ids[0]}" in r.stdout


def test_failing_query_fails_the_run_and_records_nothing(pg, cli, repo):
    # A query that cannot run (a typo) says nothing about the backup: recording it as a
    # failed verification would let prune delete a good backup.
    make_backups(cli, pg, repo, 1)
    r = cli("verify", "--repo", repo, "--restore-test", pg.conninfo("postgres"), "--query", "SELECT * FROM nope")
    assert r.returncode == 1
    assert "nope" in r.stderr and "nothing recorded" in r.stderr
    assert not list((repo / "database").glob("*.verify.json"))
    assert pg.psql("SELECT count(*) FROM pg_database WHERE datname LIKE 'mevb_verify_%'") == "0"


def test_verify_with_the_restore_test_server_down_keeps_the_good_record(pg, cli, repo):
    ids = make_backups(cli, pg, repo, 1)
    assert cli("verify", "--repo", repo, "--backup", "all").returncode == 0
    record = next((repo / "database").glob("*.verify.json"))
    before = record.read_bytes()
    import socket
    with socket.socket() as s:  # a port where nothing listens: connections are refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = cli("verify", "--repo", repo, "--backup", "all", "--restore-test",
            f"host=127.0.0.1 port={port} dbname=postgres user=nobody connect_timeout=5")
    assert r.returncode == 1
    assert f"could not verify {ids[0]}" in r.stderr and "nothing recorded" in r.stderr
    assert record.read_bytes() == before


def test_prune_cli_dry_run_then_delete(pg, cli, repo):
    import time
    ids = []
    for _ in range(3):
        ids += make_backups(cli, pg, repo, 1)
        time.sleep(1.05)
    assert cli("prune", "--repo", repo).returncode == 2  # a policy is required
    r = cli("prune", "--repo", repo, "--keep-last", "2", "--dry-run", check=True)
    assert f"would delete {ids[0]}: matches no keep rule" in r.stdout
    assert len(json.loads(cli("list", "--repo", repo, "--json").stdout)) == 3
    r = cli("prune", "--repo", repo, "--keep-last", "2", "--json", check=True)
    out = json.loads(r.stdout)
    assert out["deleted"] == 1
    assert [x["id"] for x in json.loads(cli("list", "--repo", repo, "--json").stdout)] == ids[1:]
    assert not any(ids[0] in p.name for p in repo.rglob("*"))
    # keep-days far in the future still keeps the newest: backups stopping never empties the repo.
    r = cli("prune", "--repo", repo, "--keep-days", "30", "--now", "2030-01-01T00:00:00Z", check=True)
    assert [x["id"] for x in json.loads(cli("list", "--repo", repo, "--json").stdout)] == ids[2:]


def test_check_exit_codes_and_prometheus(pg, cli, repo, tmp_path):
    r = cli("check", "--repo", repo, "--max-age", "25h")
    assert r.returncode == 2 and r.stdout.startswith("MEVBACKUP CRITICAL")
    make_backups(cli, pg, repo, 1)
    listing = json.loads(cli("list", "--repo", repo, "--json").stdout)
    assert cli("check", "--repo", repo, "--max-age", "25h").returncode == 0
    created = listing[0]["created_at"]
    day = created[:10]
    # 21 h later: OK; 26 h later: WARNING (past max-age); 51 h later: CRITICAL (past twice).
    from datetime import datetime, timedelta, timezone
    t0 = datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    fmt = lambda d: (t0 + d).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    assert cli("check", "--repo", repo, "--max-age", "25h", "--now", fmt(timedelta(hours=21))).returncode == 0
    r = cli("check", "--repo", repo, "--max-age", "25h", "--now", fmt(timedelta(hours=26)))
    assert r.returncode == 1 and r.stdout.startswith("MEVBACKUP WARNING"), r.stdout
    # (the age counts from when the backup finished, a moment after created_at)
    assert re.search(r" \| age=93[56][0-9]{2}s;90000;180000;0 size=[0-9]+B;;;0$", r.stdout.strip()), r.stdout
    r = cli("check", "--repo", repo, "--max-age", "25h", "--now", fmt(timedelta(hours=51)), "--json")
    assert r.returncode == 2
    assert json.loads(r.stdout)["groups"][0]["status"] == "CRITICAL"
    # Thresholds of their own: --warning / --critical.
    r = cli("check", "--repo", repo, "--max-age", "25h", "--warning", "2h", "--critical", "3h",
            "--now", fmt(timedelta(hours=4)))
    assert r.returncode == 2 and re.search(r"age=14[34][0-9]{2}s;7200;10800;0", r.stdout), r.stdout
    r = cli("check", "--repo", repo, "--max-age", "25h", "--warning", "3h", "--critical", "2h")
    assert r.returncode == 3 and "critical (2h00m) must not be shorter than warning (3h00m)" in r.stdout, r.stdout
    assert cli("check", "--repo", repo, "--max-age", "banana").returncode == 3
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = cli("check", "--repo", blocker, "--max-age", "25h")
    assert r.returncode == 3 and "UNKNOWN" in r.stdout

    prom = tmp_path / "mevbackup.prom"
    assert cli("check", "--repo", repo, "--max-age", "25h", "--prometheus", prom).returncode == 0
    text = prom.read_text()
    sample = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\]|\\.)*",?)*\})? [-+0-9.eE]+$')
    names = set()
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) [a-z_]+ ", line), line
            continue
        assert sample.match(line), line
        names.add(line.split("{")[0].split(" ")[0])
    assert {"mevbackup_last_success_timestamp_seconds", "mevbackup_last_backup_size_bytes",
            "mevbackup_backups"} <= names
    assert f'kind="postgres",source="mev_protection"' in text
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    assert day in created


PROMTOOL = "/usr/bin/promtool"
DOCS = Path(__file__).resolve().parents[2] / "docs"


def promtool(*args, stdin=None):
    return subprocess.run([PROMTOOL, *map(str, args)], input=stdin, capture_output=True, text=True, timeout=120)


def test_textfile_passes_promtool_and_a_missing_repository_is_down(pg, cli, repo, tmp_path):
    prom = tmp_path / "mevbackup.prom"
    # A mistyped repository: CRITICAL, and the series the "down" alert fires on.
    r = cli("check", "--repo", tmp_path / "no-such-repo", "--max-age", "25h", "--prometheus", prom)
    assert r.returncode == 2 and "does not exist" in r.stdout, r.stdout
    assert "mevbackup_repository_up 0\n" in prom.read_text()
    lint = promtool("check", "metrics", stdin=prom.read_text())
    assert lint.returncode == 0, lint.stdout + lint.stderr
    make_backups(cli, pg, repo, 1)
    assert cli("check", "--repo", repo, "--max-age", "25h", "--prometheus", prom).returncode == 0
    text = prom.read_text()
    assert "mevbackup_repository_up 1\n" in text and "mevbackup_backups{" in text
    lint = promtool("check", "metrics", stdin=text)
    assert lint.returncode == 0 and lint.stdout.strip() == "" and lint.stderr.strip() == "", lint.stdout + lint.stderr


def test_alert_rules_are_valid_and_fire(tmp_path):
    rules = DOCS / "mevbackup.rules.yml"
    r = promtool("check", "rules", rules)
    assert r.returncode == 0, r.stdout + r.stderr
    # Each alert fires on the situation it is for, and stays quiet on a healthy host.
    (tmp_path / "rules.yml").write_text(rules.read_text())
    (tmp_path / "test.yml").write_text(ALERT_TESTS)
    r = promtool("test", "rules", tmp_path / "test.yml")
    assert r.returncode == 0, r.stdout + r.stderr


ALERT_TESTS = """
rule_files: [rules.yml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # healthy: every backup 1 h old when checked, the textfile rewritten every minute
      - series: 'mevbackup_repository_up{instance="ok"}'
        values: '1+0x2000'
      - series: 'mevbackup_last_success_timestamp_seconds{instance="ok",kind="postgres",source="db"}'
        values: '-3600+60x2000'
      - series: 'node_textfile_mtime_seconds{instance="ok",file="/var/lib/node_exporter/mevbackup.prom"}'
        values: '0+60x2000'
      # stale: the newest backup finished at time 0, none since; the check still runs
      - series: 'mevbackup_repository_up{instance="stale"}'
        values: '1+0x2000'
      - series: 'mevbackup_last_success_timestamp_seconds{instance="stale",kind="postgres",source="db"}'
        values: '0+0x2000'
      - series: 'node_textfile_mtime_seconds{instance="stale",file="/var/lib/node_exporter/mevbackup.prom"}'
        values: '0+60x2000'
      # down: the repository cannot be read (or does not exist)
      - series: 'mevbackup_repository_up{instance="down"}'
        values: '0+0x2000'
      - series: 'node_textfile_mtime_seconds{instance="down",file="/var/lib/node_exporter/mevbackup.prom"}'
        values: '0+60x2000'
    alert_rule_test:
      - eval_time: 10h
        alertname: MevbackupBackupStale
        exp_alerts: []
      - eval_time: 30h
        alertname: MevbackupBackupStale
        exp_alerts:
          - exp_labels: {severity: critical, instance: stale, kind: postgres, source: db}
            exp_annotations:
              summary: "No postgres backup of db has finished for more than 25 hours"
      - eval_time: 1h
        alertname: MevbackupRepositoryDown
        exp_alerts:
          - exp_labels: {severity: critical, instance: down}
            exp_annotations:
              summary: "mevbackup check cannot read the backup repository on down"
      - eval_time: 30h
        alertname: MevbackupTextfileStale
        exp_alerts: []
  - interval: 1m
    input_series:
      # silent: the check stopped running at time 0 (its last textfile still says all is well)
      - series: 'mevbackup_repository_up{instance="silent"}'
        values: '1+0x2000'
      - series: 'mevbackup_last_success_timestamp_seconds{instance="silent",kind="postgres",source="db"}'
        values: '-3600+0x2000'
      - series: 'node_textfile_mtime_seconds{instance="silent",file="/var/lib/node_exporter/mevbackup.prom"}'
        values: '0+0x2000'
    alert_rule_test:
      - eval_time: 1h
        alertname: MevbackupTextfileStale
        exp_alerts: []
      - eval_time: 3h
        alertname: MevbackupTextfileStale
        exp_alerts:
          - exp_labels: {severity: critical, instance: silent, file: /var/lib/node_exporter/mevbackup.prom}
            exp_annotations:
              summary: "The mevbackup textfile on silent has not been rewritten for more than 2 hours"
"""


def test_python_prune_verify_check(pgenv_repo):
    pg, repo = pgenv_repo
    with mevbackup.Repository(repo) as r:
        b = r.backup_postgres(pg.conninfo("mev_protection"))
        rep = r.verify("all", restore_test=pg.conninfo("postgres"), queries=["SELECT 1"])
        assert rep.status == 0 and rep.data["results"][0]["id"] == b.id
        assert r.check(max_age_seconds=3600).status == 0
        assert r.check(max_age_seconds=3600, now="2099-01-01T00:00:00Z").status == 2
        rep = r.prune(keep_last=1, dry_run=True)
        assert rep.status == 0 and rep.data["decisions"][0]["action"] == "keep"
        with pytest.raises(mevbackup.InvalidArgument) as e:
            r.prune(keep_last=0)
        assert "keep-last must be at least 1" in str(e.value)


@pytest.fixture
def pgenv_repo(pg, repo, monkeypatch):
    monkeypatch.setenv("PGPASSWORD", pg.password)
    return pg, repo
