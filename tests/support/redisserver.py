"""A throwaway Redis server for tests: redis-server in a temporary directory,
listening on 127.0.0.1 only (no Unix socket), on a free port, no automatic saves
(`--save ''`), no AOF, optional password (requirepass) and ACL user. It never
touches a system Redis on 6379: the port is always a fresh free one."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Dict, List, Optional


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, password: Optional[str] = None, acl_user: Optional[str] = None,
                 extra: Optional[List[str]] = None, wrap: Optional[List[str]] = None) -> None:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found: install redis-server (scripts/install-deps.sh does)")
        self.root = tempfile.mkdtemp(prefix="mevb-redis-")
        self.dir = os.path.join(self.root, "data")
        os.mkdir(self.dir)
        self.log = os.path.join(self.root, "server.log")
        self.port = free_port()
        self.password = password
        self.acl_user = acl_user
        self.acl_password = secrets.token_hex(8) if acl_user else None
        self.extra = extra or []
        self.wrap = wrap or []  # a command the server runs under (it gets redis-server and its args)
        self.proc: Optional[subprocess.Popen] = None

    def start(self) -> "RedisServer":
        conf = os.path.join(self.root, "redis.conf")
        lines = [
            "bind 127.0.0.1", f"port {self.port}", f"dir {self.dir}",
            "save ''", "appendonly no", "daemonize no", f"logfile {self.log}",
            "repl-diskless-sync-delay 0", "protected-mode no",
        ]
        if self.password:
            lines.append(f"requirepass {self.password}")
        if self.acl_user:
            lines.append(f"user {self.acl_user} on >{self.acl_password} ~* &* +@all")
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("\n".join(x for x in lines if x) + "\n")
        self.proc = subprocess.Popen([*self.wrap, "redis-server", conf, *self.extra], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                log = open(self.log).read() if os.path.exists(self.log) else ""
                raise RuntimeError(f"redis-server exited {self.proc.returncode}: {log[-2000:]}")
            try:
                if self.cli("PING", check=False).strip() == "PONG":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING within 30 s")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.proc = None
        shutil.rmtree(self.root, ignore_errors=True)

    def kill(self) -> None:
        """Kills the server at once (no save), keeping its directory."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients
    def url(self, with_password: bool = False, user: Optional[str] = None) -> str:
        """redis://127.0.0.1:PORT, credentials only when asked (they belong in the environment)."""
        if user and with_password:
            return f"redis://{user}:{self.acl_password}@127.0.0.1:{self.port}"
        if user:
            return f"redis://{user}@127.0.0.1:{self.port}"
        if with_password and self.password:
            return f"redis://:{self.password}@127.0.0.1:{self.port}"
        return f"redis://127.0.0.1:{self.port}"

    def env(self, base: Optional[Dict[str, str]] = None) -> Dict[str, str]:
        e = dict(os.environ if base is None else base)
        if self.password:
            e["MEVBACKUP_REDIS_PASSWORD"] = self.password
        return e

    def cli(self, *args: str, check: bool = True, db: int = 0) -> str:
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "-n", str(db), *args],
                           capture_output=True, text=True, env=env, timeout=60)
        if check and (r.returncode != 0 or r.stdout.startswith("ERR") or r.stdout.startswith("WRONGPASS")):
            raise RuntimeError(f"redis-cli {' '.join(args[:1])} failed: {r.stdout.strip()} {r.stderr.strip()}")
        return r.stdout

    def pipe(self, commands: List[List[str]], db: int = 0) -> None:
        """Sends many commands at once through redis-cli --pipe (RESP encoded here)."""
        out = bytearray()
        out += self._resp(["SELECT", str(db)])
        for c in commands:
            out += self._resp(c)
        env = dict(os.environ)
        if self.password:
            env["REDISCLI_AUTH"] = self.password
        r = subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(self.port), "--pipe"], input=bytes(out),
                           capture_output=True, env=env, timeout=300)
        if r.returncode != 0 or b"errors: 0" not in r.stdout:
            raise RuntimeError(f"redis-cli --pipe failed: {r.stdout[-500:]!r} {r.stderr[-500:]!r}")

    @staticmethod
    def _resp(args: List[str]) -> bytes:
        out = b"*%d\r\n" % len(args)
        for a in args:
            b = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(b), b)
        return out

    def fill_sample(self, n: int = 200) -> None:
        """Every common type, a few TTLs, and keys in two databases."""
        cmds: List[List[str]] = []
        for i in range(n):
            cmds.append(["SET", f"str:{i}", f"value-{i}" * (1 + i % 5)])
            cmds.append(["SET", f"int:{i}", str(i * 1000)])
            cmds.append(["HSET", f"hash:{i % 20}", f"f{i}", f"v{i}"])
            cmds.append(["RPUSH", f"list:{i % 10}", f"item-{i}"])
            cmds.append(["SADD", f"set:{i % 10}", f"member-{i}"])
            cmds.append(["SADD", f"intset:{i % 5}", str(i)])
            cmds.append(["ZADD", f"zset:{i % 10}", str(i * 1.5), f"z{i}"])
            cmds.append(["XADD", "stream:1", "*", "n", str(i)])
        # A big hash and list, past the listpack limits, for the other encodings.
        for i in range(300):
            cmds.append(["HSET", "bighash", f"field-{i}", "x" * 80])
            cmds.append(["RPUSH", "biglist", "y" * 100 + str(i)])
            cmds.append(["ZADD", "bigzset", str(i), "m" * 70 + str(i)])
            cmds.append(["SADD", "bigset", "s" * 70 + str(i)])
        for i in range(20):
            cmds.append(["SET", f"ttl:{i}", f"t{i}", "EX", str(3600 + i)])
            cmds.append(["PEXPIRE", f"hash:{i}", str(7200000 + i)])
        self.pipe(cmds)
        self.pipe([["SET", f"db1:{i}", str(i)] for i in range(30)], db=1)

    def dbsizes(self) -> Dict[int, int]:
        out: Dict[int, int] = {}
        for line in self.cli("INFO", "keyspace").splitlines():
            if line.startswith("db"):
                name, rest = line.split(":", 1)
                out[int(name[2:])] = int(rest.split(",")[0].split("=")[1])
        return out

    def client(self) -> "RespClient":
        c = RespClient("127.0.0.1", self.port)
        if self.password:
            c.call("AUTH", self.password)
        return c

    def snapshot(self) -> Dict[tuple, tuple]:
        """(db, key) -> (type, value, PTTL in ms or -1) of every key; compare with same_data()."""
        result: Dict[tuple, tuple] = {}
        with self.client() as c:
            for db in self.dbsizes():
                c.call("SELECT", str(db))
                cursor = b"0"
                while True:
                    cursor, keys = c.call("SCAN", cursor, "COUNT", "1000")
                    for k in keys:
                        t = c.call("TYPE", k)
                        result[(db, k)] = (t, self._value(c, k, t), c.call("PTTL", k))
                    if cursor == b"0":
                        break
        return result

    @staticmethod
    def _value(c: "RespClient", k: bytes, t: str):
        if t == "string":
            return c.call("GET", k)
        if t == "hash":
            v = c.call("HGETALL", k)
            return tuple(sorted(zip(v[::2], v[1::2])))
        if t == "list":
            return tuple(c.call("LRANGE", k, "0", "-1"))
        if t == "set":
            return tuple(sorted(c.call("SMEMBERS", k)))
        if t == "zset":
            return tuple(c.call("ZRANGE", k, "0", "-1", "WITHSCORES"))
        if t == "stream":
            return repr(c.call("XRANGE", k, "-", "+"))
        return None


def same_data(a: Dict[tuple, tuple], b: Dict[tuple, tuple], ttl_slack_ms: int = 15000) -> None:
    """Asserts that two snapshots hold the same keys, types, values and (within a slack) TTLs."""
    assert sorted(a) == sorted(b), f"keys differ: {sorted(set(a) ^ set(b))[:10]}"
    for k in a:
        ta, va, xa = a[k]
        tb, vb, xb = b[k]
        assert (ta, va) == (tb, vb), f"key {k} differs"
        assert (xa < 0) == (xb < 0) and abs(xa - xb) <= ttl_slack_ms, f"TTL of {k} differs: {xa} vs {xb}"


class RespClient:
    """The smallest RESP2 client: enough for the tests to read a server's keys quickly."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=30)
        self.f = self.sock.makefile("rb")

    def __enter__(self) -> "RespClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.f.close()
        self.sock.close()

    def call(self, *args):
        self.sock.sendall(RedisServer._resp([a if isinstance(a, bytes) else str(a).encode() for a in args]))
        return self._read()

    def _read(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("connection closed")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"unexpected RESP line {line!r}")


class FakeMaster:
    """A pretend Redis master on 127.0.0.1 for the replication mode: it answers the
    few commands the dumper sends (INFO, REPLCONF) and replies to SYNC with
    `$<announced>\\r\\n` and then `payload` (at most `announced` bytes, in 64 KiB
    writes). `sent` counts the payload bytes the socket took before the client went
    away, so a test can see where the reader stopped the stream."""

    def __init__(self, payload: bytes, announced: Optional[int] = None, version: str = "7.4.1") -> None:
        import threading
        self.payload = payload
        self.announced = len(payload) if announced is None else announced
        self.version = version
        self.sent = 0
        self.commands: List[List[bytes]] = []
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def __enter__(self) -> "FakeMaster":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.listener.close()
        self.thread.join(timeout=30)

    @staticmethod
    def _bulk(text: str) -> bytes:
        data = text.encode()
        return b"$%d\r\n%s\r\n" % (len(data), data)

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        with conn:
            f = conn.makefile("rb")
            while True:
                line = f.readline()
                if not line:
                    return
                if not line.startswith(b"*"):  # inline command (SYNC\r\n)
                    args = line.split()
                else:
                    args = []
                    for _ in range(int(line[1:])):
                        n = int(f.readline()[1:])
                        args.append(f.read(n + 2)[:-2])
                self.commands.append(args)
                cmd = args[0].upper() if args else b""
                if cmd == b"INFO":
                    section = args[1].decode().lower() if len(args) > 1 else ""
                    text = {"server": f"# Server\r\nredis_version:{self.version}\r\n",
                            "keyspace": "# Keyspace\r\n"}.get(section, "")
                    conn.sendall(self._bulk(text))
                elif cmd == b"PING":
                    conn.sendall(b"+PONG\r\n")
                elif cmd == b"SYNC":
                    conn.sendall(b"$%d\r\n" % self.announced)
                    try:
                        for at in range(0, min(len(self.payload), self.announced), 65536):
                            chunk = self.payload[at:min(at + 65536, self.announced)]
                            conn.sendall(chunk)
                            self.sent += len(chunk)
                    except OSError:
                        pass
                    return
                else:
                    conn.sendall(b"+OK\r\n")
