"""Small loopback TCP proxies for tests: an HTTP CONNECT proxy, and a relay that can go silent.

- :class:`ConnectProxy`: what ``HTTPS_PROXY``/``proxy-url`` point at. It records each CONNECT
  line and ``Proxy-Authorization``, can demand credentials (407), maps host names (so a test
  can use a name that resolves nowhere but at the proxy), then relays bytes both ways.
- :class:`Relay`: forwards a listening port to a fixed address; :meth:`Relay.stall` makes it
  stop forwarding in both directions without closing anything -- a peer that vanished
  without a FIN or RST, as a dead NAT entry or a frozen load balancer looks to both ends.

Both run in daemon threads and stop with :meth:`close`.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping


class _Server:
    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.stalled = threading.Event()
        self._closed = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _keep(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.append(sock)

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self._keep(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if self.stalled.is_set():
                    self.stalled.wait()  # hold the bytes forever, close nothing
                    self._closed.wait()
                    return
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def _relay(self, a: socket.socket, b: socket.socket) -> None:
        threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()
        self._pipe(b, a)

    def stall(self) -> None:
        """From now on, forward nothing more and close nothing."""
        self.stalled.set()

    def close(self) -> None:
        self._closed.set()
        self.stalled.clear()
        with contextlib.suppress(OSError):
            self.listener.close()
        with self._lock:
            for sock in self._sockets:
                # shutdown first: close() alone leaves the connection open while another
                # thread is blocked in recv() on it.
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with contextlib.suppress(OSError):
                    sock.close()


class ConnectProxy(_Server):
    """An HTTP proxy that only tunnels (``CONNECT host:port``)."""

    def __init__(
        self, *, hosts: Mapping[str, str] | None = None, credentials: str | None = None
    ) -> None:
        self.hosts = dict(hosts or {})
        self.credentials = credentials
        """``Basic <base64>`` the proxy demands, or None."""
        self.requests: list[str] = []
        self.authorizations: list[str | None] = []
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(1)
            if not data:
                client.close()
                return
            head += data
        lines = head.decode("latin-1").split("\r\n")
        self.requests.append(lines[0])
        auth = next(
            (v.strip() for k, _, v in (x.partition(":") for x in lines[1:])
             if k.lower() == "proxy-authorization"),
            None,
        )  # fmt: skip
        self.authorizations.append(auth)
        method, target, _ = [*lines[0].split(" "), "", ""][:3]
        if method != "CONNECT":
            client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        if self.credentials is not None and auth != self.credentials:
            client.sendall(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                b'Proxy-Authenticate: Basic realm="test"\r\nContent-Length: 0\r\n\r\n'
            )
            client.close()
            return
        host, _, port = target.rpartition(":")
        host = self.hosts.get(host.strip("[]"), host.strip("[]"))
        try:
            upstream = socket.create_connection((host, int(port)), timeout=10)
        except OSError:
            client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        upstream.settimeout(None)
        self._keep(upstream)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        self._relay(client, upstream)


class Relay(_Server):
    """Forwards every connection to ``target``; see :meth:`stall`."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        super().__init__()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._keep(upstream)
        self._relay(client, upstream)
