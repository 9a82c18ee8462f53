"""One kubexec run in a pod: open the exec, pump the streams, return the remote exit code.

Three modes (see :mod:`k8smpi_runtime.kubexec.remote` for the remote half), one exec each:

- ``lifeline`` (stdin not forwarded: ``-n``, stdin is /dev/null, or ``--no-forward-stdin``;
  what MPI launchers give their agent): the exec's stdin carries the wrapper's preamble, then
  only keepalives. When kubexec goes away for any reason the runtime closes that stdin and
  the wrapper tears the session down.
- ``forward`` (local stdin is forwarded, as ssh does): the same, with local stdin sent as
  frames after the preamble and its end as an end frame. The exec's stdin itself is never
  half-closed, so it stays the lifeline, and the framing works alike on ``v5`` and on ``v4``
  servers (which cannot half-close, kubernetes#89899).
- ``tty``: one exec with a terminal; local stdin in raw mode, window size and resizes sent.

stdout and stderr are written to fds 1 and 2 as raw bytes, frame by frame, unbuffered.
Nothing is retried once an exec request has gone out without an HTTP answer (the command may
be running; the wrapper also refuses a second start of the same session id).

Every exec gets a heartbeat (:meth:`~k8smpi_runtime.kube.exec.ExecStream.start_heartbeat`):
a keepalive on stdin (or, with a terminal, a resize to the same size) every
``ServerAliveInterval`` seconds, which keeps the runtime's stream idle timeout away, and pings
that find a dead connection within ``(ServerAliveCountMax + 2) x ServerAliveInterval``.
"""

from __future__ import annotations

import os
import signal
import stat
import threading

from k8smpi_runtime import lazylog
from k8smpi_runtime.errors import ApiError, K8smpiError, NotFoundError, TransportError
from k8smpi_runtime.kube import exec as kexec
from k8smpi_runtime.kubexec import failures, remote, retrying
from k8smpi_runtime.records import Record

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    import ssl
    from collections.abc import Callable, Iterator, Sequence
    from typing import Literal

    from k8smpi_runtime.kube.config import ClientConfig
    from k8smpi_runtime.kubexec.identity import Identity
    from k8smpi_runtime.kubexec.resolve import Target

    Mode = Literal["lifeline", "forward", "tty"]

logger = lazylog.getLogger(__name__)

READ_SIZE = 64 * 1024


class OutputClosed(K8smpiError):
    """Local stdout or stderr went away (EPIPE): the remote output has nowhere to go."""


class Request(Record):
    """What to run where, and how."""

    target: Target
    command: str | None
    identity: Identity
    mode: Mode
    shell: str = "/bin/sh"
    grace: float = 5.0
    keepalive: kexec.Keepalive = kexec.Keepalive()
    guessed: bool = False
    """The target is the host word taken as a pod name, not looked up: the API server's
    refusal to start the exec (404 no such pod; 400 not running, no such container; 401/403,
    which the lookup then names as before) is :class:`Unresolved`, and the caller looks the
    pod up. Nothing ran remotely then."""
    reattach: float = 0.0
    """Seconds to re-attach within after a lost stream (0: a lost stream ends it, as before);
    see :mod:`k8smpi_runtime.kubexec.reattach`."""


class Unresolved(K8smpiError):
    """A guessed target (see :attr:`Request.guessed`) that the API server did not exec into."""


class Streams(Record):
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
        null = os.stat(os.devnull)  # noqa: PTH116 - no pathlib on kubexec's path
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

    ``sock``: an idle keep-alive connection to the API server for the exec to take over (the
    one the pod lookup used); a retry opens its own.
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
        return self._piped("lifeline")

    def forward(self) -> int:
        return self._piped("forward")

    def _piped(self, mode: remote.StdinMode) -> int:
        launch = self._launch(mode)
        stream = self._open(launch.argv, stdin=True, tty=False)
        if self.request.reattach > 0:
            from k8smpi_runtime.kubexec import reattach  # noqa: PLC0415 - import cycle

            return reattach.Link(self, mode, launch).run(stream)
        try:
            stream.write_stdin(launch.preamble)
            stream.start_heartbeat(
                self.request.keepalive, nudge=lambda: stream.write_stdin(remote.KEEPALIVE)
            )
            if mode == "forward":
                _start_stdin_pump(stream, self.streams.stdin, framed=True)
            record = remote.Records(self.session_id)
            try:
                self._pump_output(stream.frames(), stderr=record.feed)
            finally:
                _write_all(self.streams.stderr, record.flush())
            return _checked(stream, record)
        finally:
            stream.abort()
            stream.close()

    def tty(self) -> int:
        launch = self._launch("tty")
        stream = self._open(launch.argv, stdin=True, tty=True)
        fd = self.streams.stdin
        restore: Callable[[], None] | None = None
        window: _Window | None = None
        try:
            if os.isatty(fd):
                restore = _raw_mode(fd)
                window = _Window(stream, fd)
            # A resize to the same size changes nothing in the pod but is data for the runtime.
            stream.start_heartbeat(
                self.request.keepalive, nudge=window.resend if window is not None else None
            )
            _start_stdin_pump(stream, fd)
            self._pump_output(stream.frames())
            return stream.exit_code()
        finally:
            if restore is not None:
                restore()
            stream.abort()
            stream.close()

    # -- plumbing -----------------------------------------------------------------------------

    def _launch(self, mode: remote.StdinMode) -> remote.Launch:
        ident = self.request.identity
        return remote.build(
            command=self.request.command,
            grace=self.request.grace,
            uid=ident.uid,
            gid=ident.gid,
            groups=ident.groups,
            session_id=self.session_id,
            shell=self.request.shell,
            mode=mode,
            window=self.request.reattach if mode != "tty" else 0.0,
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
                if self.request.guessed:
                    raise Unresolved(str(e)) from e
                raise TransportError(f"pod {target.namespace}/{target.pod} is gone ({e})") from e
            except ApiError as e:
                if self.request.guessed and e.status in (400, 401, 403):
                    raise Unresolved(str(e)) from e  # the lookup says what is wrong
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

    def _pump_output(
        self,
        frames: Iterator[tuple[int, bytes]],
        *,
        stderr: Callable[[bytes], bytes] | None = None,
    ) -> None:
        """Write stdout and stderr frames to their fds (stderr through ``stderr`` first)."""
        out, err = self.streams.stdout, self.streams.stderr
        for channel, payload in frames:
            if channel == kexec.STDOUT:
                _write_all(out, payload)
            else:
                _write_all(err, stderr(payload) if stderr is not None else payload)


def _checked(stream: kexec.ExecStream, record: remote.Records) -> int:
    """The exit code, from the status and the wrapper's exit record.

    The record is the wrapper's own word; the status may have been made up by the API server,
    which reports an exec its runtime cut (an idle timeout) as Success. So a 0 needs the record,
    and a record wins over a status that disagrees. A non-zero status without one is real: the
    wrapper failed before the command (its message is on stderr) or was killed.
    """
    code = stream.exit_code()
    if record.code is not None:
        if record.code != code:
            logger.debug("exit record %d, status %d: the record wins", record.code, code)
        return record.code
    if code == 0:
        raise TransportError(
            f"exec into {stream.target.pod}: the stream ended before the command did (the API "
            "server reported success, but the wrapper's exit record never came: a runtime's "
            "stream idle timeout? see -o ServerAliveInterval)"
        )
    return code


def _start_stdin_pump(stream: kexec.ExecStream, fd: int, *, framed: bool = False) -> None:
    """Forward ``fd`` to the exec's stdin in a daemon thread.

    With ``framed`` (the wrapper's ``forward`` mode) every chunk is sent as a frame and EOF as
    the end frame. Without (a tty), EOF becomes a v5 CLOSE; on v4 it cannot be passed on and
    is only logged.
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
                        stream.write_stdin(remote.END_OF_INPUT)
                    elif stream.can_close_stdin:
                        stream.close_stdin()
                    else:
                        logger.debug("%s cannot pass stdin EOF on", stream.protocol)
                    return
                stream.write_stdin(remote.frame(data) if framed else data)
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


class _Window:
    """The local terminal's size: sent now, after every SIGWINCH (from a thread, never the
    handler), and again on :meth:`resend` (the heartbeat's nudge)."""

    def __init__(self, stream: kexec.ExecStream, fd: int) -> None:
        self.stream = stream
        self.fd = fd
        self.size: tuple[int, int] | None = None
        self._changed = threading.Event()
        signal.signal(signal.SIGWINCH, lambda _signum, _frame: self._changed.set())
        threading.Thread(target=self._follow, name="kubexec-winch", daemon=True).start()

    def _follow(self) -> None:
        while True:
            try:
                size = os.get_terminal_size(self.fd)
                self.size = (size.columns, size.lines)
                self.stream.resize(*self.size)
            except (OSError, K8smpiError) as e:
                logger.debug("window size: %s", e)
                return
            self._changed.wait()
            self._changed.clear()

    def resend(self) -> None:
        if self.size is not None:
            self.stream.resize(*self.size)
