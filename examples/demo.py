#!/usr/bin/env python3
"""The README's first command: back up a sample database and restore it, with the
mevbackup CLI, against a throwaway PostgreSQL on 127.0.0.1."""

import argparse
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from pgserver import PgServer  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repo", required=True, help="backup repository (a local directory)")
    ap.add_argument("--cli", required=True, help="path of the mevbackup program")
    ap.add_argument("--rows", type=int, default=5000)
    args = ap.parse_args()

    with PgServer() as pg:
        print(f"PostgreSQL {pg.psql('SHOW server_version')} running on 127.0.0.1:{pg.port}")
        pg.create_sample("mev_protection", rows=args.rows)
        env = pg.env()  # the password travels in PGPASSWORD, never on a command line

        def run(*argv):
            print("$ mevbackup " + " ".join(argv), flush=True)
            subprocess.run([args.cli, *argv], env=env, check=True)

        run("backup", "postgres", "--repo", args.repo, "--dbname", pg.conninfo("mev_protection"))
        run("list", "--repo", args.repo)
        run("restore", "postgres", "--repo", args.repo, "--backup", "latest", "--source", "mev_protection",
            "--dbname", pg.conninfo("mev_protection_restored"))

        before, after = pg.row_counts("mev_protection"), pg.row_counts("mev_protection_restored")
        print(f"\n{'table':<26}{'source':>10}{'restored':>10}")
        for table in sorted(before):
            print(f"{table:<26}{before[table]:>10}{after.get(table, 0):>10}")
        ok = before == after
        print("\nrow counts match" if ok else "\nROW COUNTS DIFFER")
        print(f"backups are in {args.repo}")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
