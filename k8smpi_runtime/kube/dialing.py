"""The connection to the API server: TCP, directly or through an HTTP proxy's CONNECT, then TLS.

Every client here (kubexec's small HTTP client and exec websocket, the REST client) dials
through :func:`open_tls`, so proxies and socket options are the same everywhere:

- ``proxy``: an ``http://[user:password@]host[:port]`` URL (port 80 by default, as Go's
  transport has it). The tunnel is one ``CONNECT host:port`` request; TLS to the API server
  then runs inside it, so the proxy sees neither the token nor the traffic. Which proxy (if
  any) applies is decided once, when the configuration is loaded (:mod:`.proxies`).
- TCP_NODELAY: exec frames are small and interactive.
- TCP keepalive (:data:`KEEPALIVE_IDLE` s idle, then a probe every :data:`KEEPALIVE_INTERVAL`
  s, :data:`KEEPALIVE_COUNT` unanswered end it): a peer host that vanished (no RST, no ACK)
  ends a quiet connection at the kernel level. A peer that still ACKs but no longer forwards
  (a stuck proxy or load balancer) is kubexec's heartbeat's business (:mod:`.exec`).
"""

from __future__ import annotations

import base64
import socket
import ssl

from k8smpi_runtime.errors import TransportError
from k8smpi_runtime.records import Record

KEEPALIVE_IDLE = 30
KEEPALIVE_INTERVAL = 10
KEEPALIVE_COUNT = 3
MAX_PROXY_ANSWER = 16 * 1024


class ProxyError(ConnectionError):
    """The proxy could not open the tunnel for a reason that may pass (5xx, a cut answer)."""


class ProxyRefused(OSError):
    """The proxy refused the tunnel (4xx: authentication required, a forbidden target)."""

    def __str__(self) -> str:
        return str(self.strerror)


class Proxy(Record):
    host: str
    port: int
    authorization: str | None = None
    """The ``Proxy-Authorization`` value, from the URL's user info."""

    @property
    def display(self) -> str:
        """``http://host:port``, without credentials (for messages)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def parse_proxy(url: str) -> Proxy:
    """The proxy an URL names; ValueError (a one-line message, no credentials) when it cannot be."""
    import urllib.parse  # noqa: PLC0415 - only proxy users pay for it (kubexec's start-up)

    text = url.strip()
    if "://" not in text:
        text = "http://" + text  # Go accepts "proxy:3128" in HTTPS_PROXY too
    parts = urllib.parse.urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme != "http":
        raise ValueError(f"proxy scheme {scheme}:// is not supported (only http:// proxies)")
    try:
        port = parts.port or 80
    except ValueError:
        raise ValueError("proxy URL has a bad port") from None
    if not parts.hostname:
        raise ValueError("proxy URL has no host")
    authorization = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        authorization = f"Basic {token}"
    return Proxy(parts.hostname, port, authorization)


def open_tls(
    host: str,
    port: int,
    *,
    context: ssl.SSLContext,
    server_hostname: str | None = None,
    timeout: float | None = 30.0,
    proxy: str | None = None,
) -> ssl.SSLSocket:
    """A TLS connection to ``host:port``, through ``proxy`` when given (see the module doc)."""
    raw = open_tcp(host, port, timeout=timeout, proxy=proxy)
    try:
        return context.wrap_socket(raw, server_hostname=_ascii(server_hostname or host))
    except BaseException:
        raw.close()
        raise


def open_tcp(
    host: str, port: int, *, timeout: float | None = 30.0, proxy: str | None = None
) -> socket.socket:
    """A TCP connection to ``host:port`` (or a tunnel to it), with this module's options."""
    if proxy is None:
        address = (_ascii(host), port)
        sock = socket.create_connection(address, timeout=timeout)  # type: ignore[arg-type]
    else:
        try:
            via = parse_proxy(proxy)
        except ValueError as e:
            raise ProxyRefused(0, str(e)) from None
        address = (_ascii(via.host), via.port)
        sock = socket.create_connection(address, timeout=timeout)  # type: ignore[arg-type]
    try:
        _tune(sock)
        if proxy is not None:
            _tunnel(sock, via, host, port)
    except BaseException:
        sock.close()
        raise
    return sock


def _ascii(name: str) -> str | bytes:
    """``name`` as bytes when it is ASCII (its own IDNA form): getaddrinfo() and ssl encode a
    str with the ``idna`` codec, whose import (with stringprep and unicodedata) is about 5 ms
    of a kubexec call."""
    return name.encode() if name.isascii() else name


def _tune(sock: socket.socket) -> None:
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (
        ("TCP_KEEPIDLE", KEEPALIVE_IDLE),
        ("TCP_KEEPINTVL", KEEPALIVE_INTERVAL),
        ("TCP_KEEPCNT", KEEPALIVE_COUNT),
    ):
        option = getattr(socket, name, None)
        if option is not None:  # Linux; elsewhere the system's keepalive defaults apply
            try:  # noqa: SIM105 - contextlib is one import more on every call's path
                sock.setsockopt(socket.IPPROTO_TCP, option, value)
            except OSError:
                pass


def _tunnel(sock: socket.socket, proxy: Proxy, host: str, port: int) -> None:
    """``CONNECT host:port`` through ``proxy`` on ``sock``; returns when the tunnel is open."""
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    answer = b""
    # One byte at a time: after a 200 the next bytes are the server's TLS, never ours to take.
    while not answer.endswith(b"\r\n\r\n"):
        byte = sock.recv(1)
        if not byte:
            raise ProxyError(f"proxy {proxy.display} closed the connection during CONNECT")
        answer += byte
        if len(answer) > MAX_PROXY_ANSWER:
            raise ProxyError(f"proxy {proxy.display} sent an over-long answer to CONNECT")
    status_line = answer.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProxyError(f"proxy {proxy.display} answered CONNECT with {status_line[:80]!r}")
    status = int(parts[1])
    if 200 <= status < 300:
        return
    reason = parts[2].strip() if len(parts) > 2 else ""
    message = f"proxy {proxy.display} refused CONNECT to {target}: {status} {reason}".rstrip()
    if status == 407:
        message += " (proxy credentials missing or wrong: user:password@ in the proxy URL)"
    if status >= 500:
        raise ProxyError(message)
    raise ProxyRefused(0, message)


def transport_error(server: str, e: BaseException) -> TransportError:
    """A connection failure to ``server`` as one line; permanent ones are not retryable."""
    if isinstance(e, ssl.SSLCertVerificationError):
        # An untrusted certificate stays untrusted, however long one waits.
        return TransportError(
            f"TLS verification of {server} failed: {e.verify_message}", retryable=False
        )
    if isinstance(e, ProxyRefused):
        return TransportError(f"API server {server}: {e}", retryable=False)
    if isinstance(e, socket.gaierror):
        return TransportError(f"cannot resolve API server {server}: {e.strerror}")
    if isinstance(e, ConnectionRefusedError | TimeoutError):
        what = "refused the connection" if isinstance(e, ConnectionRefusedError) else "timed out"
        return TransportError(f"API server {server} {what}")
    detail = str(e) if isinstance(e, ProxyError) else f"{type(e).__name__}: {e}"
    return TransportError(f"API server {server}: {detail}")
