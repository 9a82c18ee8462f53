"""kubexec's one connection to the API server: the pod lookup, then the exec on the same socket.

A kubexec call makes one or two small GETs and one exec. Doing them over one keep-alive TLS
connection saves a handshake, and this small HTTP/1.1 client (JSON bodies, Content-Length or
chunked) saves importing ``http.client`` and the ``email`` package it drags in: both count,
because launchers start kubexec once per remote node per job. Anything larger (watches,
writes, other tools) uses :class:`k8smpi_runtime.kube.rest.Api`.
"""

from __future__ import annotations

import json
import ssl

from k8smpi_runtime import lazylog
from k8smpi_runtime.errors import TransportError, api_error
from k8smpi_runtime.kube import dialing, paging, urls
from k8smpi_runtime.kube.exec import USER_AGENT

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from collections.abc import Mapping
    from io import BufferedReader
    from typing import Any

    from k8smpi_runtime.kube.config import ClientConfig

    JSON = dict[str, Any]

logger = lazylog.getLogger(__name__)
MAX_LINE = 64 * 1024


class Connection:
    """GET and paginated list over one keep-alive connection (the resolve.PodApi protocol)."""

    def __init__(
        self, config: ClientConfig, *, timeout: float = 30.0, sock: ssl.SSLSocket | None = None
    ) -> None:
        """``sock``: an idle connection to the API server for these credentials, dialed
        before (a control master's), used as if this connection had made it."""
        url = _server(config)
        self.config = config
        self.timeout = timeout
        self._host = url.hostname or ""
        self._port = url.port or 443
        self._base = url.path.rstrip("/")
        self._sock: ssl.SSLSocket | None = None
        self._reader: BufferedReader | None = None
        if sock is not None:
            sock.settimeout(timeout)
            self._sock, self._reader = sock, sock.makefile("rb")

    # -- the PodApi protocol ------------------------------------------------------------------

    def get(self, path: str, params: Mapping[str, str | int | bool] | None = None) -> JSON:
        return self.request(path, params)

    def list(
        self, path: str, params: Mapping[str, str | int | bool] | None = None, *, limit: int = 500
    ) -> tuple[list[JSON], str]:
        return paging.list_all(self.request, path, params, limit)

    # -- plumbing -----------------------------------------------------------------------------

    def request(self, path: str, params: Mapping[str, str | int | bool] | None = None) -> JSON:
        """One GET; the JSON answer, or an ApiError / TransportError."""
        query = urls.urlencode(
            (k, str(v).lower() if isinstance(v, bool) else v) for k, v in (params or {}).items()
        )
        target = f"{self._base}{path}" + (f"?{query}" if query else "")
        for attempt in (1, 2):
            reused = self._sock is not None
            try:
                status, headers, body = self._exchange(target)
                break
            except (OSError, ValueError) as e:
                self.close()
                # An idle keep-alive connection the server closed meanwhile: one fresh try.
                if attempt == 2 or not reused:
                    raise dialing.transport_error(self.config.server, e) from e
        logger.debug("GET %s -> %s", target, status)
        decoded = _json(body)
        if status >= 400:
            raise api_error(status, decoded, body.decode(errors="replace"), _retry_after(headers))
        return decoded or {}

    def _exchange(self, target: str) -> tuple[int, dict[str, str], bytes]:
        if self._sock is None or self._reader is None:
            self._sock = dial(self.config, timeout=self.timeout)
            self._reader = self._sock.makefile("rb")
        sock, reader = self._sock, self._reader
        lines = [
            f"GET {target} HTTP/1.1",
            f"Host: {self._host if ':' not in self._host else f'[{self._host}]'}:{self._port}",
            "Accept: application/json",
            f"User-Agent: {USER_AGENT}",
            *(f"{k}: {v}" for k, v in self.config.auth_headers().items()),
        ]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        status_line = reader.readline(MAX_LINE)
        if not status_line:
            raise ConnectionResetError("the API server closed the connection")
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"not an HTTP answer: {status_line[:80]!r}")
        headers: dict[str, str] = {}
        while True:
            line = reader.readline(MAX_LINE)
            if not line:
                raise ConnectionResetError("the API server closed the connection mid-answer")
            if line in (b"\r\n", b"\n"):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = _body(reader, headers)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(parts[1]), headers, body

    def take_socket(self) -> ssl.SSLSocket | None:
        """Hand the open, idle connection over (to an exec upgrade); None if there is none, or
        if the server has closed it meanwhile (an exec request sent on a dead connection could
        not be told apart from one the server acted on, so it is never sent there)."""
        sock, self._sock = self._sock, None
        if self._reader is not None:
            self._reader.close()  # the socket stays open: it has its own reference
            self._reader = None
        if sock is not None and not _idle_and_open(sock):
            logger.debug("the API server closed the idle connection; the exec dials anew")
            sock.close()
            return None
        return sock

    def close(self) -> None:
        sock = self.take_socket()
        if sock is not None:
            sock.close()


def dial(config: ClientConfig, *, timeout: float) -> ssl.SSLSocket:
    """A new TLS connection to the API server of ``config`` (through its proxy, if any)."""
    url = _server(config)
    return dialing.open_tls(
        url.hostname or "",
        url.port or 443,
        context=config.ssl_context(),
        server_hostname=config.tls_server_name,
        timeout=timeout,
        proxy=config.proxy,
    )


def _server(config: ClientConfig) -> urls.Server:
    url = urls.split_server(config.server)
    if url.scheme != "https" or not url.hostname:
        raise TransportError(f"API server URL must be https://host[:port]: {config.server}")
    return url


def _idle_and_open(sock: ssl.SSLSocket) -> bool:
    """Whether an idle keep-alive connection is still open: nothing (not even a TLS close)
    is waiting to be read on it."""
    timeout = sock.gettimeout()
    sock.setblocking(False)
    try:
        pending = sock.recv(1)
    except (ssl.SSLWantReadError, BlockingIOError):
        return True
    except OSError:
        return False
    finally:
        sock.settimeout(timeout)
    # b"": the server closed it; bytes: something unasked-for arrived. Unusable either way.
    logger.debug("idle connection unusable (%d unexpected bytes)", len(pending))
    return False


def _body(reader: BufferedReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks: list[bytes] = []
        while True:
            size = int(reader.readline(MAX_LINE).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while reader.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(_exactly(reader, size))
            reader.readline(MAX_LINE)
    return _exactly(reader, int(headers.get("content-length", "0") or "0"))


def _exactly(reader: BufferedReader, n: int) -> bytes:
    data = reader.read(n) if n else b""
    if len(data) < n:
        raise ConnectionResetError("the API server closed the connection mid-body")
    return data


def _json(raw: bytes) -> JSON | None:
    try:
        value = json.loads(raw) if raw else None
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _retry_after(headers: dict[str, str]) -> float | None:
    try:
        return float(headers["retry-after"])
    except (KeyError, ValueError):
        return None
