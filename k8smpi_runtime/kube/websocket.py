"""A minimal RFC 6455 websocket client over TLS: just what the pods/exec stream needs.

Why not websocket-client: importing it costs kubexec about 30 ms of CPU per call (its package
pulls in ``inspect``, ``http.cookies``, ``selectors``...), a fifth of a call's total; this
module needs only ``socket``, ``ssl``, ``base64``, ``hashlib`` and ``os``.

Supported: client handshake with sub-protocol negotiation and extra headers, binary and text
messages (fragmented or not), ping (answered with pong), close. Not supported (the API
server uses none of them on exec): extensions, compression, proxies.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import struct
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence
    from io import BufferedReader

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER = 64 * 1024
MAX_ERROR_BODY = 64 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


class WebSocketError(OSError):
    """The connection failed or broke (an OSError, so callers treat it as transport)."""


class HandshakeRefused(Exception):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, reason: str, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = headers


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str
    """Path and query, as sent in the request line."""


def connect(
    endpoint: Endpoint,
    *,
    context: ssl.SSLContext,
    server_hostname: str | None = None,
    headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
    timeout: float | None = 30.0,
) -> WebSocket:
    """Open a TLS connection and upgrade it.

    Raises HandshakeRefused for an HTTP answer other than 101, OSError (ssl errors, timeouts,
    refused, DNS, WebSocketError) for everything else.
    """
    sock = open_tls(
        endpoint.host,
        endpoint.port,
        context=context,
        server_hostname=server_hostname,
        timeout=timeout,
    )
    return upgrade(sock, endpoint, headers=headers, subprotocols=subprotocols)


def open_tls(
    host: str,
    port: int,
    *,
    context: ssl.SSLContext,
    server_hostname: str | None = None,
    timeout: float | None = 30.0,
) -> ssl.SSLSocket:
    """A TLS connection to ``host:port`` (TCP_NODELAY: exec frames are small and interactive)."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return context.wrap_socket(raw, server_hostname=server_hostname or host)
    except BaseException:
        raw.close()
        raise


def upgrade(
    sock: ssl.SSLSocket,
    endpoint: Endpoint,
    *,
    headers: Sequence[tuple[str, str]] = (),
    subprotocols: Sequence[str] = (),
) -> WebSocket:
    """Upgrade an open connection (fresh, or idle after a complete HTTP/1.1 exchange).

    The socket is closed when the upgrade fails.
    """
    try:
        return _handshake(sock, endpoint, headers, subprotocols)
    except BaseException:
        sock.close()
        raise


def _handshake(
    sock: ssl.SSLSocket,
    endpoint: Endpoint,
    headers: Sequence[tuple[str, str]],
    subprotocols: Sequence[str],
) -> WebSocket:
    key = base64.b64encode(os.urandom(16)).decode()
    host = endpoint.host if ":" not in endpoint.host else f"[{endpoint.host}]"
    lines = [
        f"GET {endpoint.path} HTTP/1.1",
        f"Host: {host}:{endpoint.port}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if subprotocols:
        lines.append(f"Sec-WebSocket-Protocol: {', '.join(subprotocols)}")
    lines += [f"{name}: {value}" for name, value in headers]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    reader = sock.makefile("rb")
    status_line = reader.readline(MAX_HEADER)
    parts = status_line.decode("latin-1").split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise WebSocketError(0, f"not an HTTP answer: {status_line[:80]!r}")
    status, reason = int(parts[1]), (parts[2].strip() if len(parts) > 2 else "")
    answer: dict[str, str] = {}
    size = 0
    while True:
        line = reader.readline(MAX_HEADER)
        size += len(line)
        if not line or size > MAX_HEADER:
            raise WebSocketError(0, "the upgrade answer's headers ended early or are too long")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        answer[name.strip().lower()] = value.strip()
    if status != 101:
        raise HandshakeRefused(status, reason, _error_body(reader, answer), answer)
    expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324 - RFC 6455
    if answer.get("sec-websocket-accept") != expected:
        raise WebSocketError(0, "the server's Sec-WebSocket-Accept does not match the key")
    return WebSocket(sock, reader, answer.get("sec-websocket-protocol", ""))


def _error_body(reader: BufferedReader, headers: dict[str, str]) -> bytes:
    read = reader.read
    try:
        length = int(headers.get("content-length", ""))
    except ValueError:
        length = -1
    try:
        if length >= 0:
            return bytes(read(min(length, MAX_ERROR_BODY)))
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return _read_chunked(reader)
        return bytes(read(MAX_ERROR_BODY))
    except OSError:
        return b""


def _read_chunked(reader: BufferedReader) -> bytes:
    body = b""
    readline, read = reader.readline, reader.read
    while len(body) < MAX_ERROR_BODY:
        size = int(readline(1024).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            break
        body += read(size)
        readline(1024)
    return body


class WebSocket:
    """An open websocket: one reader thread at a time; sending is thread-safe."""

    def __init__(self, sock: ssl.SSLSocket, reader: BufferedReader, subprotocol: str) -> None:
        self.sock = sock
        self._reader = reader
        self.subprotocol = subprotocol
        self._send_lock = threading.Lock()
        self.closed = False

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def send_binary(self, payload: bytes) -> None:
        self._send(OP_BINARY, payload)

    def _send(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        frame = header + mask + _masked(payload, mask)
        with self._send_lock:
            try:
                self.sock.sendall(frame)
            except OSError as e:
                raise WebSocketError(e.errno or 0, f"sending failed: {e}") from e

    def recv(self) -> tuple[int, bytes] | None:
        """The next data message ``(opcode, payload)``; None once the connection closed."""
        message = b""
        first_opcode = None
        while True:
            frame = self._frame()
            if frame is None:
                return None
            fin, opcode, payload = frame
            if opcode == OP_PING:
                self._send(OP_PONG, payload[:125])
                continue
            if opcode == OP_PONG:
                continue
            if opcode == OP_CLOSE:
                self.closed = True
                with contextlib.suppress(WebSocketError):
                    self._send(OP_CLOSE, payload[:2])
                return None
            if opcode != OP_CONT:
                first_opcode = opcode
            message += payload
            if fin:
                return (first_opcode if first_opcode is not None else OP_BINARY), message

    def _frame(self) -> tuple[bool, int, bytes] | None:
        head = self._read(2)
        if head is None:
            return None
        fin, opcode = bool(head[0] & 0x80), head[0] & 0x0F
        masked, length = bool(head[1] & 0x80), head[1] & 0x7F
        if length == 126:
            ext = self._read(2)
            if ext is None:
                return None
            (length,) = struct.unpack("!H", ext)
        elif length == 127:
            ext = self._read(8)
            if ext is None:
                return None
            (length,) = struct.unpack("!Q", ext)
        mask = self._read(4) if masked else b""
        if mask is None:
            return None
        payload = self._read(length) if length else b""
        if payload is None:
            return None
        if masked:
            payload = _masked(payload, mask)
        return fin, opcode, payload

    def _read(self, n: int) -> bytes | None:
        try:
            data = self._reader.read(n)
        except (ValueError, OSError) as e:  # ValueError: the reader was closed meanwhile
            if self.closed:
                return None
            raise WebSocketError(getattr(e, "errno", 0) or 0, f"receiving failed: {e}") from e
        if len(data) < n:
            self.closed = True
            return None
        return data

    def abort(self) -> None:
        """Shut the connection down at once (a blocked :meth:`recv` returns None)."""
        self.closed = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        if not self.closed:
            with contextlib.suppress(WebSocketError):
                self._send(OP_CLOSE, struct.pack("!H", 1000))
        self.closed = True
        try:
            self._reader.close()
        finally:
            self.sock.close()


def _masked(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask`` (whole-buffer integer XOR: fast enough)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
