#!/usr/bin/python3
"""Opt-in benchmark: a 1-million-key Redis backed up in both modes, no fixed delay.

    MEVBACKUP_CLI=build/mevbackup /usr/bin/python3 bench/redis_1m.py [KEYS]

Prints the time of each backup and of an offline restore. Not part of the test run."""

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "support"))
from redisserver import RedisServer  # noqa: E402

keys = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
cli = os.environ.get("MEVBACKUP_CLI", str(Path(__file__).resolve().parents[1] / "build" / "mevbackup"))

with RedisServer() as r, tempfile.TemporaryDirectory() as repo:
    t = time.monotonic()
    r.cli("DEBUG", "POPULATE", str(keys), "key", "64", check=False)
    if r.dbsizes().get(0, 0) < keys:  # DEBUG disabled (enable-debug-command): fill by pipe
        batch = 100_000
        for start in range(0, keys, batch):
            r.pipe([["SET", f"key:{i}", "v" * 64] for i in range(start, min(keys, start + batch))])
    print(f"filled {r.dbsizes()[0]} keys in {time.monotonic() - t:.1f} s")
    for mode in ("bgsave", "replication"):
        t = time.monotonic()
        subprocess.run([cli, "backup", "redis", "--repo", repo, "--redis-url", r.url(), "--mode", mode, "--quiet"],
                       check=True)
        print(f"backup --mode {mode}: {time.monotonic() - t:.2f} s")
    target = tempfile.mkdtemp()
    t = time.monotonic()
    subprocess.run([cli, "restore", "redis", "--repo", repo, "--data-dir", target, "--quiet"], check=True)
    print(f"offline restore: {time.monotonic() - t:.2f} s")
