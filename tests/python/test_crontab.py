"""docs/operations.md's crontab runs as written: every line, with cron's environment,
against real PostgreSQL, Redis and S3 servers, exits 0 and prints nothing (cron mails any
output)."""
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))
from redisserver import RedisServer  # noqa: E402
from s3server import KEY, SECRET, S3rver, VerifyingProxy  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "backups"
CONFIG_FILES = ["docker-compose.yml", "nginx/nginx.conf", "monitoring/prometheus.yml", "init-db.sql",
                "requirements.txt", "alembic.ini"]


def crontab_of_the_docs():
    """(variables, [(schedule, command)]) between the crontab markers of docs/operations.md."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"<!-- crontab:begin -->\n```cron\n(.*?)```\n<!-- crontab:end -->", text, re.S)
    assert block, "docs/operations.md lacks the crontab markers"
    env, jobs = {}, []
    for line in block.group(1).splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if m:
            env[m.group(1)] = m.group(2)
            continue
        fields = line.split(None, 5)
        assert len(fields) == 6, f"not a cron line: {line!r}"
        assert "%" not in fields[5], f"cron turns % into a newline: {line!r}"
        jobs.append((" ".join(fields[:5]), fields[5]))
    return env, jobs


def test_the_crontab_covers_the_runbook():
    env, jobs = crontab_of_the_docs()
    commands = [c for _, c in jobs]
    assert env["PATH"].split(":")[0] == "/usr/local/bin"
    for what in ("backup postgres", "backup redis", "backup files", "prune", "sync --from", "verify", "check"):
        assert any(f"mevbackup {what}" in c for c in commands), what
    assert all("--quiet" in c for c in commands)
    verify = next(c for c in commands if "mevbackup verify" in c)
    assert "--kind postgres" in verify and "--restore-test" in verify
    assert "--prometheus" in next(c for c in commands if "mevbackup check" in c)


@pytest.fixture(scope="module")
def s3():
    server = S3rver([BUCKET]).start()
    proxy = VerifyingProxy(server).start()
    try:
        yield proxy
    finally:
        proxy.stop()
        server.stop()


def test_every_line_of_the_crontab_works_silently(pg, tools, s3, tmp_path):
    app, bindir = tmp_path / "app", tmp_path / "bin"
    for i, name in enumerate(CONFIG_FILES):
        (app / name).parent.mkdir(parents=True, exist_ok=True)
        (app / name).write_text(f"config file {i}\n")
    (app / ".env").write_text("SECRET=never-backed-up\n")
    bindir.mkdir()
    # The crontab's /usr/local/bin: where the built binary is installed.
    (bindir / "mevbackup").symlink_to(os.path.abspath(tools["cli"]))
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{pg.port}:*:{pg.user}:{pg.password}\n")
    passfile.chmod(0o600)
    textfile = tmp_path / "textfile"
    textfile.mkdir()
    offsite = f"s3://{BUCKET}/cron-{os.getpid()}"

    with RedisServer() as rds:
        rds.fill_sample(20)
        subst = [
            ('"host=postgres user=mev_user dbname=mev_protection"', f'"{pg.conninfo("mev_protection")}"'),
            ('"host=postgres user=mev_user dbname=postgres"', f'"{pg.conninfo("postgres")}"'),
            ("redis://redis:6379", rds.url()),
            ("s3://your-backup-bucket/mev-protection", f"{offsite} --endpoint-url {s3.endpoint}"),
            ("/var/lib/node_exporter/textfile", str(textfile)),
            ("/etc/mevbackup/pgpass", str(passfile)),
            ("/app", str(app)),
        ]

        def localize(s):
            for old, new in subst:
                s = s.replace(old, new)
            return s

        variables, jobs = crontab_of_the_docs()
        # cron's environment: HOME, LOGNAME, SHELL, PATH=/usr/bin:/bin, then the crontab's variables.
        env = {"HOME": str(tmp_path), "LOGNAME": "root", "SHELL": "/bin/sh", "PATH": "/usr/bin:/bin"}
        for k, v in variables.items():
            env[k] = localize(v)
        env["PATH"] = env["PATH"].replace("/usr/local/bin", str(bindir))
        env.update({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"})
        assert "AWS_ENDPOINT_URL" not in env
        for schedule, command in jobs:
            line = localize(command)
            r = subprocess.run(["/bin/sh", "-c", line], env=env, capture_output=True, text=True, timeout=600)
            assert (r.returncode, r.stdout, r.stderr) == (0, "", ""), (schedule, line, r.returncode, r.stdout, r.stderr)

    # What the night left behind: one backup of each kind, here and off-site, and the metrics.
    def kinds(repo, *extra):
        r = subprocess.run([tools["cli"], "list", "--repo", repo, "--json", *extra], env=env, capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return sorted(b["kind"] for b in json.loads(r.stdout))

    assert kinds(str(app / "backups")) == ["files", "postgres", "redis"]
    assert kinds(offsite, "--endpoint-url", s3.endpoint) == ["files", "postgres", "redis"]
    prom = (textfile / "mevbackup.prom").read_text()
    assert re.search(r"^mevbackup_\w+", prom, re.M), prom
