"""kubexec's control master: credentials loaded once, one forked session process per call.

Started by :func:`k8smpi_runtime.kubexec.control.start_master` (never by hand) on a socket the
starting call has bound: ``python -I -c ... --fd N --path P --persist S --key K``. It runs in a
session of its own with stdio on /dev/null (or the starting call's ``-E`` file).

The loop accepts connections from this uid only (``SO_PEERCRED``; others are closed unread),
reads each request (argv, environment, working directory, the caller's stdin/stdout/stderr
passed as ``SCM_RIGHTS``), and forks. The session process answers "taken", waits for the
caller's go-ahead, puts the passed descriptors on 0/1/2 and runs :func:`cli._main` with the
loaded credentials -- the same code as a direct call -- then sends the exit code. A watcher
thread ends it at once (exit 255, which drops its API connections: the remote lifeline
fires) when the caller's socket closes (the caller was killed) or when the master is gone (a
pipe only the master holds the write end of).

The master leaves when it has had no session for ``ControlPersist`` seconds, on ``-O exit``
(its sessions get SIGTERM: they end with 255), after ``-O stop`` once its sessions ended, on
SIGTERM/SIGINT/SIGHUP (as ``-O exit``), or when its socket path no longer leads to it. It
removes its socket only if the path still is its own.

Credentials are reloaded before a session when a file they come from changed (kubeconfig,
the service-account token and CA) and at least every :data:`RELOAD_AFTER` seconds (exec
plugins' tokens expire); a call whose credential key differs from the master's loads its own.

A session also gets a TLS connection to the API server that the master dialed while it had
nothing else to do (the *spare*: the handshake is a good part of a call's time). It is made
after a session started, kept at most :data:`SPARE_MAX_AGE` seconds (the API server closes
idle connections after 90 s), handed to one session only (the master closes its copy: nothing
is sent on it from two processes) and only for the master's own credentials; a session whose
spare turns out closed dials its own, as a call without a master does. During a burst of
calls the sessions dial their own: the master never makes a call wait for a handshake.
"""

from __future__ import annotations

import contextlib
import gc
import os
import select
import signal
import socket
import sys
import threading
import time
from pathlib import Path

from k8smpi_runtime import lazylog
from k8smpi_runtime.errors import K8smpiError
from k8smpi_runtime.kube import config as kconfig

# What a session runs, imported once here rather than in every session process.
from k8smpi_runtime.kubexec import (  # noqa: F401
    cli,
    control,
    identity,
    logsetup,
    reattach,
    resolve,
    retrying,
    session,
    wire,
)

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    import ssl
    from collections.abc import Sequence
    from types import FrameType
    from typing import NoReturn

    from k8smpi_runtime.kube.config import ClientConfig

logger = lazylog.getLogger(__name__)

RELOAD_AFTER = 60.0
"""Seconds after which the credentials are loaded again even if no file changed."""
SPARE_MAX_AGE = 30.0
"""Seconds an idle spare connection is kept for the next session."""
SPARE_DIAL_TIMEOUT = 5.0
PATH_CHECK = 30.0
"""Seconds between checks that the socket path still leads to this master, when idle."""
FDS = 3


class Options:
    """The master's command line (written by control._spawn, not by people)."""

    def __init__(self, argv: Sequence[str]) -> None:
        values: dict[str, str] = {}
        self.verbose = False
        words = list(argv)
        while words:
            word = words.pop(0)
            if word == "-v":
                self.verbose = True
            elif word.startswith("--") and words:
                values[word[2:]] = words.pop(0)
            else:
                raise SystemExit(f"kubexec master: unexpected argument {word!r}")
        try:
            self.fd = int(values["fd"])
            self.path = values["path"]
            self.persist = float(values["persist"])
            self.key = values["key"]
        except (KeyError, ValueError) as e:
            raise SystemExit(f"kubexec master: bad arguments: {e}") from e
        self.kubeconfig = values.get("kubeconfig")
        self.context = values.get("context")


def main(argv: Sequence[str] | None = None) -> int:
    options = Options(sys.argv[1:] if argv is None else argv)
    level = lazylog.DEBUG if options.verbose else lazylog.WARNING
    logsetup.install(level=level, verbose=options.verbose, log_file=None)
    return Master(options).serve()


class Credentials:
    """The master's ClientConfig, reloaded when its sources change (see the module doc)."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.config: ClientConfig | None = None
        self.broken: str | None = None
        self._stamp: tuple[tuple[str, int, int, int], ...] = ()
        self._loaded = 0.0

    def refresh(self) -> None:
        stamp = self._sources()
        fresh = time.monotonic() - self._loaded < RELOAD_AFTER
        if self._loaded and stamp == self._stamp and fresh:
            return
        try:
            config = kconfig.load(
                kubeconfig=self.options.kubeconfig, context=self.options.context, env=os.environ
            )
            config.ssl_context()  # fail here, not in every session, if the CA or key is bad
        except K8smpiError as e:
            self.config, self.broken = None, str(e)
            logger.warning("master: credentials: %s", e)
        else:
            self.config, self.broken = config, None
            logger.debug("master: credentials from %s", config.source)
        self._stamp, self._loaded = stamp, time.monotonic()

    def _sources(self) -> tuple[tuple[str, int, int, int], ...]:
        env = os.environ
        paths = [self.options.kubeconfig or ""]
        paths += env.get("KUBECONFIG", "").split(os.pathsep)
        sa = Path(env.get("K8SMPI_SERVICEACCOUNT_DIR", kconfig.SERVICEACCOUNT_DIR))
        paths += [str(sa / "token"), str(sa / "ca.crt")]
        paths.append(str(Path(env.get("HOME", "/")) / ".kube" / "config"))
        found = []
        for path in filter(None, paths):
            try:
                st = Path(path).stat()
            except OSError:
                continue
            found.append((path, st.st_mtime_ns, st.st_ino, st.st_size))
        return tuple(found)


class Pending:
    """A connection whose request is still arriving."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.data = b""
        self.fds: list[int] = []

    def complete(self) -> bytes | None:
        """The request's body once all of it is here."""
        if len(self.data) < 4:
            return None
        size = int.from_bytes(self.data[:4], "big")
        if len(self.data) < 4 + size:
            return None
        return self.data[4 : 4 + size]

    def close(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []
        self.conn.close()


class Master:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.listener = socket.socket(fileno=options.fd)
        self.listener.setblocking(False)
        st = os.lstat(options.path)
        self.identity = (st.st_dev, st.st_ino)
        self.credentials = Credentials(options)
        self.pending: dict[int, Pending] = {}
        self.children: set[int] = set()
        self.stopping = False
        self.terminating = False
        self.last_activity = time.monotonic()
        self.last_path_check = self.last_activity
        self.spare: Spare | None = None
        self.want_spare = False
        # Session processes watch this pipe: when the master is gone, its write end closes.
        self.death_r, self.death_w = os.pipe()
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)

    # -- the loop -----------------------------------------------------------------------------

    def serve(self) -> int:
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, _ignore)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._terminate)
        self.credentials.refresh()
        logger.debug("master %d at %s, persist %s", os.getpid(), self.options.path, self.persist)
        try:
            while not self.terminating:
                timeout = self._timeout()
                if timeout is not None and timeout <= 0:
                    break
                watched = [self.wake_r, *self.pending]
                if not self.stopping:
                    watched.append(self.listener.fileno())
                readable, _, _ = select.select(watched, [], [], timeout)
                self._drain_wakeups()
                self._reap()
                if self.listener.fileno() in readable and not self.stopping:
                    self._accept()
                for fd in readable:
                    if fd in self.pending:
                        self._receive(fd)
                self._check_path()
                self._tend_spare()
        finally:
            self._shutdown()
        return 0

    @property
    def persist(self) -> float:
        return self.options.persist

    def _timeout(self) -> float | None:
        """Seconds select may wait; <= 0 when it is time to leave."""
        wait = self._wait()
        if self.spare is not None:  # wake up to close it when it is too old
            left = max(self.spare.made + SPARE_MAX_AGE - time.monotonic(), 0.01)
            wait = left if wait is None else min(wait, left)
        return wait

    def _wait(self) -> float | None:
        if self.children or self.pending:
            return None if not self.stopping else 1.0
        if self.stopping:
            return 0
        idle = time.monotonic() - self.last_activity
        if self.persist == float("inf"):
            return PATH_CHECK
        return min(self.persist - idle, PATH_CHECK)

    def _terminate(self, _signum: int, _frame: FrameType | None) -> None:
        self.terminating = True

    def _drain_wakeups(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    def _reap(self) -> None:
        while self.children:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                break
            if not pid:
                break
            self.children.discard(pid)
            self.last_activity = time.monotonic()

    def _check_path(self) -> None:
        """Stop taking calls when the socket path no longer leads here (removed, replaced)."""
        now = time.monotonic()
        if self.stopping or now - self.last_path_check < PATH_CHECK:
            return
        self.last_path_check = now
        if not self._path_is_ours():
            logger.debug("master: %s is no longer this master's socket", self.options.path)
            self.stopping = True

    def _path_is_ours(self) -> bool:
        try:
            st = os.lstat(self.options.path)
        except OSError:
            return False
        return (st.st_dev, st.st_ino) == self.identity

    # -- the spare connection -----------------------------------------------------------------

    def _tend_spare(self) -> None:
        """Close a spare that is too old; dial one after a session, when nothing waits."""
        spare = self.spare
        if spare is not None and time.monotonic() - spare.made > SPARE_MAX_AGE:
            self.spare = None
            spare.sock.close()
        config = self.credentials.config
        if not self.want_spare or self.spare is not None or self.pending or config is None:
            return
        if self.stopping or self.terminating:
            return
        self.want_spare = False
        try:
            sock = wire.dial(config, timeout=SPARE_DIAL_TIMEOUT)
        except (OSError, K8smpiError) as e:
            logger.debug("master: no spare connection: %s", e)
            return
        self.spare = Spare(sock, config, time.monotonic())

    def _take_spare(self) -> ssl.SSLSocket | None:
        """The spare for a session with the master's credentials, if there is a usable one."""
        spare, self.spare = self.spare, None
        if spare is None:
            return None
        fresh = time.monotonic() - spare.made <= SPARE_MAX_AGE
        if spare.config is self.credentials.config and fresh:
            return spare.sock
        spare.sock.close()
        return None

    def _shutdown(self) -> None:
        if self.spare is not None:
            self.spare.sock.close()
            self.spare = None
        if self.terminating:
            for pid in self.children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        self._stop_listening()
        for pending in self.pending.values():
            pending.close()
        self.pending.clear()
        logger.debug("master %d leaves", os.getpid())

    def _stop_listening(self) -> None:
        if self._path_is_ours():
            with contextlib.suppress(OSError):
                Path(self.options.path).unlink()
        self.listener.close()

    # -- connections --------------------------------------------------------------------------

    def _accept(self) -> None:
        uid = os.getuid()
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                logger.warning("master: accept: %s", e)
                return
            if control.peer_uid(conn) != uid:
                logger.warning("master: refused a connection from another user")
                conn.close()
                continue
            conn.setblocking(False)
            self.pending[conn.fileno()] = Pending(conn)
            self.last_activity = time.monotonic()

    def _receive(self, fd: int) -> None:
        pending = self.pending[fd]
        try:
            data, ancdata, flags, _ = pending.conn.recvmsg(65536, socket.CMSG_SPACE(FDS * 4))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancdata, flags = b"", [], 0
        for level, message_type, cdata in ancdata:
            if level == socket.SOL_SOCKET and message_type == socket.SCM_RIGHTS:
                usable = len(cdata) - len(cdata) % 4
                pending.fds += [
                    int.from_bytes(cdata[i : i + 4], sys.byteorder) for i in range(0, usable, 4)
                ]
        pending.data += data
        body = pending.complete()
        too_big = len(pending.data) > control.MAX_REQUEST + 4
        if not data or flags & socket.MSG_CTRUNC or too_big or body is not None:
            del self.pending[fd]
        if body is None:
            if not data or flags & socket.MSG_CTRUNC or too_big:
                pending.close()
            return
        self._dispatch(pending, body)

    def _dispatch(self, pending: Pending, body: bytes) -> None:
        try:
            kind, fields = control.decode(body)
        except ValueError as e:
            self._answer(pending, control.REFUSED + str(e).encode())
            return
        if kind == "session":
            self._session(pending, fields)
        elif kind == "check":
            self._answer(pending, control.ACCEPTED + str(os.getpid()).encode())
        elif kind == "exit":
            self._answer(pending, control.ACCEPTED)
            self.terminating = True
        elif kind == "stop":
            self._answer(pending, control.ACCEPTED)
            self.stopping = True
            self._stop_listening()
        else:
            self._answer(pending, control.REFUSED + f"unknown request {kind}".encode())

    def _answer(self, pending: Pending, message: bytes) -> None:
        try:
            pending.conn.setblocking(True)
            pending.conn.sendall(message)
        except OSError as e:
            logger.debug("master: answering: %s", e)
        pending.close()

    def _session(self, pending: Pending, fields: list[str]) -> None:
        if len(pending.fds) != FDS or len(fields) < 3:
            self._answer(pending, control.REFUSED + b"a session needs stdin, stdout and stderr")
            return
        self.credentials.refresh()
        mine = fields[0] == self.options.key and self.credentials.config is not None
        spare = self._take_spare() if mine else None
        gc.freeze()  # the session processes share the master's objects copy-on-write
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the session process never returns
            try:
                self._become_session(pending, fields, spare)
            finally:
                os._exit(255)
        self.children.add(pid)
        pending.close()
        if spare is not None:
            spare.close()  # the session's now: closing this copy sends nothing (no TLS close)
        self.want_spare = True
        self.last_activity = time.monotonic()

    # -- in the session process ---------------------------------------------------------------

    def _become_session(
        self, pending: Pending, fields: list[str], spare: ssl.SSLSocket | None
    ) -> None:
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_DFL)
        for fd in (self.wake_r, self.wake_w, self.death_w):
            os.close(fd)
        self.listener.close()
        if self.spare is not None:
            self.spare.sock.close()
        for other in self.pending.values():
            other.close()
        conn = pending.conn
        conn.setblocking(True)
        key, cwd, argc = fields[0], fields[1], int(fields[2])
        args = fields[3 : 3 + argc]
        env = dict(item.partition("=")[::2] for item in fields[3 + argc :])
        credentials = self.credentials
        if credentials.broken is not None:
            conn.sendall(control.REFUSED + credentials.broken.encode())
            return
        config = credentials.config if key == self.options.key else None
        conn.sendall(control.ACCEPTED)
        if conn.recv(1) != control.GO:
            return  # the caller gave up waiting and runs the call itself
        for target, fd in enumerate(pending.fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(env)
        with contextlib.suppress(OSError):  # as sshd: a missing directory is no reason to fail
            os.chdir(cwd)
        threading.Thread(
            target=_watch, args=(conn, self.death_r), name="kubexec-watch", daemon=True
        ).start()
        code = cli.master_session(args, config, spare if config is not None else None)
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):  # the caller's pipes close when it exits, not later
            os.dup2(null, target)
        conn.sendall(control.STATUS + bytes([code & 0xFF]))
        os._exit(0)


class Spare:
    """An idle connection to the API server, dialed for the next session."""

    __slots__ = ("config", "made", "sock")

    def __init__(self, sock: ssl.SSLSocket, config: ClientConfig, made: float) -> None:
        self.sock, self.config, self.made = sock, config, made


def _watch(conn: socket.socket, death_r: int) -> None:
    """End the session process when its caller or the master goes away."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN)
    poller.register(death_r, select.POLLIN)
    while True:
        for fd, _event in poller.poll():
            if fd == death_r:
                _leave()
            try:
                data = conn.recv(64)
            except OSError:
                data = b""
            if not data:
                _leave()  # the caller is gone: dropping the connections ends the remote


def _leave() -> NoReturn:
    """Exit 255 at once; a session with a re-attach window says goodbye first, so its pod
    ends the command now rather than waiting the window for a re-attach (leaving is on
    purpose here, as a direct call's signal is)."""
    reattach.goodbye()
    os._exit(255)


def _ignore(_signum: int, _frame: FrameType | None) -> None:
    """SIGCHLD needs a handler for the wakeup fd to see it."""
