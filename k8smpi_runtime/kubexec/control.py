"""ssh's ControlMaster for kubexec, the client half: hand this call's stdio to a master.

``-o ControlMaster=auto -o ControlPersist=60`` (or ``KUBEXEC_CONTROL_MASTER=auto``...): the
first call starts a master process (:mod:`k8smpi_runtime.kubexec.master`) that loads the
credentials once and stays while calls keep coming; every call then only connects to the
master's Unix socket, passes its stdin, stdout and stderr (``SCM_RIGHTS``) with its argv,
environment and working directory, and waits for the exit code. The master forks a session
process per call that runs exactly what a direct call runs, so exit codes, the lifeline, stdin
forwarding and ``-v``/``-E`` behave the same. Off by default, as in ssh.

Options, ssh's names: ``ControlMaster`` ``no`` (default) / ``auto`` (use a master, start one if
there is none) / ``yes`` (here the same as ``auto``; ``ask``/``autoask`` too, there is no one to
ask); ``ControlPath`` (``-S``): the socket, default ``$XDG_RUNTIME_DIR/kubexec/%C`` or
``/tmp/kubexec-<uid>/%C``, ``none`` for no master; with ``ControlMaster=no`` an explicit path
means "use a master there if there is one". ``ControlPersist``: how long an idle master stays
(``no``: it leaves when its last session ends; ``yes``/``0``: until ``-O exit``). ``-O check``,
``-O exit`` (end the master and its sessions), ``-O stop`` (accept no new sessions).
Path tokens: ``%%`` ``%C`` (hash of the credential settings) ``%d`` ``%h`` ``%i`` ``%L`` ``%l``
``%n`` ``%p`` ``%r`` ``%u``, as in ssh.

Guarantees: the socket's directory is private (0700, this uid), a socket owned by another user
is refused, and both ends check the other's uid with ``SO_PEERCRED``. One master serves one set
of credential settings (kubeconfig, context, in-cluster environment, uid/gid/groups): it is
part of the default path's ``%C`` and the master checks it again. If the client is killed, its
session process sees the socket close and exits, which tears the remote command down (the
lifeline); if the master is killed, every session process exits and its client says so (255).
A master that cannot be used (refused, not answering within the connect timeout, broken) makes
the call run in this process, after nothing ran remotely (the session starts only after the
client's go-ahead). Terminals (``-t``) are not handed over: such calls run in this process.

The client imports nothing but the standard library's C modules: it is the whole call.
"""

from __future__ import annotations

import _socket
import os
import stat
import sys

from k8smpi_runtime import __version__, lazylog
from k8smpi_runtime.errors import K8smpiError

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from collections.abc import Mapping

    from k8smpi_runtime.kubexec.sshargs import Invocation

logger = lazylog.getLogger(__name__)

PROTOCOL = b"kubexec-control-1"
"""First field of every request; a master that speaks another protocol refuses."""
ACCEPTED, REFUSED, GO, STATUS = b"+", b"!", b"g", b"="
"""Master: request taken (or ``-O`` answer) / refused, a reason follows. Client: go ahead.
Master: the exit code follows (one byte)."""
MAX_REQUEST = 8 * 1024 * 1024
BACKLOG = 4096
"""Calls started at once (a fan-out) queue here while the master starts (capped by somaxconn)."""
ACCEPT_WAIT = 10.0
"""Seconds a call waits for the master to take it (it may be starting) before running alone."""
CREDENTIAL_ENV = (
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "K8SMPI_SERVICEACCOUNT_DIR",
    "HOME",
)
"""The environment that decides which credentials a call uses (see kube/config.py)."""


class ControlError(K8smpiError):
    """A ``-O`` request or a ControlPath that cannot be served."""


class Refused(K8smpiError):
    """A socket or directory kubexec must not trust (another user's, not private)."""


# -- what the client and the master agree on ---------------------------------------------------


def credential_key(*, kubeconfig: str | None, context: str | None, env: Mapping[str, str]) -> str:
    """Everything that decides the credentials and the remote identity of a call, as text.

    A master serves only calls with its own key (paths made absolute: a master does not share
    the caller's working directory)."""
    parts = [
        PROTOCOL.decode(),
        __version__,
        f"uid={os.getuid()}",
        f"gid={os.getgid()}",
        "groups=" + ",".join(map(str, sorted(os.getgroups()))),
        "kubeconfig=" + (os.path.abspath(kubeconfig) if kubeconfig else ""),
        "context=" + (context or ""),
    ]
    for name in CREDENTIAL_ENV:
        value = env.get(name, "")
        if name == "KUBECONFIG":
            value = os.pathsep.join(os.path.abspath(p) for p in value.split(os.pathsep) if p)
        parts.append(f"{name}={value}")
    return "\n".join(parts)


def key_hash(key: str) -> str:
    """A short name for a credential key (``%C``); the master compares the key itself."""
    import binascii  # noqa: PLC0415 - a C module, only for master users

    return f"{binascii.crc32(key.encode()):08x}"


def encode(kind: str, fields: list[str]) -> bytes:
    """A request: length, then NUL-separated fields (argv and environ hold no NUL bytes)."""
    body = b"\0".join([PROTOCOL, kind.encode(), *(os.fsencode(f) for f in fields)])
    return len(body).to_bytes(4, "big") + body


def decode(body: bytes) -> tuple[str, list[str]]:
    """``(kind, fields)`` of a request's body (after the length); ValueError if not ours."""
    parts = body.split(b"\0")
    if len(parts) < 2 or parts[0] != PROTOCOL:
        raise ValueError("not a kubexec control request (or another version's)")
    return parts[1].decode(), [os.fsdecode(p) for p in parts[2:]]


def peer_uid(sock: _socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (``SO_PEERCRED``)."""
    raw = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    return int.from_bytes(raw[4:8], sys.byteorder)


# -- where the socket is -----------------------------------------------------------------------


def control_path(inv: Invocation, env: Mapping[str, str], key: str) -> str | None:
    """The socket path for ``inv`` (tokens expanded), or None for ``ControlPath=none``."""
    if inv.control_path == "none":
        return None
    if inv.control_path is None:
        return os.path.join(private_dir(env), key_hash(key))
    return expand(inv.control_path, inv, env, key)


def private_dir(env: Mapping[str, str]) -> str:
    """``$XDG_RUNTIME_DIR/kubexec`` (when that is ours) or ``/tmp/kubexec-<uid>``, made 0700."""
    uid = os.getuid()
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime and _owned_dir(runtime, uid):
        path = os.path.join(runtime, "kubexec")
    else:
        tmp = env.get("TMPDIR") or "/tmp"  # noqa: S108 - made private and checked below
        path = os.path.join(tmp, f"kubexec-{uid}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError as e:
        raise Refused(f"cannot make the control directory {path}: {e.strerror}") from e
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or st.st_mode & 0o077:
        raise Refused(
            f"control directory {path} is not private (owner uid {st.st_uid}, mode "
            f"{stat.S_IMODE(st.st_mode):o}; want uid {uid}, 0700): not using a master"
        )
    return path


def _owned_dir(path: str, uid: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == uid


def expand(template: str, inv: Invocation, env: Mapping[str, str], key: str) -> str:
    """ssh's ControlPath tokens (and a leading ``~``)."""
    home = env.get("HOME") or os.path.expanduser("~")
    if template.startswith("~/"):
        template = home + template[1:]
    node = os.uname().nodename
    local_user = env.get("USER") or env.get("LOGNAME") or str(os.getuid())
    values = {
        "%": "%",
        "C": key_hash(key),
        "d": home,
        "h": inv.host,
        "i": str(os.getuid()),
        "L": node.split(".")[0],
        "l": node,
        "n": inv.host,
        "p": str(inv.port or 22),
        "r": inv.user or local_user,
        "u": local_user,
    }
    out: list[str] = []
    i = 0
    while i < len(template):
        if template[i] != "%":
            out.append(template[i])
            i += 1
            continue
        letter = template[i + 1 : i + 2]
        if letter not in values:
            raise ControlError(f"ControlPath {template!r}: unknown token %{letter}")
        out.append(values[letter])
        i += 2
    return "".join(out)


# -- the client --------------------------------------------------------------------------------


def client(inv: Invocation, args: list[str], env: Mapping[str, str]) -> int | None:
    """This call through a master: the remote exit code, or None to make it in this process."""
    key = credential_key(kubeconfig=inv.kubeconfig, context=inv.context, env=env)
    if inv.control_command:
        path = control_path(inv, env, key)
        if path is None:
            raise ControlError("-O needs a ControlPath (it is none)")
        return command(inv.control_command, path)
    try:
        conn, path = _master_for(inv, env, key)
    except Refused as e:
        logger.warning("%s", e)
        return None
    if conn is None:
        return None
    timeout = min(inv.connect_timeout or ACCEPT_WAIT, ACCEPT_WAIT)
    return session(conn, path, key, args, env, timeout=timeout)


def _master_for(
    inv: Invocation, env: Mapping[str, str], key: str
) -> tuple[_socket.socket | None, str]:
    """A connection to the master for this call (started if need be), or None: run here."""
    path = control_path(inv, env, key)
    if path is None:
        return None, ""
    if _may_want_tty(inv):
        logger.debug("a terminal session does not go through the master")
        return None, path
    if not all(_is_open(fd) for fd in (0, 1, 2)):
        logger.debug("stdin, stdout or stderr is closed: running without the master")
        return None, path
    conn = connect(path)
    if conn is None and inv.control_master != "no":
        conn = start_master(path, inv, env, key)
    if conn is None:
        logger.debug("no control master at %s", path)
    return conn, path


def _may_want_tty(inv: Invocation) -> bool:
    """Whether the call could ask for a terminal (cli.choose_mode's rules, conservatively)."""
    if inv.tty_force:
        return True
    if inv.tty is False or inv.stdin_null:
        return False
    return os.isatty(0)


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def connect(path: str) -> _socket.socket | None:
    """A connection to the master at ``path``; None if there is none (absent or stale).

    Raises Refused for a socket that is not this user's, or a master running as someone else.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Refused(f"control socket {path}: {e.strerror}") from e
    uid = os.getuid()
    if not stat.S_ISSOCK(st.st_mode):
        raise Refused(f"control path {path} is not a socket: not using it")
    if st.st_uid != uid:
        raise Refused(f"control socket {path} belongs to uid {st.st_uid}, not {uid}: not using it")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        sock.close()
        return None  # stale: its master is gone
    except BaseException:
        sock.close()
        raise
    if peer_uid(sock) != uid:
        sock.close()
        raise Refused(f"the master at {path} runs as another user: not using it")
    return sock


def start_master(
    path: str, inv: Invocation, env: Mapping[str, str], key: str
) -> _socket.socket | None:
    """Bind ``path`` (replacing a stale socket), start a master on it, connect to it.

    A lock file beside the socket makes one of several calls starting at once the one that
    starts the master; the others connect to it (their requests wait in its backlog).
    """
    import fcntl  # noqa: PLC0415 - only the call that may start a master

    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        lock = os.open(path + ".lock", flags, 0o600)
    except OSError as e:
        raise Refused(f"cannot open the lock file {path}.lock: {e.strerror}") from e
    try:
        if os.fstat(lock).st_uid != os.getuid():
            raise Refused(f"lock file {path}.lock belongs to another user: not using it")
        fcntl.flock(lock, fcntl.LOCK_EX)
        existing = connect(path)
        if existing is not None:
            return existing
        try:  # noqa: SIM105 - contextlib is one import more on this path
            os.unlink(path)  # stale, and ours: connect() checked its owner
        except FileNotFoundError:
            pass
        listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            umask = os.umask(0o177)
            try:
                listener.bind(path)
            finally:
                os.umask(umask)
            listener.listen(BACKLOG)
            _spawn(listener.fileno(), path, inv, env, key)
        except OSError as e:
            raise Refused(f"cannot start a control master at {path}: {e.strerror}") from e
        finally:
            listener.close()
    finally:
        os.close(lock)
    return connect(path)


def _spawn(fd: int, path: str, inv: Invocation, env: Mapping[str, str], key: str) -> None:
    """Start the master detached (own session, stdio on /dev/null or the -E log), on ``fd``."""
    import k8smpi_runtime  # noqa: PLC0415 - where this package was imported from

    root = os.path.dirname(os.path.dirname(os.path.abspath(k8smpi_runtime.__file__)))
    code = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); "
        "from k8smpi_runtime.kubexec import master; sys.exit(master.main())"
    )
    argv = [sys.executable, "-I", "-c", code, root, "--fd", str(fd), "--path", path]
    argv += ["--persist", repr(inv.control_persist), "--key", key]
    if inv.kubeconfig:
        argv += ["--kubeconfig", os.path.abspath(inv.kubeconfig)]
    if inv.context:
        argv += ["--context", inv.context]
    if inv.verbosity:
        argv.append("-v")
    child_env = dict(env)
    if child_env.get("KUBECONFIG"):
        parts = child_env["KUBECONFIG"].split(os.pathsep)
        child_env["KUBECONFIG"] = os.pathsep.join(os.path.abspath(p) for p in parts if p)
    log = inv.log_file
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the forked child execs or exits
        try:
            os.setsid()
            if os.fork():
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            err = null
            if log:
                try:
                    err = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                except OSError:
                    err = null
            os.dup2(null, 0)
            os.dup2(null, 1)
            os.dup2(err, 2)
            os.set_inheritable(fd, True)
            os.closerange(3, fd)
            os.closerange(fd + 1, 65536)
            os.chdir("/")
            os.execve(sys.executable, argv, child_env)  # noqa: S606 - our interpreter, our argv
        finally:
            os._exit(127)
    os.waitpid(pid, 0)
    logger.debug("started a control master at %s", path)


def session(
    conn: _socket.socket,
    path: str,
    key: str,
    args: list[str],
    env: Mapping[str, str],
    *,
    timeout: float,
) -> int | None:
    """Hand this call to the master; its exit code, or None when the master did not take it."""
    fields = [key, os.getcwd(), str(len(args)), *args]
    fields += [f"{k}={v}" for k, v in env.items()]
    request = encode("session", fields)
    fds = b"".join(fd.to_bytes(4, sys.byteorder) for fd in (0, 1, 2))
    try:
        sent = conn.sendmsg([request], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, fds)])
        conn.sendall(request[sent:])
        conn.settimeout(timeout)
        answer = conn.recv(1)
        if answer == REFUSED:
            reason = _read_rest(conn)
            logger.debug("the master at %s refused: %s", path, reason)
            return None
        if answer != ACCEPTED:
            logger.debug("the master at %s did not take the call", path)
            return None
        conn.sendall(GO)  # from here on the call is the master's: it may run remotely
        conn.settimeout(None)
    except OSError as e:  # timeouts included: nothing ran, the call runs here instead
        logger.debug("the master at %s did not take the call: %s", path, e)
        conn.close()
        return None
    try:
        answer = conn.recv(2)
        while len(answer) == 1:
            more = conn.recv(1)
            if not more:
                break
            answer += more
    except OSError as e:
        raise ControlError(f"the control master's session broke: {e}") from e
    finally:
        conn.close()
    if len(answer) != 2 or answer[:1] != STATUS:
        raise ControlError(f"the control master at {path} ended the session without an exit status")
    return answer[1]


def _read_rest(conn: _socket.socket) -> str:
    chunks: list[bytes] = []
    while True:
        data = conn.recv(4096)
        if not data:
            return b"".join(chunks).decode(errors="replace")
        chunks.append(data)


def command(name: str, path: str) -> int:
    """``-O check|exit|stop``, with ssh's messages; 0, or 255 when there is no master."""
    conn = connect(path)
    if conn is None:
        raise ControlError(f"no control master at {path}")
    try:
        conn.sendall(encode(name, []))
        conn.settimeout(ACCEPT_WAIT)
        answer = conn.recv(1)
        rest = _read_rest(conn) if answer else ""
    except OSError as e:
        raise ControlError(f"control master at {path}: {e}") from e
    finally:
        conn.close()
    if answer != ACCEPTED:
        raise ControlError(f"the control master at {path} refused -O {name}: {rest}")
    if name == "check":
        sys.stderr.write(f"Master running (pid={rest})\n")
    elif name == "exit":
        sys.stderr.write("Exit request sent.\n")
    else:
        sys.stderr.write("Stop listening request sent.\n")
    return 0
