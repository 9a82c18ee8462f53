"""kubexec's half of a session that survives a lost stream (``--reattach``): :class:`Link`.

The remote half and the protocol are in :mod:`k8smpi_runtime.kubexec.remote`. Here:

- every byte of the command's stdout and stderr written locally is counted (records taken
  out); after each :data:`ACK_EVERY` bytes, and with the heartbeat's keepalive when anything
  new came, kubexec acknowledges them (:func:`remote.ack`) so the session can drop them;
- when the stream ends without the exit record (a transport error, a close without status, a
  status the API server made up for a stream its runtime cut, or one without an exit code
  after the session had started), kubexec re-attaches: a new exec, in ``attach`` mode, with
  the offsets it has, tried with backoff until it is open or the window (``--reattach``
  seconds from the loss) has passed. No pod lookup: the pod is the one the session runs in;
  a pod that is gone (404) ends the wait at once;
- forwarded stdin is kept from the position the session last confirmed (an attach record
  says it: whole frames only) and sent again from there, its end too; nothing new is sent
  until that is done. At most :data:`INPUT_KEPT` bytes are kept: a session that took more
  unconfirmed input cannot resume (exit 255 saying so);
- kubexec says goodbye (:data:`remote.BYE`) whenever it leaves on purpose with a stream
  open: the exit record came, or a signal, or local stdout closed. The session ends at once;
  without it (``kill -9``, a lost connection) the pod waits the window first.

A second loss after a re-attach starts a new window. The window's end is exit 255 with one
line naming the loss and the wait.
"""

from __future__ import annotations

import os
import threading
import time

from k8smpi_runtime import lazylog
from k8smpi_runtime.errors import ApiError, K8smpiError, NotFoundError, TransportError
from k8smpi_runtime.kube import exec as kexec
from k8smpi_runtime.kubexec import remote, retrying, session

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from k8smpi_runtime.kubexec.session import Mode

logger = lazylog.getLogger(__name__)

ACK_EVERY = remote.BUFFER // 4
"""Bytes received after which kubexec acknowledges (the session keeps at most BUFFER)."""
INPUT_KEPT = 16 * 1024 * 1024
"""Forwarded stdin kept until the session confirms it, at most."""
BYE_TIMEOUT = 0.5
"""Seconds a goodbye waits for a send under way (a signal may interrupt one)."""


_LIVE: set[Link] = set()
"""The sessions of this process with a stream (a control master's session process has one)."""


def goodbye() -> None:
    """Say goodbye on every live session's stream: this process is about to end on purpose
    (a control master's session whose caller or master went away), so the pods end their
    sessions now rather than after the window."""
    for link in list(_LIVE):
        stream = link.stream
        if stream is not None:
            link._bye(stream)


class _Lost(Exception):
    """The stream ended without the exit record; ``str()`` says how."""


class Link:
    """One session with a re-attach window: its current stream, what came, what went."""

    def __init__(self, runner: session._Runner, mode: Mode, launch: remote.Launch) -> None:
        self.runner = runner
        self.request = runner.request
        self.window = runner.request.reattach
        self.mode = mode
        self.launch = launch
        self.out = 0
        self.err = 0
        self.acked = 0
        self.started = False
        self.stream: kexec.ExecStream | None = None
        # Forwarded stdin: the bytes after position `kept_from`; `sent` in all.
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.ready.set()
        self.kept = bytearray()
        self.kept_from = 0
        self.sent = 0
        self.input_ended = False
        self.overflow = False

    # -- the session --------------------------------------------------------------------------

    def run(self, stream: kexec.ExecStream) -> int:
        """The remote exit code; K8smpiError when the session cannot go on."""
        _LIVE.add(self)
        try:
            self._use(stream, self.launch.preamble)
            if self.mode == "forward":
                threading.Thread(target=self._pump_stdin, name="kubexec-stdin", daemon=True).start()
            while True:
                try:
                    code = self._receive(stream)
                except _Lost as lost:
                    stream.abort()
                    stream.close()
                    stream = self._reattach(str(lost))
                    continue
                self._bye(stream)
                return code
        except BaseException:
            if self.stream is not None:
                self._bye(self.stream)
            raise
        finally:
            _LIVE.discard(self)
            if self.stream is not None:
                self.stream.abort()
                self.stream.close()

    def _use(self, stream: kexec.ExecStream, preamble: bytes) -> None:
        with self.lock:
            self.stream = stream
        stream.write_stdin(preamble)
        stream.start_heartbeat(self.request.keepalive, nudge=lambda: self._nudge(stream))

    def _receive(self, stream: kexec.ExecStream) -> int:
        """Pump one exec's output; the exit code, or _Lost."""
        records = remote.Records(self.runner.session_id)
        out, err = self.runner.streams.stdout, self.runner.streams.stderr
        try:
            for channel, payload in stream.frames():
                if channel == kexec.STDOUT:
                    session._write_all(out, payload)
                    self.out += len(payload)
                else:
                    data = records.feed(payload)
                    session._write_all(err, data)
                    self.err += len(data)
                    if records.started:
                        self.started = True
                    if records.attached is not None and not self.ready.is_set():
                        self._resend(stream, records.attached)
                if self.out + self.err - self.acked >= ACK_EVERY:
                    self._ack(stream)
                if records.code is not None and self._have(records.lengths):
                    # All there: the exec waits for the goodbye to end (module docstring).
                    session._write_all(err, records.flush())
                    return records.code
        except TransportError as e:
            records.drop()
            raise _Lost(str(e)) from e
        if records.code is not None:
            # The record is the wrapper's own word (the status may be missing or made up).
            session._write_all(err, records.flush())
            return records.code
        records.drop()
        return self._status(stream)

    def _have(self, lengths: tuple[int, int] | None) -> bool:
        """Whether all the output the exit record counts is here (no lengths: a wrapper in
        the pod without a session, whose exec ends by itself)."""
        return lengths is not None and self.out >= lengths[0] and self.err >= lengths[1]

    def _status(self, stream: kexec.ExecStream) -> int:
        """The exit code of an exec that ended without the record, or _Lost."""
        status = stream.status
        if status is None:
            try:
                stream.exit_code()  # says why: presumed dead, or ended without a status
            except TransportError as e:
                raise _Lost(str(e)) from e
        if status is not None and status.get("status") == "Success":
            raise _Lost(
                "the API server reported success without the wrapper's exit record (a stream "
                "its runtime cut)"
            )
        try:
            # A code without the record: the wrapper's own refusal (its line is on stderr).
            return stream.exit_code()
        except kexec.ExecFailed as e:
            if not self.started:
                raise  # e.g. no /bin/sh in the image: nothing to re-attach to
            raise _Lost(f"the exec failed: {e}") from e

    # -- re-attaching -------------------------------------------------------------------------

    def _reattach(self, why: str) -> kexec.ExecStream:
        """A new exec attached to the session, within the window from now."""
        self.ready.clear()
        if self.overflow:
            raise TransportError(
                f"exec into {self.request.target.pod}: the stream was lost ({why}); more than "
                f"{INPUT_KEPT >> 20} MiB of forwarded stdin were not confirmed, so the session "
                "cannot resume"
            )
        lost = time.monotonic()
        deadline = lost + self.window
        logger.debug("stream lost (%s); re-attaching within %gs", why, self.window)
        tries = 0
        last = why
        while True:
            try:
                stream = self._attach(deadline)
            except NotFoundError as e:
                raise TransportError(
                    f"exec into {self.request.target.pod}: the stream was lost ({why}) and the "
                    f"pod is gone ({e})"
                ) from e
            except (ApiError, TransportError) as e:
                tries += 1
                last = str(e)
                pause = retrying.backoff(e, tries)
                if time.monotonic() + pause >= deadline:
                    raise TransportError(
                        f"exec into {self.request.target.pod}: the stream was lost ({why}) and "
                        f"no re-attach succeeded within {self.window:g}s (--reattach; last try: "
                        f"{last}); the pod ends the session"
                    ) from e
                logger.debug("re-attach try %d failed: %s; next in %.2fs", tries, e, pause)
                time.sleep(pause)
                continue
            logger.debug(
                "re-attached after %.0f ms at offsets %d/%d",
                (time.monotonic() - lost) * 1000,
                self.out,
                self.err,
            )
            return stream

    def _attach(self, deadline: float) -> kexec.ExecStream:
        ident = self.request.identity
        launch = remote.attach(
            session_id=self.runner.session_id,
            offsets=(self.out, self.err),
            grace=self.request.grace,
            window=self.window,
            uid=ident.uid,
            gid=ident.gid,
            groups=ident.groups,
            shell=self.request.shell,
        )
        target = self.request.target
        stream = kexec.ExecStream(
            self.runner.config,
            kexec.ExecTarget(target.namespace, target.pod, target.container),
            launch.argv,
            stdin=True,
            connect_timeout=max(0.1, min(self.runner.connect_timeout, deadline - time.monotonic())),
            subprotocols=self.runner.subprotocols,
        )
        try:
            self._use(stream, launch.preamble)
        except K8smpiError:
            stream.abort()
            stream.close()
            raise
        return stream

    def _resend(self, stream: kexec.ExecStream, attached: remote.Attached) -> None:
        """What the session lacks of the forwarded stdin, again, then new input may go."""
        with self.lock:
            position = attached.input_position
            if not self.kept_from <= position <= self.sent:
                raise TransportError(
                    f"exec into {self.request.target.pod}: the session has {position} bytes of "
                    f"stdin, kubexec kept {self.kept_from}-{self.sent}"
                )
            del self.kept[: position - self.kept_from]
            self.kept_from = position
            for i in range(0, len(self.kept), session.READ_SIZE):
                stream.write_stdin(remote.frame(bytes(self.kept[i : i + session.READ_SIZE])))
            if self.input_ended and not attached.input_ended:
                stream.write_stdin(remote.END_OF_INPUT)
            self.ready.set()

    # -- what goes to the session -------------------------------------------------------------

    def _pump_stdin(self) -> None:
        """Local stdin to the session as frames, kept until confirmed (module docstring)."""
        fd = self.runner.streams.stdin
        while True:
            try:
                data = os.read(fd, session.READ_SIZE)
            except InterruptedError:
                continue
            except OSError as e:
                logger.debug("reading local stdin failed: %s", e)
                data = b""
            self.ready.wait()
            with self.lock:
                if data:
                    self.kept += data
                    self.sent += len(data)
                    if len(self.kept) > INPUT_KEPT:
                        self.overflow = True  # kept no more: a later loss cannot resume
                        del self.kept[:]
                        self.kept_from = self.sent
                else:
                    self.input_ended = True
                stream = self.stream
                if stream is not None and self.ready.is_set():
                    try:
                        stream.write_stdin(remote.frame(data) if data else remote.END_OF_INPUT)
                    except K8smpiError as e:  # lost: sent again after the re-attach
                        logger.debug("forwarding stdin: %s", e)
            if not data:
                return

    def _ack(self, stream: kexec.ExecStream) -> None:
        self.acked = self.out + self.err
        stream.write_stdin(remote.ack(self.out, self.err))

    def _nudge(self, stream: kexec.ExecStream) -> None:
        """The heartbeat's keepalive: an acknowledgement when anything new came."""
        if self.out + self.err != self.acked:
            self._ack(stream)
        else:
            stream.write_stdin(remote.KEEPALIVE)

    def _bye(self, stream: kexec.ExecStream) -> None:
        try:
            stream.write_stdin(remote.BYE, timeout=BYE_TIMEOUT)
        except K8smpiError as e:
            logger.debug("goodbye not sent: %s", e)
