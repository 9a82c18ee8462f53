"""The minimal websocket client, over a socketpair (no TLS needed for frames).

The devcluster exercises the handshake and ordinary frames on every kubexec call; these are
the cases a real API server rarely sends: fragmentation, 16- and 64-bit lengths, pings, a
close in the middle, a cut connection, and every framing rule of RFC 6455 -- checked one by
one and then fuzzed against wsproto (a test dependency only) as the oracle: for any byte
stream a server may send, both must see the same messages, or both must fail the connection.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import struct
import threading
from typing import Any

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from k8smpi_runtime.kube import websocket as ws


def pair() -> tuple[ws.WebSocket, socket.socket]:
    client, server = socket.socketpair()
    reader = ws._Reader(client)
    return ws.WebSocket(client, reader, "v5.channel.k8s.io"), server  # type: ignore[arg-type]


def server_frame(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bytes | None = None
) -> bytes:
    """What a server sends: unmasked, unless ``mask`` says otherwise (a violation)."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    n = len(payload)
    bit = 0x80 if mask is not None else 0
    if n < 126:
        head = struct.pack("!BB", first, bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, bit | 127, n)
    if mask is not None:
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + payload


def read_client_frame(sock: socket.socket) -> tuple[int, bytes]:
    """What the client sent: masked, as RFC 6455 requires."""
    reader: Any = sock.makefile("rb")
    b0, b1 = reader.read(2)
    assert b1 & 0x80, "client frames must be masked"
    n = b1 & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", reader.read(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", reader.read(8))
    mask = reader.read(4)
    data = reader.read(n)
    return b0 & 0x0F, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def feed(data: bytes) -> tuple[list[tuple[int, bytes]], str]:
    """What the client makes of a server's byte stream: its messages, then how it ended
    (``"close"``, ``"eof"`` or ``"error"``). Every failure must be a WebSocketError."""
    sock, server = pair()

    def write() -> None:
        with contextlib.suppress(OSError):  # the client may fail the connection first
            server.sendall(data)
            server.shutdown(socket.SHUT_WR)

    def drain() -> None:  # pongs and the close echo
        with contextlib.suppress(OSError):
            server.makefile("rb").read()

    writer = threading.Thread(target=write)
    writer.start()
    threading.Thread(target=drain, daemon=True).start()
    messages: list[tuple[int, bytes]] = []
    try:
        while True:
            got = sock.recv()
            if got is None:
                end = "close" if sock.close_code is not None else "eof"
                break
            messages.append(got)
    except ws.ProtocolError:
        end = "error"
    sock.close()  # first: a writer blocked on a full buffer then fails at once
    writer.join(5)
    server.close()
    return messages, end


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_messages_of_every_length_class_arrive_whole(size: int) -> None:
    sock, server = pair()
    payload = os.urandom(size)
    # From a thread: a socketpair's buffer is smaller than the biggest frame.
    writer = threading.Thread(target=server.sendall, args=(server_frame(ws.OP_BINARY, payload),))
    writer.start()
    assert sock.recv() == (ws.OP_BINARY, payload)
    writer.join(5)


def test_fragments_are_joined_and_pings_answered_in_between() -> None:
    sock, server = pair()
    server.sendall(
        server_frame(ws.OP_BINARY, b"\x01hel", fin=False)
        + server_frame(ws.OP_PING, b"are you there")
        + server_frame(ws.OP_CONT, b"lo")
    )
    assert sock.recv() == (ws.OP_BINARY, b"\x01hello")
    assert read_client_frame(server) == (ws.OP_PONG, b"are you there")


def test_many_fragments_join_in_linear_time() -> None:
    # 20 000 one-byte fragments: a quadratic join would copy 200 MB here.
    frames = [server_frame(ws.OP_BINARY, b"x", fin=False)]
    frames += [server_frame(ws.OP_CONT, b"x", fin=False)] * 19_998
    frames.append(server_frame(ws.OP_CONT, b"x"))
    messages, end = feed(b"".join(frames))
    assert (messages, end) == ([(ws.OP_BINARY, b"x" * 20_000)], "eof")


def test_client_frames_are_masked_and_round_trip() -> None:
    sock, server = pair()
    for size in (3, 200, 70_000):
        payload = os.urandom(size)
        writer = threading.Thread(target=sock.send_binary, args=(payload,))
        writer.start()
        assert read_client_frame(server) == (ws.OP_BINARY, payload)
        writer.join(5)
    sock.ping(b"p")
    assert read_client_frame(server) == (ws.OP_PING, b"p")


def test_close_and_cut_end_the_stream() -> None:
    sock, server = pair()
    server.sendall(server_frame(ws.OP_CLOSE, struct.pack("!H", 1000)))
    assert sock.recv() is None
    assert sock.close_code == 1000
    assert read_client_frame(server)[0] == ws.OP_CLOSE
    sock2, server2 = pair()
    server2.sendall(server_frame(ws.OP_BINARY, b"\x01partial")[:5])
    server2.close()
    assert sock2.recv() is None  # cut mid-frame: the end, not an exception
    assert sock2.close_code is None


def test_abort_unblocks_a_reader() -> None:
    sock, _server = pair()
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(sock.recv()))
    reader.start()
    sock.abort()
    reader.join(5)
    assert not reader.is_alive()
    assert got == [None]


def test_received_at_moves_with_every_byte() -> None:
    sock, server = pair()
    before = sock.received_at
    server.sendall(server_frame(ws.OP_PONG, b""))
    server.sendall(server_frame(ws.OP_BINARY, b"x"))
    assert sock.recv() == (ws.OP_BINARY, b"x")
    assert sock.received_at > before


# -- RFC 6455: each rule a server can break -------------------------------------------------

VIOLATIONS = {
    "reserved bit 1": server_frame(ws.OP_BINARY, b"x", rsv=4),
    "reserved bit 3": server_frame(ws.OP_BINARY, b"x", rsv=1),
    "masked server frame": server_frame(ws.OP_BINARY, b"x", mask=b"abcd"),
    "unknown data opcode": server_frame(0x3, b"x"),
    "unknown control opcode": server_frame(0xB, b"x"),
    "fragmented ping": server_frame(ws.OP_PING, b"x", fin=False),
    "ping over 125 bytes": server_frame(ws.OP_PING, b"x" * 126),
    "continuation first": server_frame(ws.OP_CONT, b"x"),
    "new message inside one": server_frame(ws.OP_BINARY, b"a", fin=False)
    + server_frame(ws.OP_TEXT, b"b"),
    "16-bit length for 5 bytes": struct.pack("!BBH", 0x82, 126, 5) + b"12345",
    "64-bit length for 5 bytes": struct.pack("!BBQ", 0x82, 127, 5) + b"12345",
    "64-bit length, top bit set": struct.pack("!BBQ", 0x82, 127, 1 << 63),
    "text not UTF-8": server_frame(ws.OP_TEXT, b"\xff\xfe"),
    "close with 1 byte": server_frame(ws.OP_CLOSE, b"\x03"),
    "close code 1005": server_frame(ws.OP_CLOSE, struct.pack("!H", 1005)),
    "close code 999": server_frame(ws.OP_CLOSE, struct.pack("!H", 999)),
    "close code 2000": server_frame(ws.OP_CLOSE, struct.pack("!H", 2000)),
    "close reason not UTF-8": server_frame(ws.OP_CLOSE, struct.pack("!H", 1000) + b"\xc3"),
}


@pytest.mark.parametrize("name", sorted(VIOLATIONS))
def test_each_violation_fails_the_connection(name: str) -> None:
    messages, end = feed(server_frame(ws.OP_BINARY, b"before") + VIOLATIONS[name])
    assert (messages, end) == ([(ws.OP_BINARY, b"before")], "error")


def test_a_giant_frame_is_refused_before_it_is_read() -> None:
    head = struct.pack("!BBQ", 0x82, 127, ws.MAX_MESSAGE + 1)
    assert feed(head) == ([], "error")
    # ... and so is a message that grows too big across fragments.
    part = server_frame(ws.OP_BINARY, b"x" * (ws.MAX_MESSAGE // 2 + 1), fin=False)
    rest = server_frame(ws.OP_CONT, b"x" * (ws.MAX_MESSAGE // 2 + 1))
    assert feed(part + rest) == ([], "error")


@pytest.mark.parametrize("how", ["close", "reset", "silence"])
def test_handshake_failure_after_the_request_is_marked_sent(how: str) -> None:
    # The server got the whole request, then: closed, reset, or never answered. It may have
    # started the command: this is never retried (kubexec/retrying.py).
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    client.settimeout(0.5)
    server, _ = listener.accept()

    def answer() -> None:
        server.recv(65536)
        if how == "reset":
            server.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        if how != "silence":
            server.close()

    threading.Thread(target=answer).start()
    endpoint = ws.Endpoint("h", 443, "/exec")
    with pytest.raises(ws.RequestSent, match="the upgrade request was sent"):
        ws.upgrade(client, endpoint)  # type: ignore[arg-type]
    server.close()
    listener.close()


def test_header_injection_is_refused() -> None:
    client, _server = socket.socketpair()
    with pytest.raises(ws.WebSocketError, match="line break"):
        ws.upgrade(client, ws.Endpoint("h", 443, "/"), headers=[("Authorization", "a\r\nX: y")])  # type: ignore[arg-type]


# -- differential fuzzing against wsproto -------------------------------------------------------


def oracle(data: bytes) -> tuple[list[tuple[int, bytes]], str]:
    """wsproto's view of the same byte stream (as a client)."""
    proto = FrameProtocol(client=True, extensions=[])
    proto.receive_bytes(data)
    messages: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    kind: int | None = None
    try:
        for frame in proto.received_frames():
            if frame.opcode is Opcode.CLOSE:
                return messages, "close"
            if frame.opcode.iscontrol():
                continue
            if kind is None:
                kind = int(frame.opcode)
            payload: Any = frame.payload
            parts.append(payload.encode() if isinstance(payload, str) else bytes(payload))
            if frame.message_finished:
                messages.append((kind, b"".join(parts)))
                parts, kind = [], None
    except ParseFailed:
        return messages, "error"
    return messages, "eof"


def random_frame(rng: random.Random) -> bytes:
    """Mostly valid frames, with one rule broken now and then."""
    opcode = rng.choice(
        [ws.OP_BINARY] * 6 + [ws.OP_TEXT, ws.OP_CONT, ws.OP_CONT, ws.OP_PING, ws.OP_PONG]
        + [ws.OP_CLOSE, 0x3, 0xB]
    )  # fmt: skip
    if opcode == ws.OP_TEXT:
        payload = rng.choice(["héllo", "plain", "ü" * rng.randint(0, 80)]).encode()
        if rng.random() < 0.1:
            payload += b"\xff"
    elif opcode == ws.OP_CLOSE:
        code = rng.choice([1000, 1001, 1002, 1004, 1005, 1011, 1015, 2999, 3000, 4999, 5000])
        payload = struct.pack("!H", code) + rng.choice([b"", b"bye", b"\xc3"])
        if rng.random() < 0.1:
            payload = payload[:1]
    else:
        payload = rng.randbytes(rng.choice([0, 1, 5, 125, 126, 200, 65536]))
    fin = rng.random() < 0.7 or (opcode >= 0x8 and rng.random() < 0.9)
    rsv = rng.choice([0] * 20 + [1, 2, 4])
    mask = b"mask" if rng.random() < 0.03 else None
    frame = server_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask)
    if rng.random() < 0.03 and len(payload) < 126:  # a non-minimal 16-bit length
        frame = struct.pack("!BBH", frame[0], 126, len(payload)) + payload
    return frame


@pytest.mark.parametrize("seed", range(300))
def test_fuzz_agrees_with_wsproto(seed: int) -> None:
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    data = b"".join(random_frame(rng) for _ in range(rng.randint(1, 12)))
    if rng.random() < 0.2:
        data = data[: rng.randint(0, len(data))]  # cut anywhere
    assert feed(data) == oracle(data)
