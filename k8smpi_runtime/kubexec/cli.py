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

The import path stays lean (a test checks it): no ``kubernetes``, no ``logging`` unless a
line is written, ``yaml`` only for kubeconfig users, ``tenacity`` only after a failed first
try, and the API modules only when this process makes the call itself: with a control master
(``-o ControlMaster``, see :mod:`~k8smpi_runtime.kubexec.control`) it only hands its stdio over.
"""

from __future__ import annotations

import os
import sys
import time

from k8smpi_runtime import __version__, hosts, lazylog
from k8smpi_runtime.errors import K8smpiError
from k8smpi_runtime.kubexec import failures, sshargs

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    import logging
    import signal
    import ssl
    from collections.abc import Mapping
    from types import FrameType
    from typing import NoReturn

    from k8smpi_runtime.kube.config import ClientConfig
    from k8smpi_runtime.kubexec import session
else:
    # The C module under signal: the same calls without its enums, whose import is 4-5 ms of a
    # call that goes through a control master.
    import _signal as signal

logger = lazylog.getLogger("kubexec")

DEFAULT_CONNECT_TIMEOUT = 30.0
"""Seconds for one connection attempt when ``-o ConnectTimeout`` is not given."""


class Interrupted(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived: leave at once (the remote cleans itself up)."""

    def __init__(self, signum: int) -> None:
        super().__init__(_SIGNAL_NAMES.get(signum, f"signal {signum}"))
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


def master_session(
    args: list[str], config: ClientConfig | None, sock: ssl.SSLSocket | None = None
) -> int:
    """A call in a control master's session process: with the master's credentials (None:
    load them) and the idle API connection it dialed for this call (if any), never through a
    master again; stdout and stderr flushed."""
    try:
        return _main(args, preloaded=Preloaded(config, sock), use_master=False)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:  # noqa: SIM105 - see _exit_now
                stream.flush()
            except (OSError, ValueError):
                pass


def _main(args: list[str], *, preloaded: Preloaded | None = None, use_master: bool = True) -> int:
    """One call; ``preloaded``: what a master has ready; ``use_master``: may use a master."""
    previous = _install_signal_handlers()  # from the start: a signal is a 255, not a traceback
    try:
        try:
            inv = sshargs.parse(args, os.environ)
        except sshargs.UsageError as e:
            _configure_logging(verbosity=0, quiet=False, log_file=None)
            logger.error("%s", e)
            return failures.EXIT_FAILED
        if inv.show_help:
            sys.stdout.write(sshargs.USAGE)
            return failures.EXIT_OK
        if inv.show_version:
            sys.stderr.write(f"kubexec {__version__} (k8smpi-runtime)\n")
            return failures.EXIT_OK
        _configure_logging(verbosity=inv.verbosity, quiet=inv.quiet, log_file=inv.log_file)
        return _call(inv, args, preloaded, use_master=use_master)
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
        _reset_logging()
    return failures.EXIT_FAILED


def _call(
    inv: sshargs.Invocation, args: list[str], preloaded: Preloaded | None, *, use_master: bool
) -> int:
    """Through a control master when one is asked for and usable, else in this process."""
    if use_master and _wants_master(inv):
        from k8smpi_runtime.kubexec import control  # noqa: PLC0415 - only when asked for

        code = control.client(inv, args, os.environ)
        if code is not None:
            return code
    if preloaded is None:
        return run(inv, os.environ)
    return run(inv, os.environ, config=preloaded.config, sock=preloaded.sock)


def _wants_master(inv: sshargs.Invocation) -> bool:
    """``-O``, ``ControlMaster`` other than ``no``, or a ``ControlPath`` (an existing master)."""
    return bool(
        inv.control_command
        or inv.control_master != "no"
        or (inv.control_path is not None and inv.control_path != "none")
    )


class Preloaded:
    """What a control master hands its session: credentials, an idle API connection."""

    __slots__ = ("config", "sock")

    def __init__(self, config: ClientConfig | None, sock: ssl.SSLSocket | None) -> None:
        self.config, self.sock = config, sock


def run(
    inv: sshargs.Invocation,
    env: Mapping[str, str],
    *,
    config: ClientConfig | None = None,
    sock: ssl.SSLSocket | None = None,
) -> int:
    """Resolve, connect, run; the remote exit code (errors raise). ``config``: credentials
    already loaded (a control master's), else they are loaded here; ``sock``: an idle
    connection to their API server, used for the first request."""
    # The API modules (ssl, json, the session) are imported here, not at the top: a call that
    # goes through a control master never needs them.
    from k8smpi_runtime.kube import config as kconfig  # noqa: PLC0415
    from k8smpi_runtime.kube import exec as kexec  # noqa: PLC0415
    from k8smpi_runtime.kubexec import (  # noqa: PLC0415
        identity,
        resolve,
        retrying,
        session,
        wire,
    )

    started = time.monotonic()
    ref = hosts.parse_host(inv.host)
    target_identity = identity.target(inv.user)
    mode = choose_mode(inv, stdin_fd=0)
    cfg = config or kconfig.load(kubeconfig=inv.kubeconfig, context=inv.context, env=env)
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
    request = session.Request(
        target=resolve.Target(namespace=namespace, pod="", container=None),
        command=inv.command,
        identity=target_identity,
        mode=mode,
        shell=inv.shell,
        grace=inv.grace,
        keepalive=kexec.Keepalive(inv.server_alive_interval, inv.server_alive_count_max),
        # Lifeline mode only (what MPI launchers use). With forwarded stdin the session's
        # acknowledgements travel behind that stdin: a command whose output waits on them
        # while it is not reading its input (cat of 5 MiB) would deadlock. tty: no session.
        reattach=inv.reattach if mode == "lifeline" else 0.0,
    )
    # A master's connection serves only the master's credentials.
    api = wire.Connection(cfg, timeout=connect_timeout, sock=sock if config else None)

    def scope_for() -> resolve.Scope:
        # A request only in a pod without --job-selector: its own pod's job label.
        scope = resolve.scope_for(
            api, explicit=inv.job_selector, in_cluster=cfg.in_cluster, token=cfg.token
        )
        logger.debug("scope: %s", scope.describe())
        return scope

    try:
        scope = retrying.call(scope_for, policy, what=f"finding {inv.host}")
        guess = resolve.guess(ref, namespace, inv.container) if scope.selector is None else None
        if guess is not None:
            # A pod name (what launchers pass) and no scope to check it against: exec at once,
            # and look the pod up only if the API server refuses before anything runs (no such
            # pod: maybe a hostname; not running; several containers).
            try:
                code = session.run(
                    cfg,
                    request._replace(target=guess, guessed=True),
                    policy=policy,
                    connect_timeout=connect_timeout,
                    sock=api.take_socket(),
                )
            except session.Unresolved as e:
                logger.debug("exec into %s refused (%s): looking the pod up", guess.pod, e)
            else:
                logger.debug("exit %d after %.0f ms", code, (time.monotonic() - started) * 1000)
                return code
        pod = retrying.call(
            lambda: resolve.find_pod(api, ref, namespace, scope),
            policy,
            what=f"finding {inv.host}",
        )
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
    # The exec goes over the connection the lookup used: one TLS handshake.
    code = session.run(
        cfg,
        request._replace(target=target),
        policy=policy,
        connect_timeout=connect_timeout,
        sock=api.take_socket(),
    )
    logger.debug("exit %d after %.0f ms", code, (time.monotonic() - started) * 1000)
    return code


def choose_mode(inv: sshargs.Invocation, *, stdin_fd: int) -> session.Mode:
    """``tty``, ``forward`` or ``lifeline`` for this invocation (ssh's rules for -t/-T/-n)."""
    from k8smpi_runtime.kubexec import session  # noqa: PLC0415 - see run()

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
        try:  # noqa: SIM105 - contextlib is one import more on every call's path
            stream.flush()
        except (OSError, ValueError):
            pass
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
            try:  # noqa: SIM105 - see _exit_now
                os.close(fd)
            except OSError:
                pass


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (ValueError, OSError):
        return 65536


_handler: list[logging.Handler] = []
"""The handler :func:`_configure_logging` installed, if it has (for :func:`_reset_logging`)."""


def _configure_logging(*, verbosity: int, quiet: bool, log_file: str | None) -> None:
    """Handlers on the ``kubexec`` and ``k8smpi_runtime`` loggers; never on stdout.

    Without ``-v`` or ``-E`` nothing is set up now: records under WARNING (ERROR with ``-q``)
    are dropped unseen, and the handler is installed when the first line is written.
    """
    if verbosity:
        level = lazylog.DEBUG
    elif quiet:
        level = lazylog.ERROR
    else:
        level = lazylog.WARNING

    def setup() -> None:
        from k8smpi_runtime.kubexec import logsetup  # noqa: PLC0415 - see lazylog

        _handler.append(logsetup.install(level=level, verbose=bool(verbosity), log_file=log_file))

    if verbosity or log_file:
        lazylog.drop_below(0)
        setup()
    else:
        lazylog.drop_below(level, setup)


def _reset_logging() -> None:
    lazylog.drop_below(0)
    if _handler:
        from k8smpi_runtime.kubexec import logsetup  # noqa: PLC0415

        logsetup.remove(_handler.pop())


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
_SIGNAL_NAMES: dict[int, str] = {
    signal.SIGINT: "SIGINT",
    signal.SIGTERM: "SIGTERM",
    signal.SIGHUP: "SIGHUP",
}


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
