#!/usr/bin/env python3
"""The README's first command, the main job end to end with the mevbackup CLI against
throwaway servers on 127.0.0.1: back up a sample PostgreSQL database, a Redis instance
and a set of configuration files into a local repository, restore each, compare, and
show the repository's catalog, verification and freshness check."""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from pgserver import PgServer  # noqa: E402
from redisserver import RedisServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repo", required=True, help="backup repository (a local directory)")
    ap.add_argument("--cli", required=True, help="path of the mevbackup program")
    ap.add_argument("--rows", type=int, default=5000)
    args = ap.parse_args()

    with PgServer() as pg, RedisServer(password="demo-redis-pw") as rds:
        print(f"PostgreSQL {pg.psql('SHOW server_version')} on 127.0.0.1:{pg.port}, Redis on 127.0.0.1:{rds.port}")
        pg.create_sample("mev_protection", rows=args.rows)
        rds.fill_sample(500)
        env = pg.env()  # passwords travel in the environment, never on a command line
        env["MEVBACKUP_REDIS_PASSWORD"] = "demo-redis-pw"

        def run(*argv, check=True):
            print("$ mevbackup " + " ".join(argv), flush=True)
            return subprocess.run([args.cli, *argv], env=env, check=check).returncode

        # 1. PostgreSQL: back up, restore into a new database, compare row counts.
        run("backup", "postgres", "--repo", args.repo, "--dbname", pg.conninfo("mev_protection"))
        run("restore", "postgres", "--repo", args.repo, "--backup", "latest", "--source", "mev_protection",
            "--dbname", pg.conninfo("mev_protection_restored"))
        before, after = pg.row_counts("mev_protection"), pg.row_counts("mev_protection_restored")
        print(f"\n{'table':<26}{'source':>10}{'restored':>10}")
        for table in sorted(before):
            print(f"{table:<26}{before[table]:>10}{after.get(table, 0):>10}")
        ok = before == after

        # 2. Redis: back up over the replication protocol, restore live into a second server.
        run("backup", "redis", "--repo", args.repo, "--redis-url", rds.url(), "--mode", "replication")
        with RedisServer(password="demo-redis-pw") as target:
            run("restore", "redis", "--repo", args.repo, "--backup", "latest", "--redis-url", target.url())
            src_keys, dst_keys = sum(rds.dbsizes().values()), sum(target.dbsizes().values())
        print(f"\nredis keys: source {src_keys}, restored {dst_keys}\n")
        ok = ok and src_keys == dst_keys

        # 3. Configuration files, secrets left out.
        conf = Path(tempfile.mkdtemp(prefix="mevb-demo-conf-"))
        try:
            (conf / "nginx").mkdir()
            (conf / "docker-compose.yml").write_text("services:\n  postgres:\n    image: postgres:15\n")
            (conf / "nginx" / "nginx.conf").write_text("events {}\nhttp { server { listen 80; } }\n")
            (conf / ".env").write_text("DB_PASSWORD=not-in-the-backup\n")
            run("backup", "files", "--repo", args.repo, "--base", str(conf), ".")
            restored = conf / "restored"
            run("restore", "files", "--repo", args.repo, "--backup", "latest", "--target", str(restored))
            same = (restored / "nginx" / "nginx.conf").read_text() == (conf / "nginx" / "nginx.conf").read_text()
            print(f"\nconfig files restored: {sorted(p.name for p in restored.rglob('*') if p.is_file())}"
                  f" (.env left out: {not (restored / '.env').exists()})\n")
            ok = ok and same and not (restored / ".env").exists()
        finally:
            shutil.rmtree(conf, ignore_errors=True)

        # 4. The catalog, a verification of everything, and the freshness check.
        run("list", "--repo", args.repo)
        ok = run("verify", "--repo", args.repo, "--backup", "all", check=False) == 0 and ok
        ok = run("check", "--repo", args.repo, "--max-age", "25h", check=False) == 0 and ok
        print("\nall restored data matches" if ok else "\nMISMATCH")
        print(f"backups are in {args.repo}")
        return 0 if ok else 1

if __name__ == "__main__":
    sys.exit(main())
