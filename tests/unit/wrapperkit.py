"""What the tests of the remote wrapper share: finding its processes, its session claims, and
one exec of it with pipes for its streams (:class:`Exec`)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k8smpi_runtime.kubexec import remote

if TYPE_CHECKING:
    from collections.abc import Callable


def marked_pids(session_id: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries the session marker."""
    needle = f"KUBEXEC_SESSION={session_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in environ.split(b"\0") and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def wrapper_pids(session_id: str) -> dict[int, int]:
    """pid -> real uid of every live process whose argv carries the session id (the wrapper,
    its watcher and their helpers; not the command, whose argv is its own)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            status = (entry / "status").read_text()
        except OSError:
            continue
        if session_id.encode() in argv and "\nState:\tZ" not in status:
            uid_line = next(line for line in status.splitlines() if line.startswith("Uid:"))
            found[int(entry.name)] = int(uid_line.split()[1])
    return found


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def claims() -> set[Path]:
    return {p for d in ("/dev/shm", "/tmp") for p in Path(d).glob(".kubexec-*")}


def remove_new_claims(before: set[Path]) -> None:
    """The session claims (folders) made since ``before`` go."""
    for claim in claims() - before:
        shutil.rmtree(claim, ignore_errors=True)


def spawn(
    launch: remote.Launch, *, env: dict[str, str] | None, prefix: tuple[str, ...]
) -> subprocess.Popen[bytes]:
    """One exec's process: the launch's argv (after ``prefix``), pipes for its streams."""
    return subprocess.Popen(
        [*prefix, *launch.argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )


class Stdin:
    """What kubexec writes on an exec's stdin besides the preamble: the command's input in
    frames, and its end (forward mode). Subclasses say how bytes are written."""

    def write(self, data: bytes) -> None:
        raise NotImplementedError

    def send(self, data: bytes) -> None:
        """The command's input, framed as kubexec frames it in forward mode."""
        for i in range(0, len(data), 65536):
            self.write(remote.frame(data[i : i + 65536]))

    def end_input(self) -> None:
        self.write(remote.END_OF_INPUT)


class Exec(Stdin):
    """One exec of the wrapper: stdin is its lifeline (the preamble is written at once);
    stdout and stderr are read as they come, the records taken out of stderr, and once the exit
    record and all the output it counts are in, goodbye is said (what kubexec does).
    :meth:`lose` is a lost stream: stdin ends, and what the exec writes afterwards is read but
    dropped (it never reaches kubexec); :meth:`stall` stops reading altogether (a stream that
    carries nothing more and is never closed)."""

    def __init__(
        self,
        launch: remote.Launch,
        *,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
        stalled: bool = False,
        base: tuple[int, int] = (0, 0),
    ) -> None:
        """``base``: the offsets an attach starts from (its acknowledgements count from them)."""
        self.proc = spawn(launch, env=env, prefix=prefix)
        self.session_id = launch.argv[4]
        self.records = remote.Records(self.session_id)
        self.out = bytearray()
        self.err = bytearray()
        self.lost = False
        self.base = base
        self.said_bye = False
        self._stdin_lock = threading.Lock()
        self._reading = threading.Event()
        if not stalled:
            self._reading.set()
        self._changed = threading.Condition()
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stderr, self.err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        if launch.preamble:
            self.write(launch.preamble)

    def _read(self, stream: Any, sink: bytearray) -> None:
        while True:
            self._reading.wait()
            data = os.read(stream.fileno(), 65536)
            with self._changed:
                if not data:
                    if sink is self.err and not self.lost:
                        sink += self.records.flush()
                    self._changed.notify_all()
                    return
                if not self.lost:
                    sink += self.records.feed(data) if sink is self.err else data
                self._changed.notify_all()
                done = self.complete and not self.lost
            if done:
                self.bye()

    # -- what kubexec writes ----------------------------------------------------------------

    @property
    def complete(self) -> bool:
        """The exit record came, and the output whose lengths it names (session mode)."""
        lengths = self.records.lengths
        if self.records.code is None:
            return False
        if lengths is None:
            return True
        have = (self.base[0] + len(self.out), self.base[1] + len(self.err))
        return all(h >= n for h, n in zip(have, lengths, strict=True))

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        with self._stdin_lock:
            if self.proc.stdin.closed:
                return  # kubexec said goodbye (the exit record came): it forwards no more
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    def ack(self) -> None:
        with self._changed:
            line = remote.ack(self.base[0] + len(self.out), self.base[1] + len(self.err))
        self.write(line)

    def bye(self) -> None:
        with self._stdin_lock:
            if self.said_bye:
                return
            self.said_bye = True
        with contextlib.suppress(BrokenPipeError, ValueError):
            self.write(remote.BYE)
        self.close_stdin()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        with self._stdin_lock, contextlib.suppress(BrokenPipeError):
            self.proc.stdin.close()

    def lose(self) -> tuple[int, int]:
        """The stream is lost here: what kubexec received so far, as attach offsets."""
        with self._changed:
            self.lost = True
            self.records.drop()
            offsets = (len(self.out), len(self.err))
        self.close_stdin()
        return offsets

    def stall(self) -> None:
        """Read nothing more (a read under way still completes)."""
        self._reading.clear()

    # -- what came back -----------------------------------------------------------------------

    @property
    def offsets(self) -> tuple[int, int]:
        with self._changed:
            return len(self.out), len(self.err)

    def wait_output(self, predicate: Callable[[Exec], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
        return True

    def finish(self, timeout: float = 10.0) -> int:
        """The exit status, once both output streams ended (the exec is over)."""
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        for reader in self._readers:
            reader.join(timeout)
        return rc


def kill_all(session_id: str) -> None:
    """Whatever a test left of a session (never leave processes behind)."""
    for pid in marked_pids(session_id) + list(wrapper_pids(session_id)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
