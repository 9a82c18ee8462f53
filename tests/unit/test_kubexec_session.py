"""kubexec's session against fake exec streams (what the local side sends, in which order) and
the exec stream's heartbeat against a socketpair server (pings, nudges, a peer gone silent).

The remote half runs for real in test_kubexec_remote.py; the whole path in tests/e2e.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from k8smpi_runtime.errors import TransportError
from k8smpi_runtime.kube import exec as kexec
from k8smpi_runtime.kube import websocket as ws
from k8smpi_runtime.kube.config import ClientConfig
from k8smpi_runtime.kubexec import identity, remote, resolve, retrying, session

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CONFIG = ClientConfig(server="https://kube.test:6443", namespace="ns", source="test")


class FakeStream:
    """An exec that records what kubexec writes; its output ends once stdin input ended."""

    protocols: ClassVar[list[str]] = []
    opened: ClassVar[list[FakeStream]] = []
    fail_writes_after_status = False

    def __init__(self, _config: Any, target: Any, command: list[str], **kwargs: Any) -> None:
        self.target = target
        self.argv = command
        self.kwargs = kwargs
        self.protocol = FakeStream.protocols.pop(0) if FakeStream.protocols else kexec.V5
        self.written: list[bytes] = []
        self.status: dict[str, Any] | None = None
        self.presumed_dead: kexec.Keepalive | None = None
        self.heartbeat: tuple[kexec.Keepalive, Callable[[], None] | None] | None = None
        self.input_done = threading.Event()
        FakeStream.opened.append(self)

    @property
    def can_close_stdin(self) -> bool:
        return self.protocol == kexec.V5

    def write_stdin(self, data: bytes) -> None:
        if self.status is not None and FakeStream.fail_writes_after_status:
            raise TransportError("exec into p: sending failed: connection reset")
        self.written.append(data)
        if data == remote.END_OF_INPUT or data.startswith(b"done"):
            self.input_done.set()

    def close_stdin(self) -> None:
        self.written.append(b"<CLOSE>")
        self.input_done.set()

    def start_heartbeat(self, keepalive: kexec.Keepalive, nudge: Any = None) -> None:
        self.heartbeat = (keepalive, nudge)

    record = True

    def frames(self) -> Iterator[tuple[int, bytes]]:
        if self.kwargs.get("stdin") and "guard" not in self.argv:
            self.input_done.wait(2)  # a command like cat: ends when its input ends
        yield kexec.STDOUT, b"out"
        if FakeStream.record:  # the wrapper's exit record, cut across two frames
            sid = self.argv[4]
            yield kexec.STDERR, b"err\x1ekubexec-ex"
            yield kexec.STDERR, f"it:{sid}:0\x1e".encode()
        self.status = {"status": "Success"}

    exit_code = kexec.ExecStream.exit_code

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeStream]]:
    monkeypatch.setattr(kexec, "ExecStream", FakeStream)
    FakeStream.protocols = []
    FakeStream.opened = []
    FakeStream.fail_writes_after_status = False
    FakeStream.record = True
    yield FakeStream


def request(mode: session.Mode, command: str | None = "cat") -> session.Request:
    return session.Request(
        target=resolve.Target("ns", "p", None),
        command=command,
        identity=identity.Identity(),
        mode=mode,
    )


def run(mode: session.Mode, stdin: bytes = b"") -> tuple[int, bytes]:
    code, out, err = run3(mode, stdin)
    assert err == b"err"  # the exit record is taken out, the rest passes
    return code, out


def run3(mode: session.Mode, stdin: bytes = b"") -> tuple[int, bytes, bytes]:
    r, w = os.pipe()
    os.write(w, stdin)
    os.close(w)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        code = session.run(
            CONFIG,
            request(mode),
            policy=retrying.Policy(attempts=1),
            streams=session.Streams(stdin=r, stdout=out_w, stderr=err_w),
        )
    finally:
        os.close(r)
        os.close(out_w)
        os.close(err_w)
    with os.fdopen(out_r, "rb") as f, os.fdopen(err_r, "rb") as g:
        return code, f.read(), g.read()


@pytest.mark.parametrize("protocols", [[kexec.V5], [kexec.V4], [kexec.V5, kexec.V4]])
def test_forward_is_one_exec_whose_input_ends_with_a_frame(
    fake: type[FakeStream], protocols: list[str]
) -> None:
    # [V5, V4]: a second exec would meet an older API server behind the same load balancer.
    fake.protocols = list(protocols)
    assert run("forward", b"abc") == (0, b"out")
    [stream] = fake.opened
    assert stream.argv[:3] == ["/bin/sh", "-c", remote.ENTRY]
    assert stream.argv[5:7] == ["5000", "forward"]
    assert stream.written == [remote.preamble("cat"), remote.frame(b"abc"), remote.END_OF_INPUT]


def test_lifeline_sends_the_preamble_and_keeps_alive(fake: type[FakeStream]) -> None:
    assert run("lifeline") == (0, b"out")
    [stream] = fake.opened
    assert stream.argv[6] == "lifeline"
    assert stream.written == [remote.preamble("cat")]
    assert stream.heartbeat is not None
    keepalive, nudge = stream.heartbeat
    assert keepalive == kexec.Keepalive()
    assert nudge is not None
    nudge()
    assert stream.written[-1] == remote.KEEPALIVE


def test_success_stays_success_when_the_connection_fails_after_the_status(
    fake: type[FakeStream],
) -> None:
    # The command's status is in: nothing kubexec could still send may turn 0 into 255.
    fake.fail_writes_after_status = True
    assert run("forward", b"x")[0] == 0


@pytest.mark.parametrize("mode", ["lifeline", "forward"])
def test_a_success_without_the_exit_record_is_a_cut_stream(
    fake: type[FakeStream], mode: session.Mode
) -> None:
    # What the API server sends when the runtime closed an idle exec: Success, and nothing
    # from the wrapper. That is not the command's success.
    fake.record = False
    with pytest.raises(TransportError, match="the stream ended before the command did"):
        run3(mode, b"x")


def test_exit_records_are_found_across_frames_and_only_ours() -> None:
    sid = "0123456789abcdef"
    record = remote.Records(sid)
    chunks = [b"a\x1e", b"kubexec-exit:other:3\x1e b", b"\x1ekubexec-exit:", sid.encode(),
              b":", b"42", b"\x1e", b"tail\x1e", b"kub"]  # fmt: skip
    out = b"".join(record.feed(c) for c in chunks) + record.flush()
    assert record.code == 42
    assert out == b"a\x1ekubexec-exit:other:3\x1e btail\x1ekub"
    bogus = remote.Records(sid)
    text = b"\x1ekubexec-exit:" + sid.encode() + b":x1\x1e"
    assert bogus.feed(text) + bogus.flush() == text
    assert bogus.code is None


# -- the heartbeat, against a socketpair "API server" ---------------------------------------------


class Server:
    """The far end of an exec websocket: reads the client's frames, answers pings or not."""

    def __init__(self, sock: socket.socket, *, answer_pings: bool) -> None:
        self.sock = sock
        self.answer_pings = answer_pings
        self.pings = 0
        self.stdin: list[bytes] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        reader: Any = self.sock.makefile("rb")
        try:
            while True:
                head = reader.read(2)
                if len(head) < 2:
                    return
                n = head[1] & 0x7F
                if n == 126:
                    (n,) = struct.unpack("!H", reader.read(2))
                elif n == 127:
                    (n,) = struct.unpack("!Q", reader.read(8))
                mask = reader.read(4)
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(reader.read(n)))
                opcode = head[0] & 0x0F
                if opcode == ws.OP_PING:
                    self.pings += 1
                    if self.answer_pings:
                        self.sock.sendall(struct.pack("!BB", 0x80 | ws.OP_PONG, len(data)) + data)
                elif opcode == ws.OP_BINARY and data[:1] == b"\x00":
                    self.stdin.append(data[1:])
        except OSError:
            return

    def finish(self, code: int) -> None:
        status = b'{"status":"Success"}' if code == 0 else b'{"status":"Failure"}'
        frame = b"\x03" + status
        self.sock.sendall(struct.pack("!BB", 0x80 | ws.OP_BINARY, len(frame)) + frame)
        self.sock.sendall(struct.pack("!BBH", 0x80 | ws.OP_CLOSE, 2, 1000))


def open_stream(
    monkeypatch: pytest.MonkeyPatch, *, answer_pings: bool
) -> tuple[kexec.ExecStream, Server]:
    client, far = socket.socketpair()

    def connect(*_args: Any, **_kwargs: Any) -> ws.WebSocket:
        return ws.WebSocket(client, ws._Reader(client), kexec.V5)  # type: ignore[arg-type]

    monkeypatch.setattr(ws, "connect", connect)
    stream = kexec.ExecStream(CONFIG, kexec.ExecTarget("ns", "p"), ["true"], stdin=True)
    return stream, Server(far, answer_pings=answer_pings)


def test_a_peer_gone_silent_is_presumed_dead_within_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream, server = open_stream(monkeypatch, answer_pings=False)
    keepalive = kexec.Keepalive(interval=0.1, count_max=2)
    stream.start_heartbeat(keepalive, nudge=lambda: stream.write_stdin(remote.KEEPALIVE))
    started = time.monotonic()
    assert list(stream.frames()) == []  # ends: the heartbeat aborted the connection
    elapsed = time.monotonic() - started
    with pytest.raises(TransportError, match="no answer from the API server for 2 pings"):
        stream.exit_code()
    assert server.pings == 2
    assert elapsed < keepalive.bound + 2  # a generous margin: this checks the mechanism


def test_a_quiet_stream_that_answers_lives_and_is_nudged(monkeypatch: pytest.MonkeyPatch) -> None:
    stream, server = open_stream(monkeypatch, answer_pings=True)
    stream.start_heartbeat(
        kexec.Keepalive(interval=0.05, count_max=1),
        nudge=lambda: stream.write_stdin(remote.KEEPALIVE),
    )
    threading.Timer(1.0, server.finish, args=(0,)).start()  # 20 intervals of silence
    assert list(stream.frames()) == []
    assert stream.exit_code() == 0
    assert server.pings >= 5
    assert len(server.stdin) >= 10
    assert set(server.stdin) == {remote.KEEPALIVE}


def test_no_heartbeat_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    stream, server = open_stream(monkeypatch, answer_pings=False)
    stream.start_heartbeat(kexec.Keepalive(interval=0), nudge=lambda: None)
    threading.Timer(0.3, server.finish, args=(0,)).start()
    assert list(stream.frames()) == []
    assert stream.exit_code() == 0
    assert (server.pings, server.stdin) == (0, [])


def test_a_broken_frame_is_a_transport_error_not_a_crash(monkeypatch: pytest.MonkeyPatch) -> None:
    # What crashed the waiter's --exec-probe: a 2**63-1 byte frame.
    stream, server = open_stream(monkeypatch, answer_pings=True)
    server.sock.sendall(struct.pack("!BBQ", 0x82, 127, 2**63 - 1))
    with pytest.raises(TransportError, match="stream broken: a frame over"):
        list(stream.frames())


@pytest.mark.parametrize("how", ["close", "reset"])
def test_an_exec_whose_request_went_out_is_never_tried_again(
    monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """Issue 11 point 2 end to end on this side: the upgrade request reached the server, then
    the connection was lost before an answer. The command may be running: the exec fails at
    once, not retryable, and the retry policy that would retry a refused connection does not
    open a second one."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[bytes] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(conn.recv(65536))
            if how == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    threading.Thread(target=serve, daemon=True).start()

    def connect(endpoint: ws.Endpoint, **_kwargs: Any) -> ws.WebSocket:
        sock = socket.create_connection(listener.getsockname())
        return ws.upgrade(sock, endpoint)  # type: ignore[arg-type]

    monkeypatch.setattr(ws, "connect", connect)

    def exec_once() -> kexec.ExecStream:
        return kexec.ExecStream(CONFIG, kexec.ExecTarget("ns", "p"), ["true"], stdin=True)

    with pytest.raises(TransportError, match="not retried: the command may have started") as e:
        retrying.call(exec_once, retrying.Policy(attempts=5), what="exec")
    listener.close()
    assert e.value.retryable is False
    assert not retrying.transient(e.value)
    assert len(accepted) == 1 and accepted[0].startswith(b"GET /api/v1/namespaces/ns/pods/p/exec")
