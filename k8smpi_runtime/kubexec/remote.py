"""The argv that kubexec runs in the pod: a POSIX-sh wrapper around the user's command.

pods/exec runs an argv with no shell, has no user option, and keeps the process running when
the client goes away (kubernetes#89031). The wrapper, :data:`WRAPPER`, is sent inline with
``/bin/sh -c``, so it needs nothing in the image but ``sh``, ``tr`` and ``sleep`` (plus
``setsid``, and ``setpriv`` or coreutils ``chroot`` when it switches user). It:

1. exports ``SHELL`` (the command's shell) if it is unset, as sshd does;
2. switches to the target uid/gid when it differs from the container's uid (see below);
3. runs the command as ``setsid $shell -c "$cmd"`` in the foreground, in a session of its own,
   with ``KUBEXEC_SESSION=<session id>`` in its environment. The command's exit status is the
   wrapper's; a command killed by signal N gives 128+N, as a shell reports it;
4. cleans up when the connection is lost. In ``lifeline`` mode a watcher subshell reads a
   copy of the exec's stdin, which kubexec opens but never writes to. When the client
   disconnects, containerd closes that stdin, the read sees EOF, and the watcher runs the
   teardown. The teardown sends TERM to every process that carries the marker in
   ``/proc/<pid>/environ`` (this also finds processes that called ``setsid`` again), that is
   in the command's session, or that is the command itself. It keeps looking for at least
   1 s (for processes forked late), sends KILL to whatever is left after the grace period,
   and then the wrapper exits 255. When the command ends first, the wrapper kills the watcher
   (stands it down) and exits with the command's status. Anything the command detached on
   purpose, such as ``orted --daemonize``, stays alive. The watcher's stdout and stderr are
   /dev/null: containerd keeps an exec open while anything holds them.

Positional parameters (``sh -c WRAPPER kubexec $1 ... $8``): ``$1`` the command (empty means
a login shell, ``$shell -l``), ``$2`` the session id, ``$3`` the grace in milliseconds,
``$4`` the mode, ``$5`` the target uid (empty means do not switch), ``$6`` its gid (empty means
the passwd entry's gid, else the uid), ``$7`` supplementary gids (comma-separated, empty means
none), ``$8`` the shell.

Modes (:data:`StdinMode`, plus ``guard``):

- ``lifeline``: the exec's stdin is the lifeline and the command's stdin is /dev/null. This is
  the MPI mode: launchers give their agent /dev/null or an unused pipe.
- ``forward``: the exec's stdin is the command's stdin (kubexec forwards local stdin and
  half-closes it on EOF, on v5). The lifeline is a second, tiny exec in the same container:
  the *guard*, from :func:`build_guard_argv`, with the same session id. kubexec starts the
  guard first, reads its ``ready`` line, then starts the forward exec. The forward wrapper
  refuses to run (exit 255) if it cannot find its guard. The guard reads its stdin. A line
  ``done``, which kubexec sends after it has the command's exit status, stands it down. EOF
  without ``done`` runs the same teardown as above, by marker and by the marked session
  leader.
- ``framed``: ``forward`` for API servers that speak only ``v4.channel.k8s.io``, which cannot
  half-close stdin (kubernetes#89899). kubexec sends stdin as frames, ``<length>\\n`` and that
  many bytes, and ``0\\n`` for EOF; the wrapper decodes them (``read`` and ``head -c``, which
  never read ahead) into a pipe to the command, whose stdin then ends where kubexec's did.
- ``tty``: an interactive exec with a terminal. The command replaces the wrapper (no
  ``setsid``), keeping the controlling terminal. On disconnect the kernel sends SIGHUP, as
  with sshd.

Switching user (the job runs as the user). Same uid: nothing to do. The container runs as root
and another uid is asked for: ``setpriv --reuid --regid --clear-groups`` (``--groups`` when
supplementary groups are given), or coreutils ``chroot --userspec --groups --skip-chdir /``
where there is no util-linux setpriv. Both work with numeric ids that have no passwd entry;
busybox's setpriv and chroot cannot switch (exit 255). ``HOME``, ``USER`` and
``LOGNAME`` come from the pod's passwd entry for the uid. Without one, ``HOME=/`` (what the
runtime gives a ``runAsUser`` with no entry) and ``USER=LOGNAME=<uid>``. Root without
CAP_SETUID/CAP_SETGID, or a non-root container asked for another uid, gives one line on
stderr and exit 255. The command runs in the container's working directory, not in HOME.
"""

from __future__ import annotations

import math
import re
import secrets
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

StdinMode = Literal["lifeline", "forward", "framed", "tty"]
"""How the exec's stdin is used: lifeline only, the command's stdin, or a terminal."""

EXIT_WRAPPER_FAILED = 255
"""The wrapper's own failures (user switch impossible, guard missing, lifeline lost)."""

# The wrapper, readable. _compact() drops the comments and indentation before it is sent:
# it travels in the exec URL's query string on every call.
_WRAPPER_SOURCE = r"""
cmd=$1 sid=$2 grace=$3 mode=$4 uid=$5 gid=$6 groups=$7 shell=$8
nl='
'
me=$$
: "${SHELL:=$shell}"
export SHELL
# marked PID: its environment holds our session marker.
marked() {
    _env=$(tr '\0' '\n' 2>/dev/null <"/proc/$1/environ")
    case "$nl$_env$nl" in *"${nl}KUBEXEC_SESSION=$sid$nl"*) return 0 ;; esac
    return 1
}
# scan TERM|KILL: signal our processes (TERM each one once); n = how many are alive.
# Ours: marked, or the wrapper's child (the command), or in a session such a process leads.
scan() {
    _sig=$1 n=0 _all= _lead=
    for _d in /proc/[0-9]*; do
        _p=${_d#/proc/}
        [ "$_p" = "$me" ] || [ "$_p" = "$$" ] && continue
        _st=
        { read -r _st <"$_d/stat"; } 2>/dev/null
        [ -n "$_st" ] || continue
        set -- ${_st##*) }
        case $1 in Z|X|x) continue ;; esac
        _all="$_all $_p:$2:$4"
        if [ "$4" = "$_p" ] && { [ "$2" = "$$" ] || marked "$_p"; }; then
            _lead="$_lead $_p "
        fi
    done
    for _e in $_all; do
        _p=${_e%%:*} _r=${_e#*:}
        _pp=${_r%%:*} _s=${_r#*:}
        case "$_lead" in
        *" $_s "*) ;;
        *) [ "$_pp" = "$$" ] || marked "$_p" || continue ;;
        esac
        n=$((n + 1))
        if [ "$_sig" = KILL ]; then
            kill -s KILL "$_p" 2>/dev/null
        else
            case "$_termed" in *" $_p "*) ;; *)
                kill -s TERM "$_p" 2>/dev/null
                _termed="$_termed $_p " ;;
            esac
        fi
    done
}
# TERM, look again for at least 1 s (late forks) and until none is left or the grace is
# over, then KILL until none is left.
# (Variables are global in sh: each function uses names of its own.)
teardown() {
    _termed= _ms=0
    while :; do
        scan TERM
        [ "$n" -eq 0 ] && [ "$_ms" -ge 1000 ] && return 0
        [ "$_ms" -ge "$grace" ] && break
        if sleep 0.2 2>/dev/null; then _ms=$((_ms + 200)); else sleep 1; _ms=$((_ms + 1000)); fi
    done
    _k=0
    while [ "$_k" -lt 50 ]; do
        scan KILL
        [ "$n" -eq 0 ] && return 0
        sleep 0.1 2>/dev/null || sleep 1
        _k=$((_k + 1))
    done
}
# The guard of a forward exec: a sh whose argv holds "kubexec", "", our id and "guard".
guard_present() {
    for _d in /proc/[0-9]*; do
        [ "${_d#/proc/}" = "$$" ] && continue
        _st=
        { read -r _st <"$_d/stat"; } 2>/dev/null
        case $_st in *" (sh) "*) ;; *) continue ;; esac
        _cl=$(tr '\0' '\n' 2>/dev/null <"$_d/cmdline")
        case "$nl$_cl$nl" in *"${nl}kubexec$nl$nl$sid$nl"*"${nl}guard$nl"*) return 0 ;; esac
    done
    return 1
}
# Frames on stdin (framed mode): "<length>\n" then that many bytes; "0\n" ends the input.
unframe() {
    while IFS= read -r _n; do
        case $_n in '' | *[!0-9]*) return 1 ;; esac
        [ "$_n" -eq 0 ] && return 0
        head -c "$_n" || return 1
    done
}
if [ "$mode" = guard ]; then
    printf 'ready\n'
    exec >/dev/null 2>&1
    while IFS= read -r _l; do
        [ "$_l" = done ] && exit 0
    done
    teardown
    exit 0
fi
cur= cap=
while read -r _k _a _b _r; do
    case $_k in Uid:) cur=$_b ;; CapEff:) cap=$_a ;; esac
done 2>/dev/null </proc/self/status
[ -n "$cur" ] || cur=$(id -u)
if [ -n "$cmd" ]; then set -- "$shell" -c "$cmd"; else set -- "$shell" -l; fi
if [ -n "$uid" ] && [ "$uid" != "$cur" ]; then
    if [ "$cur" != 0 ]; then
        echo "kubexec: cannot run as uid $uid in pod (container runs as uid $cur, not root);" \
            "set securityContext.runAsUser=$uid on the pod" >&2
        exit 255
    fi
    _c=${cap#"${cap%??}"}
    if [ -n "$_c" ] && [ $((0x$_c & 192)) -ne 192 ]; then
        echo "kubexec: cannot run as uid $uid in pod (container runs as root without" \
            "CAP_SETUID/CAP_SETGID); set securityContext.runAsUser=$uid on the pod" >&2
        exit 255
    fi
    pw_name= pw_gid= pw_home=
    while IFS=: read -r _n _x _u _g _x _h _x; do
        [ "$_u" = "$uid" ] && { pw_name=$_n pw_gid=$_g pw_home=$_h; break; }
    done 2>/dev/null </etc/passwd
    [ -n "$gid" ] || gid=${pw_gid:-$uid}
    HOME=${pw_home:-/} USER=${pw_name:-$uid} LOGNAME=${pw_name:-$uid}
    export HOME USER LOGNAME
    # util-linux setpriv, else coreutils chroot (busybox's have neither option).
    case $(setpriv --help 2>&1) in
    *--reuid*)
        if [ -n "$groups" ]; then _go=--groups=$groups; else _go=--clear-groups; fi
        set -- setpriv --reuid="$uid" --regid="$gid" "$_go" -- "$@" ;;
    *) case $(chroot --help 2>&1) in
        *--userspec*)
            set -- chroot --userspec="$uid:$gid" --groups="$groups" --skip-chdir / "$@" ;;
        *)
            echo "kubexec: cannot switch to uid $uid in pod: it needs setpriv (util-linux)" \
                "or coreutils chroot; or set securityContext.runAsUser=$uid on the pod" >&2
            exit 255 ;;
        esac ;;
    esac
fi
if [ "$mode" = tty ]; then
    KUBEXEC_SESSION=$sid
    export KUBEXEC_SESSION
    exec "$@"
fi
# From here on the shell's own stderr is /dev/null (a shell reports "Killed" for a child
# that died by a signal); the command, a subshell that execs, gets the exec's stderr.
_s=
command -v setsid >/dev/null 2>&1 && _s=setsid
if [ "$mode" = forward ] || [ "$mode" = framed ]; then
    if ! guard_present; then
        echo "kubexec: the lifeline exec (guard) of session $sid is not running; not starting" >&2
        exit 255
    fi
    exec 4>&2 2>/dev/null
    if [ "$mode" = framed ]; then
        # The decoder runs in the background, holding neither the exec's stdout nor stderr
        # (a subshell that closes them: a function call with redirections would keep saved
        # copies), so a command that exits before its input ends is not held up. It ends at
        # the EOF frame, on a write to a closed pipe, or when the exec's stdin closes.
        exec 3<&0
        { (exec 3<&- 4>&-; unframe) <&3 & } |
            (export KUBEXEC_SESSION="$sid"; exec $_s "$@" 2>&4 4>&- 3<&-)
        exit
    fi
    (export KUBEXEC_SESSION="$sid"; exec $_s "$@" 2>&4 4>&-)
    exit
fi
fired=
trap 'fired=1' USR1
exec 3<&0
(
    exec >/dev/null 2>&1 0</dev/null
    read -r me _x </proc/self/stat
    while IFS= read -r _l <&3; do :; done
    kill -s USR1 $$
    teardown
) &
wpid=$!
exec 3<&- 4>&2 2>/dev/null
[ -z "$fired" ] && (export KUBEXEC_SESSION="$sid"; exec $_s "$@" </dev/null 2>&4 4>&-)
st=$?
if [ -n "$fired" ]; then
    wait "$wpid"
    exit 255
fi
kill -s KILL "$wpid" 2>/dev/null
wait "$wpid" 2>/dev/null
exit "$st"
"""


def _compact(source: str) -> str:
    """The script without comment lines, blank lines and indentation (no heredocs in it)."""
    lines = (line.strip() for line in source.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("#")) + "\n"


WRAPPER = _compact(_WRAPPER_SOURCE)
"""The remote wrapper script (see the module docstring for its parameters)."""

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}\Z")


def new_session_id() -> str:
    """A fresh random session marker value (32 hex digits)."""
    return secrets.token_hex(16)


def build_remote_argv(
    *,
    command: str | None,
    grace: float,
    uid: int | None,
    gid: int | None,
    groups: Sequence[int],
    session_id: str,
    shell: str = "/bin/sh",
    stdin: StdinMode = "lifeline",
) -> list[str]:
    """The pods/exec ``command`` argv that runs ``command`` through :data:`WRAPPER`.

    ``command`` is the ssh-joined command string; ``None`` (or empty) runs ``shell -l``.
    ``uid=None`` runs as the container's user; ``gid`` and ``groups`` only matter with a uid.
    ``stdin`` picks the mode (module docstring); ``lifeline`` needs the exec opened with
    ``stdin=true`` and nothing ever written to it, ``forward`` needs a running guard exec
    (:func:`build_guard_argv`) with the same ``session_id``.
    """
    if stdin not in ("lifeline", "forward", "framed", "tty"):
        raise ValueError(f"unknown stdin mode {stdin!r}")
    if command is not None and "\0" in command:
        raise ValueError("the command contains a NUL byte")
    if not shell or "\0" in shell:
        raise ValueError(f"bad shell {shell!r}")
    ids = [i for i in (uid, gid, *groups) if i is not None]
    if any(not 0 <= i < 2**32 - 1 for i in ids):
        raise ValueError(f"uid/gid out of range: {ids}")
    return [
        "/bin/sh",
        "-c",
        WRAPPER,
        "kubexec",
        command or "",
        _checked_session_id(session_id),
        str(_grace_ms(grace)),
        stdin,
        "" if uid is None else str(uid),
        "" if uid is None or gid is None else str(gid),
        "" if uid is None else ",".join(str(g) for g in groups),
        shell,
    ]


def build_guard_argv(*, session_id: str, grace: float) -> list[str]:
    """The argv of the lifeline exec that guards a ``forward`` exec of the same session.

    Open it with ``stdin=true``. It prints ``ready`` on stdout once it is watching. Send
    ``done\\n`` on its stdin after the forward exec's status arrives, then close it. EOF without
    ``done`` tears down every process of the session.
    """
    return [
        "/bin/sh",
        "-c",
        WRAPPER,
        "kubexec",
        "",
        _checked_session_id(session_id),
        str(_grace_ms(grace)),
        "guard",
        "",
        "",
        "",
        "/bin/sh",
    ]


def _checked_session_id(session_id: str) -> str:
    if not _SESSION_ID.match(session_id):
        raise ValueError(f"bad session id {session_id!r} (8-64 of [A-Za-z0-9_-])")
    return session_id


def _grace_ms(grace: float) -> int:
    if not math.isfinite(grace) or grace < 0:
        raise ValueError(f"bad grace {grace!r}")
    return round(grace * 1000)
