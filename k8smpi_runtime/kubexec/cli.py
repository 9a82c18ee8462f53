"""``kubexec``: ssh's command line, run in a pod through pods/exec. Entry point :func:`main`.

Exit codes, as ssh's: the remote command's own (0-255; a command killed by signal N gives
128+N, as a shell reports it), else 255 (:data:`~k8smpi_runtime.kubexec.failures.EXIT_FAILED`)
with one line ``kubexec: <message>`` on stderr: a bad command line, no credentials, an API
refusal (the line names the missing permission), a pod that is missing or not Running, a cut
stream, a status without an exit code, SIGINT/SIGTERM/SIGHUP. A missing status is never 0.

stdout carries only the remote's bytes. Diagnostics go to stderr, or with ``-E file`` to that
file: ``-v`` adds debug lines (and a traceback for unexpected errors), ``-q`` drops warnings.
The error line itself is printed even with ``-q``: launchers such as Intel MPI always pass
``-q``, and a silent 255 helps nobody.

The import path stays lean (a test checks it): no ``kubernetes``, ``yaml`` only for
kubeconfig users, ``tenacity`` only after a failed first try.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, NoReturn

from k8smpi_runtime import __version__, hosts
from k8smpi_runtime.errors import K8smpiError
from k8smpi_runtime.kube import config as kconfig
from k8smpi_runtime.kube import exec as kexec
from k8smpi_runtime.kubexec import (
    failures,
    identity,
    resolve,
    retrying,
    session,
    sshargs,
    wire,
)

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import FrameType

logger = logging.getLogger("kubexec")

DEFAULT_CONNECT_TIMEOUT = 30.0
"""Seconds for one connection attempt when ``-o ConnectTimeout`` is not given."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived: leave at once (the remote cleans itself up)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def main(argv: list[str] | None = None) -> int:
    """Run kubexec with ``argv``; the exit code.

    Without ``argv`` this is the ``kubexec`` process itself: it reads ``sys.argv[1:]``, exits
    with the code instead of returning it, and, as ssh does, first closes every file
    descriptor it inherited above stderr. Launchers fork their agents while holding sockets
    (Hydra: the control connections of proxies that have already called back); an agent that
    kept them open would keep those connections alive after the launcher died, and the remote
    daemons would never notice.
    """
    if argv is None:
        _close_inherited_fds()
        _exit_now(_main(sys.argv[1:]))
    return _main(argv)


def _main(args: list[str]) -> int:
    previous = _install_signal_handlers()  # from the start: a signal is a 255, not a traceback
    handler: logging.Handler | None = None
    try:
        try:
            inv = sshargs.parse(args, os.environ)
        except sshargs.UsageError as e:
            handler = _configure_logging(verbosity=0, quiet=False, log_file=None)
            logger.error("%s", e)
            return failures.EXIT_FAILED
        if inv.show_help:
            sys.stdout.write(sshargs.USAGE)
            return failures.EXIT_OK
        if inv.show_version:
            sys.stderr.write(f"kubexec {__version__} (k8smpi-runtime)\n")
            return failures.EXIT_OK
        handler = _configure_logging(
            verbosity=inv.verbosity, quiet=inv.quiet, log_file=inv.log_file
        )
        return run(inv, os.environ)
    except K8smpiError as e:
        logger.debug("failed", exc_info=True)
        logger.error("%s", e)
    except hosts.HostError as e:
        logger.error("%s", e)
    except Interrupted as e:
        logger.debug("interrupted by %s", e)
    except Exception as e:
        logger.debug("internal error", exc_info=True)
        logger.error("internal error: %s: %s (run with -v for details)", type(e).__name__, e)
    finally:
        _restore_signal_handlers(previous)
        if handler is not None:
            handler.close()
            for name in ("kubexec", "k8smpi_runtime"):
                logging.getLogger(name).removeHandler(handler)
    return failures.EXIT_FAILED


def run(inv: sshargs.Invocation, env: Mapping[str, str]) -> int:
    """Resolve, connect, run; the remote exit code (errors raise)."""
    started = time.monotonic()
    ref = hosts.parse_host(inv.host)
    target_identity = identity.target(inv.user)
    mode = choose_mode(inv, stdin_fd=0)
    cfg = kconfig.load(kubeconfig=inv.kubeconfig, context=inv.context, env=env)
    namespace = resolve.namespace_for(
        ref,
        explicit=inv.namespace,
        in_cluster=kconfig.in_cluster_namespace(env),
        configured=cfg.namespace,
    )
    connect_timeout = inv.connect_timeout or DEFAULT_CONNECT_TIMEOUT
    policy = retrying.Policy(
        attempts=inv.connection_attempts or retrying.DEFAULT_ATTEMPTS,
        deadline=inv.connect_timeout,
        started=started,
    )
    logger.debug(
        "host %s -> namespace %s via %s; mode %s; as %s; ignored ssh options: %s",
        inv.host,
        namespace,
        cfg.source,
        mode,
        target_identity.describe(),
        " ".join(inv.ignored) or "-",
    )
    api = wire.Connection(cfg, timeout=connect_timeout)

    def lookup() -> resolve.Pod:
        scope = resolve.scope_for(
            api, explicit=inv.job_selector, in_cluster=cfg.in_cluster, token=cfg.token
        )
        logger.debug("scope: %s", scope.describe())
        return resolve.find_pod(api, ref, namespace, scope)

    try:
        pod = retrying.call(lookup, policy, what=f"finding {inv.host}")
    except BaseException:
        api.close()
        raise
    target = resolve.Target(
        namespace=namespace,
        pod=pod["metadata"]["name"],
        container=resolve.container_of(pod, inv.container),
    )
    logger.debug(
        "pod %s/%s container %s (%.0f ms)",
        namespace,
        target.pod,
        target.container,
        (time.monotonic() - started) * 1000,
    )
    request = session.Request(
        target=target,
        command=inv.command,
        identity=target_identity,
        mode=mode,
        shell=inv.shell,
        grace=inv.grace,
        keepalive=kexec.Keepalive(inv.server_alive_interval, inv.server_alive_count_max),
    )
    # The exec goes over the connection the lookup used: one TLS handshake per call.
    code = session.run(
        cfg, request, policy=policy, connect_timeout=connect_timeout, sock=api.take_socket()
    )
    logger.debug("exit %d after %.0f ms", code, (time.monotonic() - started) * 1000)
    return code


def choose_mode(inv: sshargs.Invocation, *, stdin_fd: int) -> session.Mode:
    """``tty``, ``forward`` or ``lifeline`` for this invocation (ssh's rules for -t/-T/-n)."""
    stdin_null = inv.stdin_null or session.stdin_is_null(stdin_fd)
    is_tty = not stdin_null and os.isatty(stdin_fd)
    if inv.tty_force:
        want_tty = True
    elif inv.tty is True:
        want_tty = is_tty
        if not is_tty:
            logger.warning("Pseudo-terminal will not be allocated because stdin is not a terminal.")
    elif inv.tty is False:
        want_tty = False
    else:
        want_tty = inv.command is None and is_tty
    if want_tty:
        return "tty"
    forward = inv.forward_stdin if inv.forward_stdin is not None else True
    return "forward" if forward and not stdin_null else "lifeline"


# -- process hygiene, logging and signals -----------------------------------------------------


def _exit_now(code: int) -> NoReturn:
    """Leave without the interpreter's teardown (about 10 ms per call): everything kubexec
    wrote went out through unbuffered writes or flushed log handlers already."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(code)


def _close_inherited_fds() -> None:
    """ssh's ``closefrom(STDERR_FILENO + 1)``, by the open descriptors /proc lists: never a
    loop up to ``RLIMIT_NOFILE``, which containers often set to 2**30 (seconds of close(2)
    calls where close_range(2) is missing or filtered by seccomp)."""
    try:
        names = os.listdir("/proc/self/fd")  # noqa: PTH208 - names are all it needs
    except OSError:
        os.closerange(3, min(_max_fd(), 65536))  # no /proc: a bounded best effort
        return
    for name in names:  # includes the listing's own fd, closed by then: EBADF is fine
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.close(fd)


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


class _OneLine(logging.Formatter):
    """``kubexec: message`` for warnings and errors; debug lines name their logger."""

    def __init__(self, verbose: bool) -> None:
        super().__init__()
        self.verbose = verbose

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            text = f"kubexec: {message}"
        else:
            level = record.levelname.lower()
            text = f"kubexec: {level}: +{record.relativeCreated:.0f}ms {record.name}: {message}"
        if record.exc_info and self.verbose:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _configure_logging(
    *, verbosity: int, quiet: bool, log_file: str | None
) -> logging.Handler | None:
    """Handlers on the ``kubexec`` and ``k8smpi_runtime`` loggers; never on stdout."""
    if verbosity:
        level = logging.DEBUG
    elif quiet:
        level = logging.ERROR
    else:
        level = logging.WARNING
    handler: logging.Handler = logging.StreamHandler(sys.stderr)
    problem = None
    if log_file:
        try:
            handler = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as e:
            problem = f"cannot open log file {log_file}: {e.strerror}; logging to stderr"
    handler.setFormatter(_OneLine(verbose=bool(verbosity)))
    for name in ("kubexec", "k8smpi_runtime"):
        log = logging.getLogger(name)
        log.handlers = [handler]
        log.setLevel(level)
        log.propagate = False
    if problem:
        logger.warning("%s", problem)
    return handler


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _on_signal(signum: int, _frame: FrameType | None) -> NoReturn:
    raise Interrupted(signum)


def _install_signal_handlers() -> dict[int, object]:
    previous: dict[int, object] = {}
    for signum in _SIGNALS:
        previous[signum] = signal.signal(signum, _on_signal)
    return previous


def _restore_signal_handlers(previous: dict[int, object]) -> None:
    for signum, handler in previous.items():
        signal.signal(signum, handler)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
