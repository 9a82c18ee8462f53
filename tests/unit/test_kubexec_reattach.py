"""kubexec's re-attach (k8smpi_runtime/kubexec/reattach.py) against the real wrapper.

The exec stream is a stand-in (:class:`LocalExec`) that runs the wrapper as a local process
and hands its stdout and stderr over as frames, as the API server would; :meth:`cut` is a lost
stream (the process's stdin ends, what it writes afterwards is lost, kubexec's read fails),
and :attr:`LocalExec.refuse` makes the next opens fail as an API server that is down does. The
whole path (a real API server killed) is in tests/e2e/test_real_node_reattach.py.
"""

from __future__ import annotations

import contextlib
import os
import queue
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any, ClassVar

import pytest

from k8smpi_runtime.errors import NotFoundError, TransportError
from k8smpi_runtime.kube import exec as kexec
from k8smpi_runtime.kube.config import ClientConfig
from k8smpi_runtime.kubexec import identity, remote, resolve, retrying, session
from tests.unit.wrapperkit import claims, kill_all, marked_pids, remove_new_claims, wait_for

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

CONFIG = ClientConfig(server="https://kube.test:6443", namespace="ns", source="test")
WINDOW = 3.0


class LocalExec:
    """An exec stream whose remote end is a local process (see the module docstring)."""

    opened: ClassVar[list[LocalExec]] = []
    refuse: ClassVar[list[Exception]] = []
    """Errors the next opens raise, one each (an API server that is down)."""

    def __init__(self, _config: Any, target: Any, command: list[str], **_kwargs: Any) -> None:
        if LocalExec.refuse:
            raise LocalExec.refuse.pop(0)
        self.target = target
        self.argv = command
        self.protocol = kexec.V5
        self.status: dict[str, Any] | None = None
        self.presumed_dead: kexec.Keepalive | None = None
        self.written: list[bytes] = []
        self.broken = False
        self._frames: queue.Queue[tuple[int, bytes] | None] = queue.Queue()
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, kexec.STDOUT)),
            threading.Thread(target=self._read, args=(self.proc.stderr, kexec.STDERR)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()
        threading.Thread(target=self._end, daemon=True).start()
        LocalExec.opened.append(self)

    def _read(self, stream: Any, channel: int) -> None:
        while data := os.read(stream.fileno(), 65536):
            with self._lock:
                if not self.broken:
                    self._frames.put((channel, data))

    def _end(self) -> None:
        for reader in self._readers:
            reader.join()
        code = self.proc.wait()
        with self._lock:
            if self.broken:
                return
            if code == 0:
                self.status = {"status": "Success"}
            else:
                self.status = {
                    "status": "Failure",
                    "reason": "NonZeroExitCode",
                    "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
                }
            self._frames.put(None)

    def cut(self) -> None:
        """The stream is lost: the process's stdin ends, nothing more arrives either way."""
        with self._lock:
            self.broken = True
            self._frames.put(None)
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()

    @property
    def can_close_stdin(self) -> bool:
        return True

    def write_stdin(self, data: bytes, *, timeout: float | None = None) -> None:
        if self.broken:
            raise TransportError("exec into p: sending failed: connection reset")
        self.written.append(data)
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as e:
            raise TransportError(f"exec into p: sending failed: {e}") from e

    def frames(self) -> Iterator[tuple[int, bytes]]:
        while (item := self._frames.get()) is not None:
            yield item
        if self.broken:
            raise TransportError("exec into p: stream broken: connection reset by peer")

    exit_code = kexec.ExecStream.exit_code

    def start_heartbeat(self, keepalive: kexec.Keepalive, nudge: Any = None) -> None:
        self.nudge: Callable[[], None] | None = nudge

    def abort(self) -> None:
        if not self.broken and self.proc.poll() is None:
            self.cut()

    def close(self) -> None:
        pass


@pytest.fixture(autouse=True)
def _no_window_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    # The pod's margin beyond the window (5 s) would only make these tests slower.
    monkeypatch.setattr(remote, "WINDOW_MARGIN", 0.0)


@pytest.fixture(autouse=True)
def local(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[LocalExec]]:
    monkeypatch.setattr(kexec, "ExecStream", LocalExec)
    monkeypatch.setattr(retrying, "MAX_WAIT", 0.5)
    LocalExec.opened = []
    LocalExec.refuse = []
    before = claims()
    yield LocalExec
    for ex in LocalExec.opened:
        if ex.proc.poll() is None:
            ex.proc.kill()
    remove_new_claims(before)


def feed(fd: int, data: bytes) -> None:
    """All of ``data`` into the pipe ``fd``: one ``os.write`` may write only part of it (seen
    here: 65536 bytes, a pipe's capacity, about once in 70 runs under load)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


class Run:
    """kubexec's session in a thread, with pipes for its local streams."""

    def __init__(self, command: str, *, mode: session.Mode = "lifeline", stdin: bytes = b"",
                 window: float = WINDOW) -> None:  # fmt: skip
        self.stdin_r, self.stdin_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        self.request = session.Request(
            target=resolve.Target("ns", "p", None),
            command=command,
            identity=identity.Identity(),
            mode=mode,
            grace=0.3,
            reattach=window,
        )
        self.code: int | None = None
        self.error: BaseException | None = None
        self.out = bytearray()
        self.err = bytearray()
        self._fds = (out_w, err_w)
        self.readers = [
            threading.Thread(target=self._read, args=(out_r, self.out), daemon=True),
            threading.Thread(target=self._read, args=(err_r, self.err), daemon=True),
        ]
        for reader in self.readers:
            reader.start()
        self.thread = threading.Thread(target=self._run, args=(out_w, err_w), daemon=True)
        self.thread.start()
        if stdin:  # more than a pipe holds: written while kubexec reads
            threading.Thread(target=feed, args=(self.stdin_w, stdin), daemon=True).start()

    def _read(self, fd: int, sink: bytearray) -> None:
        while data := os.read(fd, 65536):
            sink += data
        os.close(fd)

    def _run(self, out_w: int, err_w: int) -> None:
        try:
            self.code = session.run(
                CONFIG,
                self.request,
                policy=retrying.Policy(attempts=1),
                streams=session.Streams(stdin=self.stdin_r, stdout=out_w, stderr=err_w),
            )
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e
        finally:
            os.close(out_w)
            os.close(err_w)

    def end_stdin(self) -> None:
        os.close(self.stdin_w)

    def result(self, timeout: float = 20) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "kubexec did not finish"
        for reader in self.readers:
            reader.join(timeout)
        os.close(self.stdin_r)
        if self.error is not None:
            raise self.error
        assert self.code is not None
        return self.code


def wait_opened(n: int, timeout: float = 10) -> LocalExec:
    assert wait_for(lambda: len(LocalExec.opened) >= n, timeout), len(LocalExec.opened)
    return LocalExec.opened[n - 1]


def session_of(run: Run) -> str:
    return wait_opened(1).argv[4]


def lines(n: int, tick: float = 0.2) -> str:
    return f"i=0; while [ $i -lt {n} ]; do i=$((i+1)); echo $i; echo e$i >&2; sleep {tick}; done"


def expected(n: int, prefix: str = "") -> bytes:
    return b"".join(f"{prefix}{i}\n".encode() for i in range(1, n + 1))


def test_output_across_a_loss_arrives_once_and_the_status_with_it() -> None:
    run = Run(f"{lines(10)}; exit 3")
    first = wait_opened(1)
    assert wait_for(lambda: run.out.count(b"\n") >= 3, 10)
    first.cut()
    assert run.result() == 3
    assert (bytes(run.out), bytes(run.err)) == (expected(10), expected(10, "e"))
    [_, attach] = LocalExec.opened
    assert attach.argv[6] == "attach"
    assert attach.argv[-1].split(",") != ["0", "0"]  # the offsets it had
    # Goodbye once it had everything: the session ends at once, nothing waits a window.
    assert remote.BYE in attach.written
    sid = attach.argv[4]
    assert wait_for(lambda: not marked_pids(sid), 3)
    kill_all(sid)


def test_the_api_server_down_for_a_while_within_the_window() -> None:
    run = Run(lines(15))
    first = wait_opened(1)
    assert wait_for(lambda: run.out.count(b"\n") >= 2, 10)
    LocalExec.refuse = [TransportError("connection refused")] * 4
    first.cut()
    assert run.result() == 0
    assert bytes(run.out) == expected(15)
    assert LocalExec.refuse == []
    kill_all(first.argv[4])


def test_no_reattach_within_the_window_is_a_255_that_says_so() -> None:
    run = Run("sleep 30", window=1.5)
    first = wait_opened(1)
    time.sleep(0.5)
    LocalExec.refuse = [TransportError("connection refused")] * 1000
    lost = time.monotonic()
    first.cut()
    with pytest.raises(TransportError) as caught:
        run.result()
    took = time.monotonic() - lost
    message = str(caught.value)
    assert "no re-attach succeeded within 1.5s (--reattach; last try: connection refused)" in (
        message
    )
    assert "the pod ends the session" in message
    assert 1.0 < took < 1.5 + 1.0
    # The pod's half: the session ends after its own window (and its margin).
    sid = first.argv[4]
    assert wait_for(lambda: not marked_pids(sid), 1.5 + 3)
    kill_all(sid)


def test_a_pod_that_is_gone_ends_the_wait_at_once() -> None:
    run = Run("sleep 30")
    first = wait_opened(1)
    time.sleep(0.5)
    LocalExec.refuse = [NotFoundError('pods "p" not found', status=404)]
    first.cut()
    with pytest.raises(TransportError, match="the pod is gone"):
        run.result(5)
    kill_all(first.argv[4])


def test_a_stream_the_runtime_cut_is_reattached() -> None:
    # The API server reports Success for a stream its runtime ended (an idle timeout): without
    # the exit record that is a loss, not the command's success.
    run = Run(lines(6))
    first = wait_opened(1)
    assert wait_for(lambda: run.out.count(b"\n") >= 2, 10)
    with first._lock:
        first.broken = True
        first.status = {"status": "Success"}
        first._frames.put(None)
    assert first.proc.stdin is not None
    first.proc.stdin.close()
    first.broken = False  # it ended with a status, not with an error
    assert run.result() == 0
    assert bytes(run.out) == expected(6)
    assert len(LocalExec.opened) == 2
    kill_all(first.argv[4])


def test_forwarded_stdin_across_losses_is_neither_lost_nor_doubled() -> None:
    data = os.urandom(400_000)
    run = Run("cat; echo end >&2", mode="forward", stdin=data[:150_000])
    first = wait_opened(1)
    assert wait_for(lambda: len(run.out) >= 100_000, 10)
    first.cut()  # some frames in flight are lost
    second = wait_opened(2)
    feed(run.stdin_w, data[150_000:300_000])
    assert wait_for(lambda: len(run.out) >= 200_000, 10)
    second.cut()
    feed(run.stdin_w, data[300_000:])
    run.end_stdin()
    assert run.result() == 0
    assert bytes(run.out) == data
    assert bytes(run.err) == b"end\n"
    kill_all(first.argv[4])


def test_a_wrapper_that_refuses_is_its_code_not_a_reattach() -> None:
    # A status with a code and no record: the wrapper's own refusal (its line on stderr).
    run = Run("true")
    first = wait_opened(1)
    assert run.result() == 0
    again = LocalExec(CONFIG, first.target, first.argv)
    again.write_stdin(remote.preamble("true"))
    assert again.proc.wait(5) == 255  # the same session id twice: refused
    kill_all(first.argv[4])


def test_acknowledgements_ride_on_the_keepalive() -> None:
    run = Run("echo one; sleep 30")
    first = wait_opened(1)
    assert wait_for(lambda: run.out == b"one\n", 10)
    assert first.nudge is not None
    first.nudge()
    first.nudge()
    assert first.written[-2:] == [remote.ack(4, 0), remote.KEEPALIVE]
    LocalExec.refuse = [TransportError("connection refused")] * 1000  # before the cut: no
    first.cut()  # re-attach may slip in between
    with pytest.raises(TransportError):
        run.result()
    kill_all(first.argv[4])


def test_goodbye_from_another_thread_ends_the_session_at_once() -> None:
    # A control master's session process whose caller went away says goodbye before it exits
    # (master._leave): the pod ends the command now, not after the window.
    from k8smpi_runtime.kubexec import reattach  # noqa: PLC0415

    window = 60.0  # far beyond a teardown's time even on a loaded machine
    run = Run("trap '' TERM; sleep 1000", window=window)
    first = wait_opened(1)
    sid = first.argv[4]
    assert wait_for(lambda: bool(marked_pids(sid)), 10)
    said = time.monotonic()
    reattach.goodbye()
    assert remote.BYE in first.written
    # TERM ignored: KILL after the grace (0.3 s), and not after the window.
    assert wait_for(lambda: not marked_pids(sid), 20)
    assert time.monotonic() - said < window / 2
    assert run.result(20) == 255  # torn down: the wrapper's own 255
    assert not reattach._LIVE
    kill_all(sid)
