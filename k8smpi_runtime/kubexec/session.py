"""One kubexec run in a pod: open the exec(s), pump the streams, return the remote exit code.

Three modes (see :mod:`k8smpi_runtime.kubexec.remote` for the remote half):

- ``lifeline`` (stdin not forwarded: ``-n``, stdin is /dev/null, or ``--no-forward-stdin``;
  what MPI launchers give their agent): one exec, opened with stdin, on which nothing is ever
  sent. When kubexec goes away for any reason the server closes the command's stdin and the
  wrapper tears the session down.
- ``forward`` (local stdin is forwarded, as ssh does): first a tiny *guard* exec that is the
  lifeline, then the command's exec, whose stdin gets local stdin and, on EOF, a v5 CLOSE.
  After the command's status arrived the guard is told ``done``.
- ``tty``: one exec with a terminal; local stdin in raw mode, window size and resizes sent.

stdout and stderr are written to fds 1 and 2 as raw bytes, frame by frame, unbuffered.
Nothing is retried once an exec stream is open.

v4 (servers without ``v5.channel.k8s.io``) cannot half-close stdin. The lifeline and tty
modes never need to; ``forward`` then becomes ``framed``: stdin travels in length-prefixed
frames with an end frame, decoded by the remote wrapper, so EOF still arrives (the guard's
handshake tells which protocol the server speaks before the command's exec is opened).
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from k8smpi_runtime.errors import ApiError, K8smpiError, NotFoundError, TransportError
from k8smpi_runtime.kube import exec as kexec
from k8smpi_runtime.kubexec import failures, remote, retrying

if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Iterator, Sequence

    from k8smpi_runtime.kube.config import ClientConfig
    from k8smpi_runtime.kubexec.identity import Identity
    from k8smpi_runtime.kubexec.resolve import Target

logger = logging.getLogger(__name__)

Mode = Literal["lifeline", "forward", "tty"]

READ_SIZE = 64 * 1024
GUARD_STOP_WAIT = 2.0
"""Seconds to wait for the guard to acknowledge ``done`` before closing its stream."""


class OutputClosed(K8smpiError):
    """Local stdout or stderr went away (EPIPE): the remote output has nowhere to go."""


@dataclass(frozen=True)
class Request:
    """What to run where, and how."""

    target: Target
    command: str | None
    identity: Identity
    mode: Mode
    shell: str = "/bin/sh"
    grace: float = 5.0


@dataclass(frozen=True)
class Streams:
    """Local file descriptors (tests pass pipes)."""

    stdin: int = 0
    stdout: int = 1
    stderr: int = 2


def stdin_is_null(fd: int = 0) -> bool:
    """Whether ``fd`` is /dev/null or closed: nothing to forward."""
    try:
        st = os.fstat(fd)
    except OSError:
        return True
    if not stat.S_ISCHR(st.st_mode):
        return False
    try:
        null = Path(os.devnull).stat()
    except OSError:
        return False
    return st.st_rdev == null.st_rdev


def run(
    config: ClientConfig,
    request: Request,
    *,
    policy: retrying.Policy,
    streams: Streams | None = None,
    connect_timeout: float = 30.0,
    subprotocols: Sequence[str] = kexec.SUBPROTOCOLS,
    sock: ssl.SSLSocket | None = None,
) -> int:
    """Run ``request``; the remote exit code, or a K8smpiError for everything else.

    ``sock``: an idle keep-alive connection to the API server for the first exec to take
    over (the one the pod lookup used); later execs and retries open their own.
    """
    runner = _Runner(
        config,
        request=request,
        policy=policy,
        streams=streams or Streams(),
        connect_timeout=connect_timeout,
        subprotocols=subprotocols,
        sock=sock,
    )
    if request.mode == "lifeline":
        return runner.lifeline()
    if request.mode == "forward":
        return runner.forward()
    return runner.tty()


class _Runner:
    def __init__(
        self,
        config: ClientConfig,
        *,
        request: Request,
        policy: retrying.Policy,
        streams: Streams,
        connect_timeout: float,
        subprotocols: Sequence[str],
        sock: ssl.SSLSocket | None,
    ) -> None:
        self.config = config
        self._sock = sock
        self.request = request
        self.policy = policy
        self.streams = streams
        self.connect_timeout = connect_timeout
        self.subprotocols = tuple(subprotocols)
        self.session_id = remote.new_session_id()

    # -- the modes ----------------------------------------------------------------------------

    def lifeline(self) -> int:
        stream = self._open(self._argv("lifeline"), stdin=True, tty=False)
        try:
            self._pump_output(stream.frames())
            return stream.exit_code()
        finally:
            stream.abort()
            stream.close()

    def forward(self) -> int:
        argv = remote.build_guard_argv(session_id=self.session_id, grace=self.request.grace)
        guard = self._open(argv, stdin=True, tty=False, what="lifeline exec")
        try:
            guard_frames = guard.frames()
            _await_ready(guard, guard_frames)
            guard_done = _drain_in_thread(guard_frames, "kubexec-guard")
            framed = not guard.can_close_stdin
            mode: remote.StdinMode = "framed" if framed else "forward"
            stream = self._open(self._argv(mode), stdin=True, tty=False)
            try:
                _start_stdin_pump(stream, self.streams.stdin, framed=framed)
                self._pump_output(stream.frames())
                code = stream.exit_code()
            finally:
                stream.abort()
                stream.close()
            # The command is over: stand the guard down, so its teardown does not run.
            guard.write_stdin(b"done\n")
            guard.close_stdin()
            guard_done.wait(GUARD_STOP_WAIT)
            return code
        finally:
            guard.abort()
            guard.close()

    def tty(self) -> int:
        stream = self._open(self._argv("tty"), stdin=True, tty=True)
        fd = self.streams.stdin
        restore: Callable[[], None] | None = None
        try:
            if os.isatty(fd):
                restore = _raw_mode(fd)
                _watch_window(stream, fd)
            _start_stdin_pump(stream, fd)
            self._pump_output(stream.frames())
            return stream.exit_code()
        finally:
            if restore is not None:
                restore()
            stream.abort()
            stream.close()

    # -- plumbing -----------------------------------------------------------------------------

    def _argv(self, mode: remote.StdinMode) -> list[str]:
        ident = self.request.identity
        return remote.build_remote_argv(
            command=self.request.command,
            grace=self.request.grace,
            uid=ident.uid,
            gid=ident.gid,
            groups=ident.groups,
            session_id=self.session_id,
            shell=self.request.shell,
            stdin=mode,
        )

    def _open(
        self, argv: list[str], *, stdin: bool, tty: bool, what: str = "exec"
    ) -> kexec.ExecStream:
        target = self.request.target
        exec_target = kexec.ExecTarget(target.namespace, target.pod, target.container)

        def attempt() -> kexec.ExecStream:
            sock, self._sock = self._sock, None  # a reused connection serves one try only
            remaining = self.policy.remaining()
            timeout = self.connect_timeout if remaining is None else max(remaining, 0.1)
            try:
                return kexec.ExecStream(
                    self.config,
                    exec_target,
                    argv,
                    stdin=stdin,
                    tty=tty,
                    connect_timeout=min(timeout, self.connect_timeout),
                    subprotocols=self.subprotocols,
                    sock=sock,
                )
            except NotFoundError as e:
                raise TransportError(f"pod {target.namespace}/{target.pod} is gone ({e})") from e
            except ApiError as e:
                explained = failures.explain(
                    e,
                    verb="create",
                    resource="pods/exec",
                    namespace=target.namespace,
                    user=failures.token_subject(self.config.token),
                )
                if explained is e:
                    raise
                raise explained from e

        stream = retrying.call(attempt, self.policy, what=f"{what} into {target.pod}")
        logger.debug(
            "%s into %s/%s open (%s, session %s)",
            what,
            target.namespace,
            target.pod,
            stream.protocol,
            self.session_id,
        )
        return stream

    def _pump_output(self, frames: Iterator[tuple[int, bytes]]) -> None:
        out, err = self.streams.stdout, self.streams.stderr
        for channel, payload in frames:
            _write_all(out if channel == kexec.STDOUT else err, payload)


def _await_ready(guard: kexec.ExecStream, frames: Iterator[tuple[int, bytes]]) -> None:
    """Read the guard's stdout until its ``ready`` line."""
    seen = b""
    for channel, payload in frames:
        if channel == kexec.STDOUT:
            seen += payload
            if b"ready\n" in seen:
                return
        else:
            logger.debug("lifeline exec stderr: %r", payload)
    code = "none"
    try:
        code = str(guard.exit_code())
    except K8smpiError as e:
        code = str(e)
    raise TransportError(f"the lifeline exec ended before it was ready (status: {code})")


def _drain_in_thread(frames: Iterator[tuple[int, bytes]], name: str) -> threading.Event:
    """Read (and answer pings on) a stream nobody else reads; the event is set when it ends."""
    done = threading.Event()

    def drain() -> None:
        try:
            for _ in frames:
                pass
        except K8smpiError as e:
            logger.debug("%s: %s", name, e)
        finally:
            done.set()

    threading.Thread(target=drain, name=name, daemon=True).start()
    return done


def _start_stdin_pump(stream: kexec.ExecStream, fd: int, *, framed: bool = False) -> None:
    """Forward ``fd`` to the exec's stdin in a daemon thread.

    EOF becomes a v5 CLOSE; with ``framed`` (v4) every chunk is sent as ``<length>\\n`` plus
    the bytes and EOF as ``0\\n``, for the wrapper's decoder. Without either (a v4 tty), EOF
    cannot be passed on and is only logged.
    """

    def pump() -> None:
        try:
            while True:
                try:
                    data = os.read(fd, READ_SIZE)
                except InterruptedError:
                    continue
                except OSError as e:
                    logger.debug("reading local stdin failed: %s", e)
                    data = b""
                if not data:
                    if framed:
                        stream.write_stdin(b"0\n")
                    elif stream.can_close_stdin:
                        stream.close_stdin()
                    else:
                        logger.debug("%s cannot pass stdin EOF on", stream.protocol)
                    return
                stream.write_stdin(b"%d\n%s" % (len(data), data) if framed else data)
        except K8smpiError as e:
            logger.debug("forwarding stdin stopped: %s", e)

    threading.Thread(target=pump, name="kubexec-stdin", daemon=True).start()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except BrokenPipeError as e:
            raise OutputClosed(f"local {'stdout' if fd == 1 else f'fd {fd}'} was closed") from e
        view = view[written:]


def _raw_mode(fd: int) -> Callable[[], None]:
    """Put the terminal on ``fd`` in raw mode; returns what restores it."""
    import termios  # noqa: PLC0415 - only interactive sessions need terminals
    import tty  # noqa: PLC0415

    saved = termios.tcgetattr(fd)
    tty.setraw(fd)

    def restore() -> None:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return restore


def _watch_window(stream: kexec.ExecStream, fd: int) -> None:
    """Send the window size now and after every SIGWINCH (from a thread, never the handler)."""
    changed = threading.Event()

    def send_size() -> None:
        while True:
            try:
                size = os.get_terminal_size(fd)
                stream.resize(size.columns, size.lines)
            except (OSError, K8smpiError) as e:
                logger.debug("window size: %s", e)
                return
            changed.wait()
            changed.clear()

    signal.signal(signal.SIGWINCH, lambda _signum, _frame: changed.set())
    threading.Thread(target=send_size, name="kubexec-winch", daemon=True).start()
