"""A throwaway PostgreSQL server for tests and the demo: initdb in a temporary
directory, listening on 127.0.0.1 only (no Unix socket), on a free port, with
password (SCRAM) authentication. As root, the server runs as the postgres user
(initdb refuses root)."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from typing import Dict, List, Optional


def _bindir() -> str:
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                  key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if not dirs:
        raise RuntimeError("initdb not found: install postgresql-15 (scripts/install-deps.sh does)")
    return os.path.dirname(dirs[-1])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    def __init__(self, extra_opts: str = "") -> None:
        self.bindir = _bindir()
        self.root = tempfile.mkdtemp(prefix="mevb-pg-")
        os.chmod(self.root, 0o755)
        self.data = os.path.join(self.root, "data")
        self.log = os.path.join(self.root, "server.log")
        self.port = free_port()
        self.user = "postgres"
        self.password = secrets.token_hex(12)
        self._as_postgres = os.geteuid() == 0
        self.started = False
        self.extra_opts = extra_opts  # more "-c name=value" server options (PITR tests)

    # -- running things as the server's owner
    def _run_owner(self, argv: List[str], **kw) -> subprocess.CompletedProcess:
        if self._as_postgres:
            argv = ["runuser", "-u", "postgres", "--"] + argv
        return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)

    def start(self) -> "PgServer":
        pwfile = os.path.join(self.root, "pwfile")
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(pwfile, "postgres", "postgres")
        try:
            self._run_owner([f"{self.bindir}/initdb", "-D", self.data, "-U", self.user, "--pwfile", pwfile,
                             "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8",
                             "--locale=C", "--no-sync"])
        finally:
            os.unlink(pwfile)
        opts = (f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories='' "
                f"-c fsync=off -c full_page_writes=off -c max_connections=50")
        if self.extra_opts:
            opts += " " + self.extra_opts
        self._run_owner([f"{self.bindir}/pg_ctl", "-D", self.data, "-l", self.log, "-o", opts, "-w", "-t", "60",
                         "start"])
        self.started = True
        return self

    def stop(self) -> None:
        if self.started:
            try:
                self._run_owner([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop"])
            except subprocess.CalledProcessError:
                pass
            self.started = False
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> "PgServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients
    def conninfo(self, dbname: str = "postgres", **extra: str) -> str:
        """A conninfo without the password (it travels in PGPASSWORD, see env())."""
        parts = [f"host=127.0.0.1 port={self.port} user={self.user} dbname={dbname}"]
        parts += [f"{k}={v}" for k, v in extra.items()]
        return " ".join(parts)

    def env(self, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        e = dict(os.environ if base is None else base)
        e["PGPASSWORD"] = self.password
        return e

    def psql(self, sql: str, dbname: str = "postgres", check: bool = True) -> str:
        r = subprocess.run([f"{self.bindir}/psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d",
                            self.conninfo(dbname), "-c", sql], capture_output=True, text=True, env=self.env())
        if check and r.returncode != 0:
            raise RuntimeError(f"psql failed: {r.stderr.strip()}")
        return r.stdout.strip()

    def create_sample(self, dbname: str, rows: int = 1000) -> None:
        """A small MEV-style database: two tables with jsonb, a view, an index."""
        self.psql(f'CREATE DATABASE "{dbname}"')
        self.psql(f"""
            CREATE TABLE mev_threats (
                id bigserial PRIMARY KEY, tx_hash text NOT NULL, threat_type text NOT NULL,
                detected_at timestamptz NOT NULL DEFAULT now(), details jsonb NOT NULL);
            CREATE TABLE transaction_protections (
                id bigserial PRIMARY KEY, tx_hash text NOT NULL, protected boolean NOT NULL,
                payload jsonb);
            INSERT INTO mev_threats (tx_hash, threat_type, details)
                SELECT md5(i::text), (ARRAY['sandwich','frontrun','backrun'])[1 + i % 3],
                       jsonb_build_object('block', i, 'value', i * 1.5, 'note', repeat('x', i % 50))
                FROM generate_series(1, {rows}) AS i;
            INSERT INTO transaction_protections (tx_hash, protected, payload)
                SELECT md5(i::text), i % 2 = 0, jsonb_build_object('i', i)
                FROM generate_series(1, {rows // 2}) AS i;
            CREATE INDEX ON mev_threats (threat_type);
            CREATE VIEW threat_counts AS SELECT threat_type, count(*) FROM mev_threats GROUP BY 1;
            ANALYZE;
        """, dbname)

    def row_counts(self, dbname: str) -> Dict[str, int]:
        out = self.psql("SELECT 'mev_threats', count(*) FROM mev_threats UNION ALL "
                        "SELECT 'transaction_protections', count(*) FROM transaction_protections", dbname)
        return {line.split("|")[0]: int(line.split("|")[1]) for line in out.splitlines()}
