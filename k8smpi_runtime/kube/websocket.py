"""A minimal RFC 6455 websocket client over TLS: just what the pods/exec stream needs.

Why not a library: importing websocket-client costs kubexec about 30 ms of CPU per call, wsproto
about 30 ms and websockets' sync client about 55 ms (``python -X importtime``, this machine);
this module needs only what the connection needs anyway (``socket``, ``ssl``) plus ``base64``,
``hashlib`` and ``struct``. It is held to the RFC by a differential fuzz test against wsproto
(tests/unit/test_kube_websocket.py), which is a test dependency only.

Supported: the client handshake with sub-protocol negotiation and extra headers, binary and
text messages (fragmented or not), ping (answered with pong, and sent: :meth:`WebSocket.ping`),
close. Not supported (the API server uses none of them on exec): extensions, compression.

A server that breaks the framing rules fails the connection (RFC 6455 section 7.1.7) with a
:class:`ProtocolError`: reserved bits set (no extension was negotiated), a masked frame, an
unknown opcode, a fragmented control frame or one over 125 bytes, a continuation without a
message to continue or a new message inside one, a length that is not minimally encoded or has
its most significant bit set, a message over :data:`MAX_MESSAGE`, text that is not UTF-8, a
close frame with a 1-byte body, an invalid code or a reason that is not UTF-8. Every failure of
this module is an :class:`OSError` (:class:`WebSocketError`), so callers map them to one
transport error; nothing else escapes (no ``struct.error``, ``MemoryError``, ``UnicodeError``).
"""

from __future__ import annotations

import base64
import codecs
import contextlib
import hashlib
import os
import socket
import struct
import threading
import time

from k8smpi_runtime.kube import dialing
from k8smpi_runtime.records import Record

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEADER = 64 * 1024
MAX_ERROR_BODY = 64 * 1024
MAX_MESSAGE = 16 * 1024 * 1024
"""The largest message accepted (the API server's exec frames are at most 32 KiB)."""
RECV_SIZE = 64 * 1024

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = frozenset((OP_CONT, OP_TEXT, OP_BINARY))
_CONTROL_OPCODES = frozenset((OP_CLOSE, OP_PING, OP_PONG))
# Close codes a peer may send (RFC 6455 7.4): 1004-1006 and 1015 are reserved or local-only,
# 1016-2999 are reserved for future RFCs, 3000-4999 are for libraries and applications.
_CLOSE_CODES = frozenset((*range(1000, 1004), *range(1007, 1015)))


class WebSocketError(OSError):
    """The connection failed or broke (an OSError, so callers treat it as transport)."""

    def __str__(self) -> str:
        return str(self.strerror) if not self.errno and self.strerror else super().__str__()


class ProtocolError(WebSocketError):
    """The server broke RFC 6455's framing rules; the connection is failed."""


class RequestSent(WebSocketError):
    """The upgrade request went out, then the connection failed before an HTTP answer came.

    The server may have acted on it (an exec may be running): such a failure is never retried.
    """


class HandshakeRefused(Exception):
    """The server answered the upgrade with an HTTP status other than 101."""

    def __init__(self, status: int, reason: str, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(f"HTTP {status} {reason}")
        self.status = status
        self.reason = reason
        self.body = body
        self.headers = headers


class Endpoint(Record):
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
    proxy: str | None = None,
) -> WebSocket:
    """Open a TLS connection (through ``proxy`` when given) and upgrade it.

    Raises HandshakeRefused for an HTTP answer other than 101, OSError (ssl errors, timeouts,
    refused, DNS, WebSocketError) for everything else.
    """
    sock = dialing.open_tls(
        endpoint.host,
        endpoint.port,
        context=context,
        server_hostname=server_hostname,
        timeout=timeout,
        proxy=proxy,
    )
    return upgrade(sock, endpoint, headers=headers, subprotocols=subprotocols)


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
    for name, value in headers:
        if any(c in value for c in "\r\n\0") or any(c in name for c in "\r\n\0:"):
            raise WebSocketError(0, f"header {name!r} holds a line break or NUL")
        lines.append(f"{name}: {value}")
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    reader = _Reader(sock)
    # A sendall that fails delivered no complete request (the server needs the final blank
    # line to act): that failure is an ordinary one. Once it returned, the server may act.
    sock.sendall(request)
    try:
        status, reason, answer = _read_head(reader)
    except WebSocketError as e:
        raise RequestSent(e.errno or 0, f"the upgrade request was sent, then {e.strerror}") from e
    except OSError as e:
        raise RequestSent(e.errno or 0, f"the upgrade request was sent, then {e}") from e
    if status != 101:
        raise HandshakeRefused(status, reason, _error_body(reader, answer), answer)
    expected = base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324 - RFC 6455
    if answer.get("sec-websocket-accept") != expected:
        raise WebSocketError(0, "the server's Sec-WebSocket-Accept does not match the key")
    if answer.get("sec-websocket-extensions"):
        raise ProtocolError(0, "the server negotiated an extension that was not offered")
    return WebSocket(sock, reader, answer.get("sec-websocket-protocol", ""))


def _read_head(reader: _Reader) -> tuple[int, str, dict[str, str]]:
    status_line = reader.readline(MAX_HEADER)
    if not status_line:
        raise WebSocketError(0, "the server closed the connection without an answer")
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
            raise WebSocketError(0, "the answer's headers ended early or are too long")
        if line in (b"\r\n", b"\n"):
            return status, reason, answer
        name, _, value = line.decode("latin-1").partition(":")
        answer[name.strip().lower()] = value.strip()


def _error_body(reader: _Reader, headers: dict[str, str]) -> bytes:
    try:
        length = int(headers.get("content-length", ""))
    except ValueError:
        length = -1
    try:
        if length >= 0:
            return reader.at_most(min(length, MAX_ERROR_BODY))
        if "chunked" in headers.get("transfer-encoding", "").lower():
            return _read_chunked(reader)
        return reader.at_most(MAX_ERROR_BODY)
    except (OSError, ValueError):
        return b""


def _read_chunked(reader: _Reader) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < MAX_ERROR_BODY:
        n = int(reader.readline(1024).split(b";")[0].strip() or b"0", 16)
        if n <= 0:
            break
        chunk = reader.at_most(min(n, MAX_ERROR_BODY - size))
        chunks.append(chunk)
        size += len(chunk)
        reader.readline(1024)
    return b"".join(chunks)


class _Reader:
    """Buffered reads from a socket (no read-ahead limit problems of ``makefile``: after the
    handshake, bytes the server sent with the 101 answer stay here for the first frame)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        #: ``time.monotonic()`` when bytes last arrived: the liveness the heartbeat watches.
        self.received_at = time.monotonic()

    def _fill(self) -> bool:
        data = self._sock.recv(RECV_SIZE)
        if not data:
            return False
        self.received_at = time.monotonic()
        self._buf += data
        return True

    def readline(self, limit: int) -> bytes:
        """Up to and including the next ``\\n`` (at most ``limit`` bytes; b"" at EOF)."""
        while True:
            end = self._buf.find(b"\n", 0, limit)
            if end >= 0:
                return self._take(end + 1)
            if len(self._buf) >= limit or not self._fill():
                return self._take(min(len(self._buf), limit))

    def at_most(self, n: int) -> bytes:
        """Up to ``n`` bytes, fewer only at EOF."""
        while len(self._buf) < n and self._fill():
            pass
        return self._take(min(n, len(self._buf)))

    def exact(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes, or None at EOF. Large reads go straight into one buffer."""
        if len(self._buf) >= n:
            return self._take(n)
        out = bytearray(n)
        have = len(self._buf)
        out[:have] = self._buf
        self._buf.clear()
        view = memoryview(out)
        while have < n:
            got = self._sock.recv_into(view[have:], min(n - have, 1 << 20))
            if not got:
                return None
            self.received_at = time.monotonic()
            have += got
        return bytes(out)

    def _take(self, n: int) -> bytes:
        data = bytes(self._buf[:n])
        del self._buf[:n]  # bytearray drops a prefix in O(1) (it moves its start)
        return data


class WebSocket:
    """An open websocket: one reader thread at a time; sending is thread-safe."""

    def __init__(self, sock: ssl.SSLSocket, reader: _Reader, subprotocol: str) -> None:
        self.sock = sock
        self._reader = reader
        self.subprotocol = subprotocol
        self._send_lock = threading.Lock()
        self.closed = False
        #: The code of the server's close frame (1005 when it had none), None before one came.
        self.close_code: int | None = None

    @property
    def received_at(self) -> float:
        """``time.monotonic()`` when the last byte arrived from the server."""
        return self._reader.received_at

    def settimeout(self, timeout: float | None) -> None:
        self.sock.settimeout(timeout)

    def send_binary(self, payload: bytes, *, timeout: float | None = None) -> None:
        """One binary message. ``timeout``: give up (WebSocketError) when another thread's
        send does not let go of the connection within that many seconds."""
        self._send(OP_BINARY, payload, timeout=timeout)

    def ping(self, payload: bytes = b"") -> None:
        """A ping (answered by the server with a pong): proof the connection still carries."""
        self._send(OP_PING, payload[:125])

    def _send(self, opcode: int, payload: bytes, *, timeout: float | None = None) -> None:
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        frame = header + mask + _masked(payload, mask)
        if not self._send_lock.acquire(timeout=-1 if timeout is None else timeout):
            raise WebSocketError(0, "sending failed: another send holds the connection")
        try:
            self.sock.sendall(frame)
        except (OSError, ValueError) as e:  # ValueError: closed meanwhile
            raise WebSocketError(getattr(e, "errno", 0) or 0, f"sending failed: {e}") from e
        finally:
            self._send_lock.release()

    def recv(self) -> tuple[int, bytes] | None:
        """The next data message ``(opcode, payload)``; None once the connection closed.

        A close frame, the end of the connection, or a cut in the middle of a frame or message
        all end the stream (None); a framing violation raises :class:`ProtocolError` as soon as
        the bytes that break the rule are in (a header before its payload, bad text as it comes).
        """
        message = _Message()
        while True:
            header = self._header()
            if header is None:
                return self._ended()
            fin, op, length = header
            if op in _CONTROL_OPCODES:
                payload = self._read(length) if length else b""
                if payload is None or not self._control(op, payload):
                    return self._ended()
                continue
            message.begin(op, length)
            payload = self._read(length) if length else b""
            if payload is None:
                return self._ended()
            message.add(payload, fin)
            if fin:
                return message.done()

    def _control(self, opcode: int, payload: bytes) -> bool:
        """Answer a control frame; False when it was a close (the stream is over)."""
        if opcode == OP_PING:
            with contextlib.suppress(WebSocketError):
                self._send(OP_PONG, payload)
        elif opcode == OP_CLOSE:
            self.close_code = _close_code(payload)
            self.closed = True
            with contextlib.suppress(WebSocketError):
                self._send(OP_CLOSE, payload[:2])
            return False
        return True

    def _ended(self) -> tuple[int, bytes] | None:
        self.closed = True
        return None

    def _header(self) -> tuple[bool, int, int] | None:
        """The next frame's ``(fin, opcode, payload length)``, checked; None at the end."""
        head = self._read(2)
        if head is None:
            return None
        b0, b1 = head[0], head[1]
        fin, opcode = bool(b0 & 0x80), b0 & 0x0F
        if opcode not in _DATA_OPCODES and opcode not in _CONTROL_OPCODES:
            raise ProtocolError(0, f"unknown opcode {opcode:#x}")
        if opcode in _CONTROL_OPCODES:
            if not fin:
                raise ProtocolError(0, "a fragmented control frame")
            if b1 & 0x7F > 125:
                raise ProtocolError(0, "a control frame over 125 bytes")
        length = self._length(b1 & 0x7F)
        if length is None:
            return None
        if b0 & 0x70:
            raise ProtocolError(0, "reserved bits set in a frame (no extension was negotiated)")
        if b1 & 0x80:
            raise ProtocolError(0, "a masked frame from the server")
        return fin, opcode, length

    def _length(self, short: int) -> int | None:
        """The payload length (7 bits, or the 16- or 64-bit extension); None at the end."""
        if short < 126:
            return short
        ext = self._read(2 if short == 126 else 8)
        if ext is None:
            return None
        length: int = struct.unpack("!H" if short == 126 else "!Q", ext)[0]
        if length >> 63:
            raise ProtocolError(0, "a 64-bit frame length with its top bit set")
        if length < (126 if short == 126 else 1 << 16):
            raise ProtocolError(0, "a frame length not minimally encoded")
        if length > MAX_MESSAGE:
            raise ProtocolError(0, f"a frame over {MAX_MESSAGE} bytes")
        return length

    def _read(self, n: int) -> bytes | None:
        try:
            return self._reader.exact(n)
        except (ValueError, OSError) as e:  # ValueError: the socket was closed meanwhile
            if self.closed:
                return None
            raise WebSocketError(getattr(e, "errno", 0) or 0, f"receiving failed: {e}") from e

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
        self.sock.close()


class _Message:
    """The data frames of one message: their order checked, their size capped, text decoded
    fragment by fragment (bad UTF-8 fails when it comes), joined once at the end."""

    def __init__(self) -> None:
        self.opcode: int | None = None
        self.fragments: list[bytes] = []
        self.size = 0
        self.text: codecs.IncrementalDecoder | None = None

    def begin(self, opcode: int, length: int) -> None:
        """A data frame's header arrived (before its payload is read)."""
        if opcode == OP_CONT:
            if self.opcode is None:
                raise ProtocolError(0, "a continuation frame without a message to continue")
        elif self.opcode is not None:
            raise ProtocolError(0, "a new message began inside a fragmented one")
        else:
            self.opcode = opcode
            if opcode == OP_TEXT:
                self.text = codecs.getincrementaldecoder("utf-8")()
        self.size += length
        if self.size > MAX_MESSAGE:
            raise ProtocolError(0, f"a message over {MAX_MESSAGE} bytes")

    def add(self, payload: bytes, fin: bool) -> None:
        if self.text is not None:
            try:
                self.text.decode(payload, final=fin)
            except UnicodeDecodeError:
                raise ProtocolError(0, "a text message that is not UTF-8") from None
        self.fragments.append(payload)

    def done(self) -> tuple[int, bytes]:
        data = self.fragments[0] if len(self.fragments) == 1 else b"".join(self.fragments)
        return self.opcode if self.opcode is not None else OP_BINARY, data


def _close_code(payload: bytes) -> int:
    """The code of a close frame's body, checked as RFC 6455 5.5.1 and 7.4 require."""
    if not payload:
        return 1005
    if len(payload) == 1:
        raise ProtocolError(0, "a close frame with a 1-byte body")
    code = int.from_bytes(payload[:2], "big")
    if code not in _CLOSE_CODES and not 3000 <= code <= 4999:
        raise ProtocolError(0, f"a close frame with the invalid code {code}")
    _check_utf8(payload[2:], "a close reason")
    return code


def _check_utf8(data: bytes, what: str) -> None:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(0, f"{what} that is not UTF-8") from None


def _masked(payload: bytes, mask: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte ``mask`` (whole-buffer integer XOR: fast enough)."""
    n = len(payload)
    if not n:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
