"""A small threaded TCP proxy on 127.0.0.1 for fault-injection tests: it forwards bytes
between a client and an upstream server and, when armed, cuts or freezes the connections
that carry more than N bytes in one direction.

    proxy = TcpProxy(upstream_port).start()
    proxy.arm("reset", after=1 << 20, direction="down", count=1)  # RST after 1 MiB server->client
    proxy.arm("stall", after=4096, direction="up")                 # stop forwarding after 4 KiB
    proxy.disarm(); proxy.stop()

"reset" forwards exactly `after` bytes of the faulted direction, then closes both sides
with SO_LINGER 0 (the client sees ECONNRESET). "stall" forwards `after` bytes, then
forwards nothing more in either direction and keeps both sockets open until the proxy
stops, as a peer that hangs. `count` is the number of connections to fault (None: every
one); `fired` counts the faults injected, `connections` the connections accepted.

With `tls=ssl_context` the proxy terminates TLS on the client side (a TLS front to a
plain server); a client that refuses the certificate simply fails its handshake.
"""
from __future__ import annotations

import select
import socket
import ssl
import struct
import threading
from typing import List, Optional


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1",
                 tls: Optional[ssl.SSLContext] = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.tls = tls
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.action: Optional[str] = None
        self.after = 0
        self.direction = "down"
        self.remaining: Optional[int] = 0
        self.fired = 0
        self.connections = 0
        self.handshake_failures: List[str] = []
        self._socks: List[socket.socket] = []
        self._threads: List[threading.Thread] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)

    # -- control
    def start(self) -> "TcpProxy":
        self._accept_thread.start()
        return self

    def arm(self, action: str, after: int, direction: str = "down", count: Optional[int] = 1) -> None:
        assert action in ("reset", "stall") and direction in ("up", "down")
        with self.lock:
            self.action, self.after, self.direction, self.remaining = action, after, direction, count

    def disarm(self) -> None:
        with self.lock:
            self.action = None

    def stop(self) -> None:
        self.stopping.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self.lock:
            socks = list(self._socks)
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
        for t in list(self._threads):
            t.join(timeout=5)

    def __enter__(self) -> "TcpProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the work
    def _claim(self) -> Optional[str]:
        """The fault to inject on a connection crossing the threshold, if any is left."""
        with self.lock:
            if self.action is None or (self.remaining is not None and self.remaining <= 0):
                return None
            if self.remaining is not None:
                self.remaining -= 1
            self.fired += 1
            return self.action

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self._socks.append(client)
            t = threading.Thread(target=self._serve, args=(client,), daemon=True)
            self._threads.append(t)
            t.start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            if self.tls is not None:
                try:
                    client = self.tls.wrap_socket(client, server_side=True)
                except (ssl.SSLError, OSError) as e:
                    self.handshake_failures.append(str(e))
                    return
                with self.lock:
                    self._socks.append(client)
            upstream = socket.create_connection(self.upstream, timeout=10)
            upstream.settimeout(None)
            with self.lock:
                self._socks.append(upstream)
            self._pump(client, upstream)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _pump(self, client: socket.socket, upstream: socket.socket) -> None:
        counts = {"up": 0, "down": 0}
        with self.lock:
            action, after, direction = self.action, self.after, self.direction
        claimed: Optional[str] = None
        checked = False
        while not self.stopping.is_set():
            if isinstance(client, ssl.SSLSocket) and client.pending():
                readable = [client]
            else:
                readable, _, _ = select.select([client, upstream], [], [], 0.5)
            for src in readable:
                dst, d = (upstream, "up") if src is client else (client, "down")
                try:
                    data = src.recv(65536)
                except ssl.SSLWantReadError:
                    continue
                except OSError:
                    return
                if not data:
                    try:
                        dst.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    return
                # The fault settings of the moment the threshold is crossed apply.
                with self.lock:
                    action, after, direction = self.action, self.after, self.direction
                if action and d == direction and counts[d] + len(data) > after and not checked:
                    checked = True
                    claimed = self._claim()
                if claimed and d == direction:
                    keep = max(0, after - counts[d])
                    try:
                        if keep:
                            dst.sendall(data[:keep])
                    except OSError:
                        return
                    if claimed == "reset":
                        for s in (client, upstream):
                            try:
                                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                            except OSError:
                                pass
                        return
                    # stall: hold both sockets open, forward nothing, until the proxy stops
                    # or the client gives up.
                    self._hold(client)
                    return
                counts[d] += len(data)
                try:
                    dst.sendall(data)
                except OSError:
                    return

    def _hold(self, client: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                r, _, _ = select.select([client], [], [], 0.5)
                if r and not client.recv(65536, socket.MSG_PEEK):
                    return  # the client closed its side
            except (OSError, ValueError):
                return
            if r:
                # Data from the client while stalled: leave it unread (a hung peer), but
                # don't spin on it.
                self.stopping.wait(0.5)
