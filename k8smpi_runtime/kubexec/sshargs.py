"""ssh's command line, parsed the way OpenSSH parses it: :func:`parse` -> :class:`Invocation`.

Grammar::

    kubexec [ssh-options] [kubexec-options] [user@]host [ssh-options] [--] [command words...]

*ssh options* are OpenSSH 9's client options (getopt string :data:`SSH_OPTSTRING`), with the
argument attached (``-p2222``, ``-oUser=x``) or in the next word (``-p 2222``), flags bundled
(``-qx``, ``-qp 22``). As in ssh, options are parsed again after the host until the first word
that is not an option, or ``--``: launchers put ``-p <port>`` after the host. Every ssh option is
accepted. Those that mean something here are mapped; the rest are kept in
:attr:`Invocation.ignored` for ``-v`` output:

- ``-l user``, ``user@host`` (split at the last ``@``), ``ssh://[user@]host[:port]`` and
  ``-o User=user``: the remote user (as in ssh, the first one given wins);
- ``-n``: stdin from /dev/null; ``-t`` / ``-T`` and ``-o RequestTTY=``: tty or not
  (``-tt``: force one);
- ``-q``: quiet; ``-v``: verbose (repeatable); ``-E file``: log to a file;
- ``-o ConnectTimeout=N`` (seconds, or ssh's ``1m30s`` form; 0 means none),
  ``-o ConnectionAttempts=N``;
- ``-o ServerAliveInterval=N`` (seconds or ssh's form; kubexec's default is 30, not ssh's 0;
  0 turns keepalives and dead-peer detection off), ``-o ServerAliveCountMax=N`` (default 3);
- ``-p port`` and ``-o Port=``: checked and kept, but unused (there is no port in pods/exec);
- ``-o ControlMaster=``, ``-M``, ``-o ControlPath=``, ``-S path``, ``-o ControlPersist=`` and
  ``-O check|exit|stop``: a master that later calls hand their stdio to (see
  :mod:`k8smpi_runtime.kubexec.control`); also ``KUBEXEC_CONTROL_MASTER``,
  ``KUBEXEC_CONTROL_PATH`` and ``KUBEXEC_CONTROL_PERSIST`` when no option gives them;
- ``-V``: print the version.

``-o`` takes ``Key=Value`` or ``Key Value``, keys in any case. Unknown keys are ignored:
ssh has hundreds, and launchers pass things like ``StrictHostKeyChecking=no``.

*kubexec options* are long options only, because ssh owns the short letters. They go **before
the host**. After the host, a word that starts with ``--`` is an error, except ``--`` itself.
Each takes ``--opt value`` or ``--opt=value``, and each has an environment variable. The flag
wins over the variable, and an empty variable counts as unset:

===================== ======================= =============================================
option                environment             meaning
===================== ======================= =============================================
``--namespace NS``    ``KUBEXEC_NAMESPACE``   namespace, when the host name does not carry one
``--container NAME``  ``KUBEXEC_CONTAINER``   container in the pod (default: the first)
``--kubeconfig PATH`` ``KUBEXEC_KUBECONFIG``  kubeconfig file
``--context NAME``    ``KUBEXEC_CONTEXT``     kubeconfig context
``--shell PATH``      ``KUBEXEC_SHELL``       remote shell that runs the command (``/bin/sh``)
``--grace SECONDS``   ``KUBEXEC_GRACE``       time between TERM and KILL on disconnect (5)
``--reattach SECONDS`` ``KUBEXEC_REATTACH``   re-attach window after a lost stream (45; 0: none)
``--job-selector SEL`` ``KUBEXEC_SELECTOR``   take only pods matching this label selector
``--[no-]forward-stdin`` ``KUBEXEC_FORWARD_STDIN`` forward local stdin (default: auto)
``--help``, ``--version``                     print and exit
===================== ======================= =============================================

The command is the remaining words joined with single spaces, as ssh joins them, and is run by
the remote shell with ``-c``. Launchers depend on this: their words hold literal quotes and
``;``. If there are no words, or they join to an empty string, :attr:`Invocation.command` is
``None`` and an interactive shell runs.

The parser reads only the arguments (``sys.argv[1:]``), never the program name: Open MPI
passes the basename, Hydra the full path. Errors raise :class:`UsageError` with a one-line
message. The CLI prints it and exits 255, as ssh does.
"""

from __future__ import annotations

import math

from k8smpi_runtime.records import Record

# Not typing.TYPE_CHECKING, and no re, dataclasses or urllib.parse at import: this module is on
# the path of every kubexec call, the control-master client's included (see records.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

SSH_OPTSTRING = "1246ab:c:e:fgi:kl:m:no:p:qstvxAB:CD:E:F:GI:J:KL:MNO:PQ:R:S:TVw:W:XYy"
"""OpenSSH 9.2's client getopt string: a letter followed by ``:`` takes an argument."""

_WITH_ARG = frozenset(
    c for c, nxt in zip(SSH_OPTSTRING, SSH_OPTSTRING[1:] + " ", strict=True) if nxt == ":"
)
_FLAGS = frozenset(SSH_OPTSTRING.replace(":", "")) - _WITH_ARG

DEFAULT_SHELL = "/bin/sh"
DEFAULT_GRACE = 5.0
DEFAULT_REATTACH = 45.0
"""The re-attach window: a job survives an API server that is back within 30 s (a restart,
a failover) with 15 s to spare for kubexec's backoff (at most 5 s between tries) and the
attach itself; kill -9 of kubexec leaves the pod's processes at most 45 s + 5 s (the pod's
own margin) + the grace, under the 60 s + grace the project promises. 0: a lost stream ends
the command at once, as before."""
MAX_REATTACH = 86400.0
DEFAULT_SERVER_ALIVE_INTERVAL = 30.0
DEFAULT_SERVER_ALIVE_COUNT_MAX = 3

USAGE = """\
usage: kubexec [ssh-options] [kubexec-options] [user@]host [ssh-options] [--] [command ...]

Runs command (or a shell) in the pod named by host, through the Kubernetes pods/exec API,
the way ssh would. Accepts every OpenSSH client option; uses -l -n -q -t -T -v -E -p -M -S -O
and -o User/ConnectTimeout/ConnectionAttempts/RequestTTY/Port/ServerAliveInterval (default 30)
/ServerAliveCountMax (3)/ControlMaster/ControlPath/ControlPersist, ignores the others.
-o ControlMaster=auto -o ControlPersist=60: later calls go through a master process that
holds the credentials (environment: KUBEXEC_CONTROL_*).

kubexec-options (before the host; flag beats environment variable):
  --namespace NS           KUBEXEC_NAMESPACE      namespace (else from host FQDN, pod, kubeconfig)
  --container NAME         KUBEXEC_CONTAINER      container (default: the pod's first)
  --kubeconfig PATH        KUBEXEC_KUBECONFIG     kubeconfig file
  --context NAME           KUBEXEC_CONTEXT        kubeconfig context
  --shell PATH             KUBEXEC_SHELL          remote shell for the command (/bin/sh)
  --grace SECONDS          KUBEXEC_GRACE          TERM-to-KILL delay on disconnect (5)
  --reattach SECONDS       KUBEXEC_REATTACH       re-attach window after a lost stream (45;
                                                  0: the command ends with the stream)
  --job-selector SEL       KUBEXEC_SELECTOR       only pods with these labels (default in a
                                                  pod: its own k8smpi.dev/job label)
  --[no-]forward-stdin     KUBEXEC_FORWARD_STDIN  forward local stdin (auto: unless -n or
                                                  stdin is /dev/null)
  --help, --version
"""


class UsageError(Exception):
    """A command line that cannot be run. The message is one line, without a program prefix."""


class Invocation(Record):
    """What one ``kubexec`` command line asks for."""

    host: str
    """The host word without ``user@`` (or the host of an ``ssh://`` URI). It is empty only
    when :attr:`show_help` or :attr:`show_version` is set."""
    user: str | None = None
    """The remote user, by name or number, from ``-l``, ``user@``, a URI or ``-o User=``.
    ``None`` means the local user."""
    command: str | None = None
    """The command words joined with single spaces. ``None`` means an interactive shell."""
    stdin_null: bool = False
    """``-n``: the remote gets no stdin. This beats :attr:`forward_stdin`."""
    tty: bool | None = None
    """``-t`` (``True``), ``-T`` (``False``) or ``-o RequestTTY``. ``None`` means auto, as in
    ssh: a tty when there is no command and local stdin is a terminal."""
    tty_force: bool = False
    """``-tt`` or ``RequestTTY=force``: a tty even when local stdin is not a terminal."""
    quiet: bool = False
    """``-q``."""
    verbosity: int = 0
    """The number of ``-v``."""
    connect_timeout: float | None = None
    """``-o ConnectTimeout``, in seconds. ``None`` means no limit of our own."""
    connection_attempts: int | None = None
    """``-o ConnectionAttempts``: at least 1. ``None`` means kubexec's default."""
    log_file: str | None = None
    """``-E``: append diagnostics to this file instead of stderr."""
    port: int | None = None
    """``-p``, ``-o Port`` or the URI's port. It is checked, but pods/exec has no use for it."""
    namespace: str | None = None
    container: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    shell: str = DEFAULT_SHELL
    """The remote shell that runs :attr:`command` with ``-c``."""
    grace: float = DEFAULT_GRACE
    """Seconds between TERM and KILL when the connection is lost."""
    reattach: float = DEFAULT_REATTACH
    """``--reattach`` / ``KUBEXEC_REATTACH``: seconds within which kubexec re-attaches to the
    remote session after its stream was lost (the session waits as long, plus a margin,
    before it ends the command); 0: a lost stream ends the command, as before."""
    forward_stdin: bool | None = None
    """``--forward-stdin`` / ``--no-forward-stdin``. ``None`` means auto: forward unless
    :attr:`stdin_null` is set or local stdin is /dev/null."""
    job_selector: str | None = None
    """``--job-selector`` / ``KUBEXEC_SELECTOR``: a label selector every pod taken must match."""
    server_alive_interval: float = DEFAULT_SERVER_ALIVE_INTERVAL
    """``-o ServerAliveInterval``: seconds between keepalives and liveness pings; 0 is off."""
    server_alive_count_max: int = DEFAULT_SERVER_ALIVE_COUNT_MAX
    """``-o ServerAliveCountMax``: unanswered pings after which the connection is dead."""
    control_master: str = "no"
    """``-o ControlMaster`` / ``-M`` / ``KUBEXEC_CONTROL_MASTER``: ``no`` (default), ``yes``,
    ``auto``, ``ask`` or ``autoask`` (kubexec cannot ask: those two act as ``yes``/``auto``)."""
    control_path: str | None = None
    """``-o ControlPath`` / ``-S`` / ``KUBEXEC_CONTROL_PATH``; ``None`` means kubexec's default
    (see :mod:`k8smpi_runtime.kubexec.control`), ``"none"`` no master at all."""
    control_persist: float = 0.0
    """``-o ControlPersist`` / ``KUBEXEC_CONTROL_PERSIST``: seconds a master stays while idle;
    0 (``no``) leaves when its last session ends, ``math.inf`` (``yes``) stays."""
    control_command: str | None = None
    """``-O check|exit|stop``: a request to the master instead of a command."""
    ignored: tuple[str, ...] = ()
    """The ssh options that were accepted but have no meaning here, e.g. ``-x`` or
    ``-o StrictHostKeyChecking=no``, for ``-v`` output."""
    show_help: bool = False
    show_version: bool = False


class _Draft:
    """Mutable parse state. ssh keeps the first value it sees for most settings."""

    def __init__(self) -> None:
        self.user: str | None = None
        self.port: int | None = None
        self.stdin_null = False
        self.tty_flag: str | None = None  # "yes" | "force" | "no", from -t/-T: these always win
        self.tty_option: str | None = None  # from -o RequestTTY: first wins
        self.quiet = False
        self.verbosity = 0
        self.connect_timeout: float | None = None
        self.connect_timeout_set = False
        self.connection_attempts: int | None = None
        self.server_alive_interval: float | None = None
        self.server_alive_count_max: int | None = None
        self.log_file: str | None = None
        self.control_master: str | None = None
        self.control_path: str | None = None
        self.control_persist: float | None = None
        self.control_command: str | None = None
        self.ignored: list[str] = []
        self.long: dict[str, str] = {}
        self.forward_stdin: bool | None = None
        self.show_help = False
        self.show_version = False


# Long options that take a value: option name -> environment variable.
_VALUE_OPTIONS = {
    "namespace": "KUBEXEC_NAMESPACE",
    "container": "KUBEXEC_CONTAINER",
    "kubeconfig": "KUBEXEC_KUBECONFIG",
    "context": "KUBEXEC_CONTEXT",
    "shell": "KUBEXEC_SHELL",
    "grace": "KUBEXEC_GRACE",
    "reattach": "KUBEXEC_REATTACH",
    "job-selector": "KUBEXEC_SELECTOR",
}
_FLAG_OPTIONS = ("forward-stdin", "no-forward-stdin", "help", "version")

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_DIGITS = frozenset("0123456789")
_TIME_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CONTROL_MASTER = {
    "yes": "yes",
    "true": "yes",
    "no": "no",
    "false": "no",
    "auto": "auto",
    "ask": "ask",
    "autoask": "autoask",
}
CONTROL_COMMANDS = ("check", "exit", "stop")
"""The ``-O`` requests kubexec's master answers (ssh's forwarding ones have no meaning here)."""
_REQUEST_TTY = {
    "yes": "yes",
    "true": "yes",
    "no": "no",
    "false": "no",
    "force": "force",
    "auto": "auto",
}


def parse(argv: Sequence[str], env: Mapping[str, str]) -> Invocation:
    """Parse kubexec's arguments (``sys.argv[1:]``, without the program name).

    ``env`` supplies the ``KUBEXEC_*`` settings that no flag gave. Raises :class:`UsageError`.
    """
    draft = _Draft()
    index, terminated = _parse_options(argv, 0, draft, before_host=True)
    if _stops(draft):
        return Invocation(host="", show_help=draft.show_help, show_version=draft.show_version)
    if index >= len(argv):
        raise UsageError("missing host (usage: kubexec [options] [user@]host [command ...])")
    host = _parse_host(argv[index], draft)
    index += 1
    if not terminated:
        index, _ = _parse_options(argv, index, draft, before_host=False)
        if _stops(draft):
            return Invocation(host="", show_version=True)
    # ssh: an empty command string is no command at all.
    command = " ".join(argv[index:]) or None
    return _finish(draft, host=host, command=command, env=env)


def _stops(draft: _Draft) -> bool:
    """``--help``, ``--version`` or ``-V`` was seen: print, and ignore the rest (as ssh -V)."""
    return draft.show_help or draft.show_version


def _parse_options(
    argv: Sequence[str], index: int, draft: _Draft, *, before_host: bool
) -> tuple[int, bool]:
    """Options from ``argv[index]`` to the first non-option: ``(next index, "--" seen)``."""
    while index < len(argv) and not _stops(draft):
        word = argv[index]
        if word == "--":
            return index + 1, True
        if word.startswith("--"):
            if not before_host:
                name = word.split("=", 1)[0]
                raise UsageError(f"{name}: kubexec's own options must come before the host")
            index = _parse_long(argv, index, draft)
        elif word.startswith("-") and word != "-":
            index = _parse_short(argv, index, draft)
        else:
            break
    return index, False


def _parse_short(argv: Sequence[str], index: int, draft: _Draft) -> int:
    """One word of short options (``-q``, ``-qx``, ``-p22``, ``-qp 22``); the next index."""
    word = argv[index]
    for pos in range(1, len(word)):
        letter = word[pos]
        if letter in _FLAGS:
            _apply_flag(letter, draft)
            if _stops(draft):  # -V: ssh prints its version at once
                break
        elif letter in _WITH_ARG:
            if pos + 1 < len(word):
                value = word[pos + 1 :]
            elif index + 1 < len(argv):
                index += 1
                value = argv[index]
            else:
                raise UsageError(f"option -{letter} needs an argument")
            _apply_option(letter, value, draft)
            break
        else:
            raise UsageError(f"unknown option -{letter} (kubexec --help lists its own options)")
    return index + 1


def _parse_long(argv: Sequence[str], index: int, draft: _Draft) -> int:
    """One ``--name[=value]`` option at ``argv[index]``; returns the next index."""
    name, eq, value = argv[index][2:].partition("=")
    if name in _FLAG_OPTIONS:
        if eq:
            raise UsageError(f"--{name} takes no value")
        if name == "help":
            draft.show_help = True
        elif name == "version":
            draft.show_version = True
        else:
            draft.forward_stdin = name == "forward-stdin"
        return index + 1
    if name not in _VALUE_OPTIONS:
        raise UsageError(f"unknown option --{name} (kubexec --help lists its own options)")
    if not eq:
        if index + 1 >= len(argv):
            raise UsageError(f"option --{name} needs a value")
        index += 1
        value = argv[index]
    if not value:
        raise UsageError(f"option --{name} needs a non-empty value")
    draft.long[name] = value
    return index + 1


def _apply_flag(letter: str, draft: _Draft) -> None:
    if letter == "n":
        draft.stdin_null = True
    elif letter == "t":
        # OpenSSH: a -t after a -t forces; any other state becomes "yes" (so -ttt is "yes").
        draft.tty_flag = "force" if draft.tty_flag == "yes" else "yes"
    elif letter == "T":
        draft.tty_flag = "no"
    elif letter == "q":
        draft.quiet = True
    elif letter == "v":
        draft.verbosity += 1
    elif letter == "V":
        draft.show_version = True
    elif letter == "M":
        # ssh: -M is ControlMaster=yes, a second -M makes it "ask".
        draft.control_master = "ask" if draft.control_master == "yes" else "yes"
    else:
        draft.ignored.append(f"-{letter}")


def _apply_option(letter: str, value: str, draft: _Draft) -> None:
    if letter == "l":
        if not value:
            raise UsageError("option -l needs a user name")
        if draft.user is None:
            draft.user = value
    elif letter == "p":
        port = _port(value, "-p")
        if draft.port is None:
            draft.port = port
    elif letter == "E":
        draft.log_file = value
    elif letter == "o":
        _apply_config(value, draft)
    elif letter == "S":
        _config_control_path(value, draft)
    elif letter == "O":
        if value not in CONTROL_COMMANDS:
            raise UsageError(f"-O {value}: kubexec's master knows {', '.join(CONTROL_COMMANDS)}")
        draft.control_command = value
    else:
        draft.ignored.append(f"-{letter} {value}")


def _apply_config(text: str, draft: _Draft) -> None:
    """One ``-o`` argument: ``Key=Value`` or ``Key Value`` (the key in any case)."""
    stripped = text.lstrip()
    end = 0
    while end < len(stripped) and not stripped[end].isspace() and stripped[end] != "=":
        end += 1
    if not end:
        raise UsageError(f"-o {text!r}: expected Key=Value")
    key, rest = stripped[:end], stripped[end:].lstrip()
    if rest.startswith("="):
        rest = rest[1:]
    value = _unquote(rest.strip())
    apply = _CONFIG_KEYS.get(key.lower())
    if apply is None:
        draft.ignored.append(f"-o {text}")
    elif not value:
        raise UsageError(f"-o {key}: missing value")
    else:
        apply(value, draft)


def _config_user(value: str, draft: _Draft) -> None:
    if draft.user is None:
        draft.user = value


def _config_port(value: str, draft: _Draft) -> None:
    port = _port(value, "-o Port")
    if draft.port is None:
        draft.port = port


def _config_connect_timeout(value: str, draft: _Draft) -> None:
    seconds = _ssh_time(value, "-o ConnectTimeout")
    if not draft.connect_timeout_set:
        draft.connect_timeout_set = True
        draft.connect_timeout = seconds or None  # 0: no timeout, as in ssh


def _count(value: str, where: str) -> int:
    """A whole number >= 1 (ssh's counts)."""
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"{where}={value}: expected a whole number >= 1")
    return int(value)


def _config_connection_attempts(value: str, draft: _Draft) -> None:
    count = _count(value, "-o ConnectionAttempts")
    if draft.connection_attempts is None:
        draft.connection_attempts = count


def _config_server_alive_interval(value: str, draft: _Draft) -> None:
    seconds = _ssh_time(value, "-o ServerAliveInterval")
    if draft.server_alive_interval is None:
        draft.server_alive_interval = seconds


def _config_server_alive_count_max(value: str, draft: _Draft) -> None:
    count = _count(value, "-o ServerAliveCountMax")
    if draft.server_alive_count_max is None:
        draft.server_alive_count_max = count


def _config_request_tty(value: str, draft: _Draft) -> None:
    mode = _REQUEST_TTY.get(value.lower())
    if mode is None:
        raise UsageError(f"-o RequestTTY={value}: expected yes, no, force or auto")
    if draft.tty_option is None:
        draft.tty_option = mode


def _config_control_master(value: str, draft: _Draft) -> None:
    mode = _CONTROL_MASTER.get(value.lower())
    if mode is None:
        raise UsageError(f"-o ControlMaster={value}: expected yes, no, auto, ask or autoask")
    if draft.control_master is None:
        draft.control_master = mode


def _config_control_path(value: str, draft: _Draft) -> None:
    if draft.control_path is None:
        draft.control_path = value


def _config_control_persist(value: str, draft: _Draft) -> None:
    seconds = _persist(value, "-o ControlPersist")
    if draft.control_persist is None:
        draft.control_persist = seconds


def _persist(value: str, where: str) -> float:
    """ssh's ControlPersist: yes (or 0) stays, no leaves at once, else a time."""
    word = value.strip().lower()
    if word in _TRUE or word == "0":
        return math.inf
    if word in _FALSE:
        return 0.0
    return _ssh_time(word, where) or math.inf


# The -o keys that mean something here (lower case); ssh keeps the first value of each.
_CONFIG_KEYS: dict[str, Callable[[str, _Draft], None]] = {
    "user": _config_user,
    "port": _config_port,
    "connecttimeout": _config_connect_timeout,
    "connectionattempts": _config_connection_attempts,
    "requesttty": _config_request_tty,
    "serveraliveinterval": _config_server_alive_interval,
    "serveralivecountmax": _config_server_alive_count_max,
    "controlmaster": _config_control_master,
    "controlpath": _config_control_path,
    "controlpersist": _config_control_persist,
}


def _parse_host(word: str, draft: _Draft) -> str:
    """The host word: ``[user@]host`` (split at the last ``@``) or ``ssh://[user@]host[:port]``."""
    if word.startswith("ssh://"):
        return _parse_uri(word, draft)
    user, at, host = word.rpartition("@")
    if at:
        if not user:
            raise UsageError(f"{word!r}: empty user name before '@'")
        if draft.user is None:
            draft.user = user
    if not host:
        raise UsageError(f"{word!r}: empty host name")
    return host


def _parse_uri(word: str, draft: _Draft) -> str:
    """``ssh://[user[;params]@]host[:port][/]``, as OpenSSH's ``parse_ssh_uri`` reads it."""
    rest = word[len("ssh://") :]
    if rest.endswith("/"):
        rest = rest[:-1]
    if "/" in rest:
        raise UsageError(f"{word!r}: an ssh:// URI cannot carry a path")
    userinfo, at, hostport = rest.rpartition("@")
    if at:
        import urllib.parse  # noqa: PLC0415 - only ssh:// URIs need it

        user = urllib.parse.unquote(userinfo.split(";", 1)[0])
        if not user:
            raise UsageError(f"{word!r}: empty user name before '@'")
        if draft.user is None:
            draft.user = user
    if hostport.startswith("["):
        host, bracket, tail = hostport[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise UsageError(f"{word!r}: bad [address] in ssh:// URI")
        port_text = tail[1:] if tail else None
    else:
        host, colon, port_text_ = hostport.partition(":")
        port_text = port_text_ if colon else None
    if not host:
        raise UsageError(f"{word!r}: empty host name")
    if port_text is not None:
        port = _port(port_text, "ssh:// URI")
        if draft.port is None:
            draft.port = port
    return host


def _finish(draft: _Draft, *, host: str, command: str | None, env: Mapping[str, str]) -> Invocation:
    def setting(name: str) -> str | None:
        if name in draft.long:
            return draft.long[name]
        return env.get(_VALUE_OPTIONS[name]) or None

    grace_text = setting("grace")
    grace = DEFAULT_GRACE if grace_text is None else _seconds(grace_text, "grace")
    reattach_text = setting("reattach")
    reattach = DEFAULT_REATTACH
    if reattach_text is not None:
        reattach = _ssh_time(reattach_text.strip(), "--reattach")
        if reattach > MAX_REATTACH:
            raise UsageError(f"--reattach={reattach_text}: at most {MAX_REATTACH:g} seconds")
    tty_mode = draft.tty_flag or draft.tty_option
    forward_stdin = draft.forward_stdin
    if forward_stdin is None:
        forward_stdin = _env_bool(env, "KUBEXEC_FORWARD_STDIN")
    if draft.control_master is None and env.get("KUBEXEC_CONTROL_MASTER"):
        _config_control_master(env["KUBEXEC_CONTROL_MASTER"], draft)
    if draft.control_path is None and env.get("KUBEXEC_CONTROL_PATH"):
        draft.control_path = env["KUBEXEC_CONTROL_PATH"]
    if draft.control_persist is None and env.get("KUBEXEC_CONTROL_PERSIST"):
        draft.control_persist = _persist(env["KUBEXEC_CONTROL_PERSIST"], "KUBEXEC_CONTROL_PERSIST")
    return Invocation(
        host=host,
        user=draft.user,
        command=command,
        stdin_null=draft.stdin_null,
        tty=None if tty_mode in (None, "auto") else tty_mode != "no",
        tty_force=tty_mode == "force",
        quiet=draft.quiet,
        verbosity=draft.verbosity,
        connect_timeout=draft.connect_timeout,
        connection_attempts=draft.connection_attempts,
        log_file=draft.log_file,
        port=draft.port,
        namespace=setting("namespace"),
        container=setting("container"),
        kubeconfig=setting("kubeconfig"),
        context=setting("context"),
        shell=setting("shell") or DEFAULT_SHELL,
        grace=grace,
        reattach=reattach,
        forward_stdin=forward_stdin,
        job_selector=setting("job-selector"),
        server_alive_interval=(
            DEFAULT_SERVER_ALIVE_INTERVAL
            if draft.server_alive_interval is None
            else draft.server_alive_interval
        ),
        server_alive_count_max=draft.server_alive_count_max or DEFAULT_SERVER_ALIVE_COUNT_MAX,
        control_master=draft.control_master or "no",
        control_path=draft.control_path,
        control_persist=draft.control_persist or 0.0,
        control_command=draft.control_command,
        ignored=tuple(draft.ignored),
    )


def _port(text: str, where: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise UsageError(f"{where}: bad port {text!r}")
    return int(text)


def _seconds(text: str, name: str) -> float:
    """A non-negative decimal number of seconds (``--grace`` / ``KUBEXEC_GRACE``)."""
    value = text.strip()
    if not _is_decimal(value) or not math.isfinite(float(value)):
        raise UsageError(f"{name}: expected a number of seconds, got {text!r}")
    return float(value)


def _is_decimal(text: str) -> bool:
    """``12``, ``1.5``, ``2.`` or ``.5``: ASCII digits with at most one dot."""
    whole, _, fraction = text.partition(".")
    digits = whole + fraction
    return bool(digits) and set(digits) <= _DIGITS


def _ssh_time(text: str, where: str) -> float:
    """Seconds from a decimal number or ssh's time format (``90``, ``1m30s``, ``2h``)."""
    if _is_decimal(text):
        return float(text)
    total, number = 0, ""
    for char in text:
        if char in _DIGITS:
            number += char
        elif number and char.lower() in _TIME_UNITS:
            total += int(number) * _TIME_UNITS[char.lower()]
            number = ""
        else:
            raise UsageError(f"{where}={text}: expected seconds or a time such as 1m30s")
    if not text:
        raise UsageError(f"{where}={text}: expected seconds or a time such as 1m30s")
    return float(total + int(number or 0))


def _env_bool(env: Mapping[str, str], name: str) -> bool | None:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "auto"):
        return None
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise UsageError(f"{name}={raw}: expected 1/0, yes/no, true/false or auto")


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    return value
