"""The minimal websocket client's framing, over a socketpair (no TLS needed for frames).

The devcluster exercises the handshake and ordinary frames on every kubexec call; these are
the cases a real API server rarely sends: fragmentation, 16- and 64-bit lengths, pings, a
close in the middle, a cut connection.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
from typing import Any

import pytest

from k8smpi_runtime.kube import websocket as ws


def pair() -> tuple[ws.WebSocket, socket.socket]:
    client, server = socket.socketpair()
    return ws.WebSocket(client, client.makefile("rb"), "v5.channel.k8s.io"), server  # type: ignore[arg-type]


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    """What a server sends: unmasked."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        return struct.pack("!BB", first, n) + payload
    if n < 1 << 16:
        return struct.pack("!BBH", first, 126, n) + payload
    return struct.pack("!BBQ", first, 127, n) + payload


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


def test_client_frames_are_masked_and_round_trip() -> None:
    sock, server = pair()
    for size in (3, 200, 70_000):
        payload = os.urandom(size)
        writer = threading.Thread(target=sock.send_binary, args=(payload,))
        writer.start()
        assert read_client_frame(server) == (ws.OP_BINARY, payload)
        writer.join(5)


def test_close_and_cut_end_the_stream() -> None:
    sock, server = pair()
    server.sendall(server_frame(ws.OP_CLOSE, struct.pack("!H", 1000)))
    assert sock.recv() is None
    assert read_client_frame(server)[0] == ws.OP_CLOSE
    sock2, server2 = pair()
    server2.sendall(server_frame(ws.OP_BINARY, b"\x01partial")[:5])
    server2.close()
    assert sock2.recv() is None  # cut mid-frame: the end, not an exception


def test_abort_unblocks_a_reader() -> None:
    sock, _server = pair()
    got: list[Any] = []
    reader = threading.Thread(target=lambda: got.append(sock.recv()))
    reader.start()
    sock.abort()
    reader.join(5)
    assert not reader.is_alive()
    assert got == [None]
