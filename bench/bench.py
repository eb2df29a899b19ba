#!/usr/bin/env python3
"""Backup/restore benchmark: libmevbackup against the runbook and the pg_dump floor.

Creates an MEV-style data set on a throwaway PostgreSQL (127.0.0.1), then times, in
one run and interleaved (round-robin, so drifts in machine load hit every contender
alike):
  floor        pg_dump -Fc -Z0 > /dev/null
  runbook      pg_dump --format=custom --file=X && gzip X          (the runbook's script)
  pg|gzip-6    pg_dump -Fc -Z0 | gzip -6 > X
  pg|pigz      pg_dump -Fc -Z0 | pigz -p2 > X
  pg|zstd-3    pg_dump -Fc -Z0 | zstd -3 -T2 > X
  mevb gzip    mevbackup backup postgres (default gzip = ISA-L level 1) into a local repository
  mevb + age   the same, encrypted to one age recipient (--recipient): encryption's overhead
  mevb gzip-6  ... --level 6 (libdeflate, parallel members)
  mevb zstd    ... --compress zstd
  mevb -> s3   ... into an S3 repository on the tests' S3 endpoint (s3rver), with --s3
and the restore paths (gunzip -c | pg_restore into a database made beforehand, the same
with its CREATE DATABASE timed as the runbook does it, mevbackup restore by default (in
sessions) and with --jobs 1, and for reference pg_restore --jobs from an uncompressed file
staged beforehand) into fresh databases (taking turns going first, each after a CHECKPOINT
and sync).
Prints medians, ratios against the runbook and the floor, output sizes, the peak RSS
of mevbackup, and writes everything as JSON.

  /usr/bin/python3 bench/bench.py --rows 1000000 --runs 3 --json docs/bench-results.json
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))
from pgserver import PgServer  # noqa: E402


def vm_hwm_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_timed(argv, env, shell=False):
    """Runs a command; returns (seconds, peak RSS in KiB of that process alone).

    The peak is the kernel's VmHWM of the process itself, sampled every 10 ms until it
    exits (wait4's ru_maxrss would also count children such as pg_dump)."""
    t0 = time.monotonic()
    p = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err_chunks = []
    reader = threading.Thread(target=lambda: err_chunks.append(p.stderr.read()))
    reader.start()
    peak = 0
    while True:
        peak = max(peak, vm_hwm_kib(p.pid))
        if p.poll() is not None:
            break
        time.sleep(0.01)
    elapsed = time.monotonic() - t0
    reader.join()
    err = b"".join(err_chunks).decode(errors="replace")
    p.stderr.close()
    if p.returncode != 0:
        raise RuntimeError(f"{argv} failed ({p.returncode}): {err.strip()[:500]}")
    return elapsed, peak


def create_dataset(pg, db, rows):
    pg.psql(f'CREATE DATABASE "{db}"')
    pg.psql(f"""
        CREATE TABLE mev_threats (
            id bigserial PRIMARY KEY, tx_hash text NOT NULL, block_number bigint NOT NULL,
            threat_type text NOT NULL, detected_at timestamptz NOT NULL, details jsonb NOT NULL);
        CREATE TABLE transaction_protections (
            id bigserial PRIMARY KEY, tx_hash text NOT NULL, protected boolean NOT NULL,
            created_at timestamptz NOT NULL, payload jsonb NOT NULL);
        INSERT INTO mev_threats (tx_hash, block_number, threat_type, detected_at, details)
          SELECT '0x' || md5(i::text) || md5((i * 7)::text), 18000000 + i / 150,
                 (ARRAY['sandwich','frontrun','backrun','liquidation'])[1 + i % 4],
                 timestamptz '2026-01-01' + i * interval '1 second',
                 jsonb_build_object('attacker', '0x' || md5((i % 9973)::text), 'victim', '0x' || md5(i::text),
                                    'profit_wei', (i::bigint * 7919) % 100000000, 'gas', 21000 + i % 500000,
                                    'path', jsonb_build_array('WETH', 'USDC', (ARRAY['DAI','USDT','WBTC'])[1 + i % 3]),
                                    'note', repeat(chr(97 + i % 26), 40 + i % 60))
          FROM generate_series(1, {rows}) AS i;
        INSERT INTO transaction_protections (tx_hash, protected, created_at, payload)
          SELECT '0x' || md5((i * 3)::text) || md5(i::text), i % 3 <> 0,
                 timestamptz '2026-01-01' + i * interval '1 second',
                 jsonb_build_object('route', (ARRAY['flashbots','mev-share','private'])[1 + i % 3],
                                    'bundle', md5((i * 13)::text), 'hints', jsonb_build_array(i % 10, i % 7),
                                    'memo', repeat(md5(i::text), 2 + i % 4))
          FROM generate_series(1, {rows}) AS i;
        CREATE INDEX ON mev_threats (threat_type);
        CREATE INDEX ON transaction_protections (created_at);
    """, db)
    pg.psql("VACUUM ANALYZE", db)
    return pg.psql(f"SELECT pg_database_size('{db}')")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows per table (1M: ~900 MB database)")
    ap.add_argument("--small-rows", type=int, default=110_000, help="rows per table of the small database (RSS flatness)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--restore-runs", type=int, default=1)
    ap.add_argument("--cli", default=str(ROOT / "build" / "mevbackup"))
    ap.add_argument("--s3", action="store_true", help="include a backup to the tests' S3 endpoint (s3rver)")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir on /tmp's filesystem)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    work = Path(args.work or tempfile.mkdtemp(prefix="mevb-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"rows": args.rows, "runs": args.runs, "machine": os.uname().nodename, "nproc": os.cpu_count(),
               "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "backup": {}, "restore": {}}
    with PgServer() as pg:
        bindir = pg.bindir
        env = pg.env()
        print(f"creating data set: 2 tables x {args.rows} rows ...", flush=True)
        t0 = time.monotonic()
        size = int(create_dataset(pg, "mev_bench", args.rows))
        small = int(create_dataset(pg, "mev_small", args.small_rows))
        print(f"  database {size / 2**20:.0f} MiB, small database {small / 2**20:.0f} MiB "
              f"({time.monotonic() - t0:.0f} s)", flush=True)
        results["database_bytes"] = size
        results["small_database_bytes"] = small
        ci = pg.conninfo("mev_bench")
        dump = f"{bindir}/pg_dump"

        def out(name):
            return str(work / name)

        def fresh_repo(name):
            d = work / name
            shutil.rmtree(d, ignore_errors=True)
            return str(d)

        def repo_size(d):
            return sum(p.stat().st_size for p in Path(d).rglob("*") if p.is_file() and not p.name.endswith(".json"))

        # Encryption's cost: the default backup again, encrypted to one age recipient.
        recipient = subprocess.run([args.cli, "key", "generate", "--identity", str(work / "bench-identity.txt"),
                                    "--no-signing-key", "--json"], capture_output=True, text=True, check=True)
        recipient = json.loads(recipient.stdout)["recipient"]
        contenders = [
            ("floor", lambda: (f"{dump} -Fc -Z0 -d '{ci}' > /dev/null", None, True)),
            ("runbook", lambda: (f"rm -f {out('rb.dump')} {out('rb.dump.gz')}; {dump} --no-owner --no-acl "
                                 f"--format=custom --file={out('rb.dump')} -d '{ci}' && gzip {out('rb.dump')}",
                                 out("rb.dump.gz"), True)),
            ("pg|gzip-6", lambda: (f"set -o pipefail; {dump} -Fc -Z0 -d '{ci}' | gzip -6 > {out('p.gz')}",
                                   out("p.gz"), True)),
            ("pg|pigz-p2", lambda: (f"set -o pipefail; {dump} -Fc -Z0 -d '{ci}' | pigz -p2 > {out('p.pigz')}",
                                    out("p.pigz"), True)),
            ("pg|zstd-3-T2", lambda: (f"set -o pipefail; {dump} -Fc -Z0 -d '{ci}' | zstd -q -3 -T2 > {out('p.zst')}",
                                      out("p.zst"), True)),
            ("mevb gzip (default)", lambda: ([args.cli, "backup", "postgres", "--quiet", "--repo",
                                              fresh_repo("r-gz"), "--dbname", ci], work / "r-gz", False)),
            ("mevb gzip + age", lambda: ([args.cli, "backup", "postgres", "--quiet", "--repo",
                                          fresh_repo("r-age"), "--dbname", ci, "--recipient", recipient],
                                         work / "r-age", False)),
            ("mevb gzip level 6", lambda: ([args.cli, "backup", "postgres", "--quiet", "--level", "6", "--repo",
                                            fresh_repo("r-gz6"), "--dbname", ci], work / "r-gz6", False)),
            ("mevb zstd", lambda: ([args.cli, "backup", "postgres", "--quiet", "--compress", "zstd", "--repo",
                                    fresh_repo("r-zst"), "--dbname", ci], work / "r-zst", False)),
            ("mevb gzip, small db", lambda: ([args.cli, "backup", "postgres", "--quiet", "--repo",
                                              fresh_repo("r-small"), "--dbname", pg.conninfo("mev_small")],
                                             work / "r-small", False)),
        ]
        s3 = None
        if args.s3:
            from s3server import KEY, SECRET, S3rver
            s3 = S3rver(["bench"]).start()
            env.update({"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": "us-east-1"})
            s3_runs = iter(range(10**6))
            contenders.append(("mevb gzip -> s3", lambda: ([args.cli, "backup", "postgres", "--quiet", "--repo",
                                                            f"s3://bench/run{next(s3_runs)}", "--endpoint-url",
                                                            f"http://127.0.0.1:{s3.port}", "--dbname", ci],
                                                           None, False)))
        times = {name: [] for name, _ in contenders}
        rss = {name: [] for name, _ in contenders}
        sizes = {}
        for run in range(args.runs):
            for name, make in contenders:
                cmd, output, shell = make()
                if shell:
                    secs, _ = run_timed(["bash", "-c", cmd], env)
                else:
                    secs, peak = run_timed(cmd, env)
                    rss[name].append(peak)
                times[name].append(secs)
                if output:
                    sizes[name] = repo_size(output) if Path(output).is_dir() else Path(output).stat().st_size
                print(f"  run {run + 1} {name:<22} {secs:7.2f} s", flush=True)

        floor = statistics.median(times["floor"])
        runbook = statistics.median(times["runbook"])
        gz6 = sizes.get("pg|gzip-6")
        print(f"\nbackup of a {size / 2**20:.0f} MiB database, median of {args.runs} (2 cores):")
        print(f"{'contender':<22}{'wall s':>9}{'x floor':>9}{'x runbook':>10}{'MiB out':>9}{'x gzip-6':>9}{'peak RSS MiB':>14}")
        for name, _ in contenders:
            m = statistics.median(times[name])
            sz = sizes.get(name)
            peak = max(rss[name]) / 1024 if rss[name] else None
            results["backup"][name] = {"median_s": m, "runs_s": times[name], "x_floor": m / floor,
                                       "x_runbook": m / runbook, "bytes": sz,
                                       "x_gzip6_size": (sz / gz6) if sz and gz6 else None,
                                       "peak_rss_mib": peak}
            print(f"{name:<22}{m:9.2f}{m / floor:9.2f}{m / runbook:10.2f}"
                  f"{(sz or 0) / 2**20:9.1f}{(sz / gz6 if sz and gz6 else 0):9.3f}"
                  f"{(f'{peak:.1f}' if peak else '-'):>14}")

        plain, enc = statistics.median(times["mevb gzip (default)"]), statistics.median(times["mevb gzip + age"])
        results["encryption"] = {"plain_median_s": plain, "encrypted_median_s": enc,
                                 "overhead_pct": (enc / plain - 1) * 100,
                                 "encrypted_peak_rss_mib": max(rss["mevb gzip + age"]) / 1024}
        print(f"\nencryption (age, one recipient) on the default backup: {enc:.2f} s against {plain:.2f} s, "
              f"{(enc / plain - 1) * 100:+.1f} %; peak RSS {max(rss['mevb gzip + age']) / 1024:.1f} MiB")

        # Restore: the same artifact, stock pipeline vs mevbackup, each into a fresh database.
        # "gunzip -c | pg_restore" restores into a database created before the clock starts;
        # "createdb + gunzip | pg_restore" times the runbook's restore as written, whose
        # CREATE DATABASE is part of it (mevbackup's time includes its own CREATE DATABASE
        # of the staging database, too).
        art = next(p for p in (work / "r-gz").rglob("*.dump.gz"))
        stock_cmd = (f"set -o pipefail; gunzip -c {art} | {bindir}/pg_restore --no-owner --no-acl "
                     f"--single-transaction -d '{{}}'")
        # "mevb restore" is the default (sessions, one per core, at most 4, each streaming the
        # artifact); "mevb restore --jobs 1" is one stream in one session, as the stock one.
        rtimes = {"gunzip -c | pg_restore": [], "createdb + gunzip | pg_restore": [], "mevb restore": [],
                  "mevb restore --jobs 1": []}
        rrss = {"mevb restore": [], "mevb restore --jobs 1": []}
        # The peer's parallel restore, for reference: pg_restore --jobs needs a seekable file,
        # so the dump is inflated into one before the clock starts (not timed), and it loads
        # into a database made beforehand.
        ncores = max(1, min(4, os.cpu_count() or 1))
        plain = work / "plain.dump"
        subprocess.run(f"gunzip -c {art} > {plain}", shell=True, check=True)
        ref = f"pg_restore -j {ncores} (uncompressed file, staged beforehand)"
        rtimes[ref] = []
        names = list(rtimes)
        for run in range(args.restore_runs):
            # Each contender goes first in turn, and starts with the server's dirty buffers
            # and the kernel's page cache written out (CHECKPOINT, sync): none pays for the
            # writes of the restore before it.
            for name in names[run % len(names):] + names[:run % len(names)]:
                db = f"restore_{run}_{names.index(name)}"
                pg.psql("CHECKPOINT")
                os.sync()
                if name == "gunzip -c | pg_restore":
                    pg.psql(f'CREATE DATABASE "{db}"')
                    secs, _ = run_timed(["bash", "-c", stock_cmd.format(pg.conninfo(db))], env)
                elif name == ref:
                    pg.psql(f'CREATE DATABASE "{db}"')
                    secs, _ = run_timed([f"{bindir}/pg_restore", "--no-owner", "--no-acl", "-j", str(ncores), "-d",
                                         pg.conninfo(db), str(plain)], env)
                elif name.startswith("createdb"):
                    secs, _ = run_timed(["bash", "-c", f"{bindir}/psql -X -q -d '{pg.conninfo()}' "
                                                       f"-c 'CREATE DATABASE \"{db}\"' && "
                                                       + stock_cmd.format(pg.conninfo(db))], env)
                else:
                    secs, peak = run_timed([args.cli, "restore", "postgres", "--quiet", "--repo", str(work / "r-gz"),
                                            "--dbname", pg.conninfo(db)] + name.split()[2:], env)
                    rrss[name].append(peak)
                rtimes[name].append(secs)
                pg.psql(f'DROP DATABASE "{db}"')
                print(f"  restore run {run + 1} {name:<48} {secs:7.2f} s", flush=True)
        stock = statistics.median(rtimes["gunzip -c | pg_restore"])
        stock_c = statistics.median(rtimes["createdb + gunzip | pg_restore"])
        print(f"\nrestore of the default backup, median of {args.restore_runs}:")
        print(f"{'contender':<50}{'wall s':>9}{'x stock':>9}{'x createdb+stock':>18}")
        for name, ts in rtimes.items():
            m = statistics.median(ts)
            results["restore"][name] = {"median_s": m, "runs_s": ts, "x_stock": m / stock,
                                        "x_createdb_stock": m / stock_c}
            print(f"{name:<50}{m:9.2f}{m / stock:9.2f}{m / stock_c:18.2f}")
        for name, peaks in rrss.items():
            results["restore"][name]["peak_rss_mib"] = max(peaks) / 1024 if peaks else None
        if s3:
            s3.stop()
    shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"\nwritten to {args.json}")


if __name__ == "__main__":
    main()
