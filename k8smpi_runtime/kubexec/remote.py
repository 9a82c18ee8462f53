"""What kubexec runs in the pod: a POSIX-sh wrapper around the user's command.

pods/exec runs an argv with no shell, has no user option, and keeps the process running when
the client goes away (kubernetes#89031). The wrapper, :data:`WRAPPER`, needs nothing in the
image but ``/bin/sh``, ``tr``, ``sleep`` and ``head`` or ``dd`` (plus ``setsid``, and
``setpriv`` or coreutils ``chroot`` when it switches user).

**How it travels** (:func:`build`). The exec request carries only a small fixed entry script,
:data:`ENTRY`, and short parameters: the request line stays well under the 8 KiB that proxies
in front of API servers commonly allow, whatever the command, and the command never appears in
the API server's audit log. Everything else comes first on the exec's stdin, the *preamble*
(:func:`preamble`)::

    kubexec-wrapper-1 <S> <C>\\n    S lines of WRAPPER, then C lines of the command

which ``ENTRY`` reads with the shell's ``read`` (it never reads past a line, so what follows
stays for the command) and then evaluates. ``C`` is 0 for a login shell. The tty mode is the
exception: a terminal echoes and edits what it is sent, so there :data:`TTY_WRAPPER` (small:
no lifeline) and the command travel in the argv, as before.

**Positional parameters** (``sh -c ENTRY kubexec $1 ... $7``): ``$1`` the session id, ``$2``
the grace in milliseconds, ``$3`` the mode (``lifeline`` or ``forward``), ``$4`` the target uid
(empty: do not switch), ``$5`` its gid (empty: the passwd entry's gid, else the uid), ``$6``
supplementary gids (comma-separated, empty: none), ``$7`` the shell. After the preamble, the
wrapper also has ``cmd`` (the command), ``has_cmd`` (1 when there is one) and ``_w`` (its own
text, to run itself again as the user). :data:`TTY_WRAPPER` takes ``$1`` the command, then the
session id, uid, gid, groups and shell.

**What it does**, as the target user from step 2 on:

1. switches to the target uid/gid when it differs from the container's uid (below);
2. refuses a second start of the same session id in this container: it claims the session with
   ``mkdir /dev/shm/.kubexec-<id>`` (``/tmp`` when /dev/shm is not writable; with neither
   writable it runs unchecked). A request replayed by a proxy or a retry exits 255 and runs
   nothing. The claims stay (empty folders, gone with the pod) so a late replay is refused too;
3. exports ``SHELL`` (the command's shell) if unset, as sshd does, and runs the command as
   ``setsid $shell -c "$cmd"`` in a session of its own, with ``KUBEXEC_SESSION=<session id>``
   in its environment. The command's exit status is the wrapper's; a command killed by signal
   N gives 128+N, as a shell reports it;
4. a watcher subshell reads the exec's stdin to its end, holding neither the exec's stdout nor
   its stderr (containerd keeps an exec open while anything holds them). kubexec writes an
   empty line there every keepalive interval (traffic that keeps the runtime's stream idle
   timer from firing, which the watcher ignores). In ``forward`` mode the command's input
   travels there too, framed: a line ``N`` (N > 0) and N bytes, and ``0`` for the end of the
   input. The watcher copies them into a pipe to the command with ``head -c N``, or ``dd``
   where ``head`` reads ahead (busybox: found by a self-test), so no byte is lost or taken
   from the next frame. In ``lifeline`` mode the command's stdin is /dev/null (what MPI
   launchers give their agent);
5. ends with an *exit record* on the exec's stderr, ``\x1ekubexec-exit:<session id>:<status>\x1e``,
   which kubexec removes from the stream (:class:`ExitRecord`) and compares with the exec's
   status. The API server reports an exec whose runtime closed the stream (an idle timeout)
   as ``Success`` (client-go reads an empty error stream as success, kubernetes#73056): without
   the record, such a "success" is a cut stream, exit 255, not 0;
6. cleans up when the connection is lost: the end of the exec's stdin while the wrapper still
   runs means kubexec went away (exit, signal, ``kill -9``, the connection dropped: the runtime
   closes the exec's stdin). The teardown sends TERM to every process that carries the marker
   in ``/proc/<pid>/environ`` (this also finds processes that called ``setsid`` again), that is
   in the command's session, or that is the command itself. It keeps looking for at least 1 s
   (for processes forked late), sends KILL to whatever is left after the grace period, and
   the wrapper exits 255. When the command ends first, the wrapper exits with its status and
   the watcher, finding the wrapper gone when stdin ends, does nothing. Anything the command
   detached on purpose, such as ``orted --daemonize``, stays alive.

One exec per call in every mode: the command's stdin end is a frame, not the exec stdin's end,
so that end always means "kubexec is gone" and needs no second, guarding exec.

**Switching user** (the job runs as the user). Same uid: nothing to do. The container runs as
root and another uid is asked for: the root part is only this switch; it uses the fixed system
PATH ``/usr/sbin:/usr/bin:/sbin:/bin`` (a user-writable directory on the container's PATH gives
no one root) and runs the whole wrapper again as the user, with the container's PATH restored:
the watcher, the claim, the teardown and the command never run as root. The switch is
util-linux ``setpriv --reuid --regid --groups|--clear-groups --nnp --inh-caps=-all`` and
``--bounding-set=-all`` when the container holds CAP_SETPCAP: no new privileges (setuid binaries
and file capabilities give nothing back), no inheritable, ambient or bounding capabilities.
Without util-linux setpriv it is coreutils ``chroot --userspec --groups --skip-chdir /``,
which switches ids but cannot set no-new-privileges or drop the bounding set (a setuid-root
program in the image then still works for the user, as under plain ``su``). Both work with
numeric ids that have no passwd entry; busybox's setpriv and chroot cannot switch (exit 255).
``HOME``, ``USER`` and ``LOGNAME`` come from the pod's passwd entry for the uid; without one,
``HOME=/`` (what the runtime gives a ``runAsUser`` with no entry) and ``USER=LOGNAME=<uid>``.
Root without CAP_SETUID/CAP_SETGID, or a non-root container asked for another uid, gives one
line on stderr and exit 255. The command runs in the container's working directory, not HOME.

**tty mode**: an interactive exec with a terminal. The command replaces the wrapper (no
``setsid``), keeping the controlling terminal; on disconnect the kernel sends SIGHUP, as with
sshd. kubexec keeps it alive with resize messages of the same size, which change nothing.
"""

from __future__ import annotations

import math
import os
import re

from k8smpi_runtime.records import Record

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Literal

    StdinMode = Literal["lifeline", "forward", "tty"]
    """How the exec's stdin is used: lifeline only, framed input for the command, or a
    terminal."""

EXIT_WRAPPER_FAILED = 255
"""The wrapper's own failures (user switch impossible, replayed session, lifeline lost)."""

PREAMBLE_MAGIC = b"kubexec-wrapper-1"
KEEPALIVE = b"\n"
"""What kubexec writes on the exec's stdin to keep the stream busy; the wrapper ignores it."""
END_OF_INPUT = b"0\n"
"""The frame that ends the command's stdin in ``forward`` mode."""
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"

# The scripts, readable. _compact() drops the comments and indentation before they are sent.

_ENTRY_SOURCE = r"""
read -r _m _n _c || { echo "kubexec: the wrapper's preamble did not arrive" >&2; exit 255; }
case $_m:$_n:$_c in kubexec-wrapper-1:[0-9]*:[0-9]*) ;; *)
    echo "kubexec: bad preamble on the exec's stdin" >&2; exit 255 ;; esac
_w= cmd= has_cmd=
while [ "$_n" -gt 0 ]; do
    IFS= read -r _l || exit 255
    _w="$_w$_l
"
    _n=$((_n - 1))
done
[ "$_c" -gt 0 ] && has_cmd=1
_i=0
while [ "$_i" -lt "$_c" ]; do
    IFS= read -r _l || exit 255
    if [ "$_i" -eq 0 ]; then cmd=$_l; else cmd="$cmd
$_l"; fi
    _i=$((_i + 1))
done
eval "$_w"
"""

# The root part: who we are now, and become(): run "$@" as $uid (never returns). Shared by
# WRAPPER and TTY_WRAPPER; it runs no program found on the container's PATH.
_SWITCH_SOURCE = r"""
nl='
'
cur= cap=
while read -r _k _a _b _r; do
    case $_k in Uid:) cur=$_b ;; CapEff:) cap=$_a ;; esac
done 2>/dev/null </proc/self/status
[ -n "$cur" ] || cur=$(PATH=@SYSTEM_PATH@; id -u)
become() {
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
    _up=${PATH-}
    PATH=@SYSTEM_PATH@
    # util-linux setpriv, else coreutils chroot (busybox's have neither option).
    _t=$(command -v setpriv)
    case $([ -n "$_t" ] && "$_t" --help 2>&1) in
    *--reuid*)
        if [ -n "$groups" ]; then _go=--groups=$groups; else _go=--clear-groups; fi
        _b=${cap#"${cap%???}"} _bs=
        [ -n "$_b" ] && [ $((0x$_b & 256)) -ne 0 ] && _bs=--bounding-set=-all
        set -- "$_t" --reuid="$uid" --regid="$gid" "$_go" --nnp --inh-caps=-all $_bs -- "$@" ;;
    *)
        _t=$(command -v chroot)
        case $([ -n "$_t" ] && "$_t" --help 2>&1) in
        *--userspec*)
            set -- "$_t" --userspec="$uid:$gid" --groups="$groups" --skip-chdir / "$@" ;;
        *)
            echo "kubexec: cannot switch to uid $uid in pod: it needs setpriv (util-linux)" \
                "or coreutils chroot; or set securityContext.runAsUser=$uid on the pod" >&2
            exit 255 ;;
        esac ;;
    esac
    [ -n "$_up" ] && PATH=$_up
    exec "$@"
}
"""

_WRAPPER_SOURCE = r"""
sid=$1 grace=$2 mode=$3 uid=$4 gid=$5 groups=$6 shell=$7
@SWITCH@
if [ -n "$uid" ] && [ "$uid" != "$cur" ]; then
    become /bin/sh -c '_w=$1 cmd=$2 has_cmd=$3; shift 3; eval "$_w"' kubexec \
        "$_w" "$cmd" "$has_cmd" "$sid" "$grace" "$mode" "" "" "" "$shell"
fi
# From here on: the target user. One start per session id.
for _d in /dev/shm /tmp; do
    mkdir "$_d/.kubexec-$sid" 2>/dev/null && break
    if [ -d "$_d/.kubexec-$sid" ]; then
        echo "kubexec: session $sid was started before in this container; not running it" \
            "twice" >&2
        exit 255
    fi
done
: "${SHELL:=$shell}"
export SHELL
me=$$
# marked PID: its environment holds our session marker. Where this shell's read drops NUL
# bytes (dash, bash) without a fork per process (teardowns scan busy hosts), else with tr.
if [ "$(printf 'a\000b\n' | { IFS= read -r _x; printf %s "$_x"; })" = ab ]; then
    marked() {
        while IFS= read -r _l || [ -n "$_l" ]; do
            case $_l in *"KUBEXEC_SESSION=$sid"*) return 0 ;; esac
        done 2>/dev/null <"/proc/$1/environ"
        return 1
    }
else
    marked() {
        _env=$(tr '\0' '\n' 2>/dev/null <"/proc/$1/environ")
        case "$nl$_env$nl" in *"${nl}KUBEXEC_SESSION=$sid$nl"*) return 0 ;; esac
        return 1
    }
fi
# alive PID: it exists and is not a zombie.
alive() {
    _st=
    { read -r _st <"/proc/$1/stat"; } 2>/dev/null
    _st=${_st##*) }
    case $_st in '' | Z* | X* | x*) return 1 ;; esac
    return 0
}
# started PID: sets t0 to the process's start time (clock ticks since boot).
started() {
    _st=
    { read -r _st <"/proc/$1/stat"; } 2>/dev/null
    set -- ${_st##*) }
    t0=${20:-0}
}
started $$
# scan TERM|KILL: signal our processes (TERM each one once); n = how many are alive.
# Ours: marked, or the wrapper's child (the command), or in a session such a process leads.
# Each started after the wrapper: older processes are skipped unread (and never signalled).
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
        [ "${20:-0}" -ge "$t0" ] || continue
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
# copy N: exactly N bytes from stdin to stdout. head -c where it never reads ahead (GNU),
# else dd that fills its block (GNU, newer busybox), else dd a byte at a time.
if [ "$mode" = forward ]; then
    if [ "$(printf ab | { head -c 1 >/dev/null; cat; } 2>/dev/null)" = b ]; then
        copy() { head -c "$1"; }
    elif [ "$(printf ab | { dd bs=1 count=1 iflag=fullblock >/dev/null; cat; } 2>/dev/null)" = b ]
    then
        copy() { dd bs="$1" count=1 iflag=fullblock 2>/dev/null; }
    else
        copy() { dd bs=1 count="$1" 2>/dev/null; }
    fi
fi
# watch 1|0: read the exec's stdin to its end; with 1, feed the command's input (frames) to
# stdout. Empty lines are keepalives. The end while the wrapper runs: the connection is lost.
watch() {
    read -r me _x </proc/self/stat
    _open=$1
    while IFS= read -r _f; do
        case $_f in
        '') ;;
        0 | *[!0-9]*) [ "$_open" = 1 ] && { exec >/dev/null; _open=0; } ;;
        *)
            if [ "$_open" = 1 ]; then
                copy "$_f" || { exec >/dev/null; _open=0; }
            else
                copy "$_f" >/dev/null
            fi ;;
        esac
    done
    exec >/dev/null
    # Unless this shell is exiting right now: its exit closes the exec's stdout and stderr,
    # and the runtime (containerd) then closes the exec's stdin, sometimes before the kernel
    # shows this shell as a zombie. A teardown then would kill what the command detached on
    # purpose (orted --daemonize). Wait that out (up to 0.3 s) before deciding.
    _w=0
    while alive $$ && [ "$_w" -lt 15 ]; do
        sleep 0.02 2>/dev/null || break
        _w=$((_w + 1))
    done
    if alive $$; then
        kill -s USR1 $$
        teardown
    fi
}
if [ -n "$has_cmd" ]; then set -- "$shell" -c "$cmd"; else set -- "$shell" -l; fi
_s=
command -v setsid >/dev/null 2>&1 && _s=setsid
fired=
trap 'fired=1' USR1
# From here on the shell's own stderr is /dev/null (a shell reports "Killed" for a child
# that died by a signal); the command, a subshell that execs, gets the exec's stderr (fd 4).
exec 3<&0 4>&2 2>/dev/null
# The watcher is a subshell that moves its fds with exec: a function call with redirections
# would keep saved copies of the exec's stdout, and the exec would never end.
if [ "$mode" = forward ]; then
    # In the background of the pipeline's left side, so the pipeline ends with the command.
    { (exec <&3 3<&- 4>&-; watch 1) & } |
        (export KUBEXEC_SESSION="$sid"; exec $_s "$@" 2>&4 3<&- 4>&-)
    st=$?
else
    (exec <&3 >/dev/null 3<&- 4>&-; watch 0) &
    exec 3<&-
    [ -z "$fired" ] && (export KUBEXEC_SESSION="$sid"; exec $_s "$@" </dev/null 2>&4 4>&-)
    st=$?
fi
[ -n "$fired" ] && exit 255
# The exit record: kubexec takes it out of stderr. Only it proves that the status that follows
# comes from here: an API server reports a stream its runtime cut as Success.
printf '\036kubexec-exit:%s:%s\036' "$sid" "$st" >&4
exit "$st"
"""

_TTY_SOURCE = r"""
cmd=$1 sid=$2 uid=$3 gid=$4 groups=$5 shell=$6
@SWITCH@
: "${SHELL:=$shell}"
KUBEXEC_SESSION=$sid
export SHELL KUBEXEC_SESSION
if [ -n "$cmd" ]; then set -- "$shell" -c "$cmd"; else set -- "$shell" -l; fi
[ -n "$uid" ] && [ "$uid" != "$cur" ] && become "$@"
exec "$@"
"""


def _compact(source: str) -> str:
    """The script without comment lines, blank lines and indentation.

    Lines are stripped, so no line of a script may start a quoted continuation with spaces
    that matter (none does: the only multi-line strings hold a bare newline).
    """
    lines = (line.strip() for line in source.splitlines())
    return "\n".join(line for line in lines if line and not line.startswith("#")) + "\n"


def _expand(source: str) -> str:
    return source.replace("@SWITCH@", _SWITCH_SOURCE).replace("@SYSTEM_PATH@", SYSTEM_PATH)


ENTRY = _compact(_ENTRY_SOURCE)
"""The entry script in the exec request: reads the preamble, then runs :data:`WRAPPER`."""
WRAPPER = _compact(_expand(_WRAPPER_SOURCE))
"""The wrapper for ``lifeline`` and ``forward`` (sent on stdin, see the module docstring)."""
TTY_WRAPPER = _compact(_expand(_TTY_SOURCE))
"""The wrapper for ``tty`` (sent in the argv: no lifeline, so it is small)."""

_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}\Z")


class Launch(Record):
    """What one exec needs: its argv, and what to write first on its stdin."""

    argv: list[str]
    preamble: bytes = b""


def new_session_id() -> str:
    """A fresh random session marker value (32 hex digits)."""
    return os.urandom(16).hex()  # as secrets.token_hex, without importing secrets (4 ms)


def build(
    *,
    command: str | None,
    grace: float,
    uid: int | None,
    gid: int | None,
    groups: Sequence[int],
    session_id: str,
    shell: str = "/bin/sh",
    mode: StdinMode = "lifeline",
) -> Launch:
    """The exec that runs ``command`` through the wrapper (see the module docstring).

    ``command`` is the ssh-joined command string; ``None`` (or empty) runs ``shell -l``.
    ``uid=None`` runs as the container's user; ``gid`` and ``groups`` only matter with a uid.
    Non-tty modes need the exec opened with ``stdin=true``, :attr:`Launch.preamble` written
    first, then (``forward``) the command's input as :func:`frame` and :data:`END_OF_INPUT`,
    and :data:`KEEPALIVE` at will.
    """
    if mode not in ("lifeline", "forward", "tty"):
        raise ValueError(f"unknown stdin mode {mode!r}")
    if command is not None and "\0" in command:
        raise ValueError("the command contains a NUL byte")
    if not shell or "\0" in shell:
        raise ValueError(f"bad shell {shell!r}")
    ids = [i for i in (uid, gid, *groups) if i is not None]
    if any(not 0 <= i < 2**32 - 1 for i in ids):
        raise ValueError(f"uid/gid out of range: {ids}")
    sid = _checked_session_id(session_id)
    user = [
        "" if uid is None else str(uid),
        "" if uid is None or gid is None else str(gid),
        "" if uid is None else ",".join(str(g) for g in groups),
    ]
    if mode == "tty":
        return Launch(["/bin/sh", "-c", TTY_WRAPPER, "kubexec", command or "", sid, *user, shell])
    argv = ["/bin/sh", "-c", ENTRY, "kubexec", sid, str(_grace_ms(grace)), mode, *user, shell]
    return Launch(argv, preamble(command))


def preamble(command: str | None) -> bytes:
    """The first bytes on a non-tty exec's stdin: the wrapper, then the command."""
    script = WRAPPER.encode()
    cmd_lines = command.encode().split(b"\n") if command else []
    body = script + b"".join(line + b"\n" for line in cmd_lines)
    head = b"%s %d %d\n" % (PREAMBLE_MAGIC, script.count(b"\n"), len(cmd_lines))
    return head + body


def frame(data: bytes) -> bytes:
    """One piece of the command's input in ``forward`` mode."""
    return b"%d\n%s" % (len(data), data) if data else b""


class ExitRecord:
    """Takes the wrapper's exit record out of its stderr, frame by frame.

    :meth:`feed` returns what to write now: everything but the record and, at a frame's end,
    bytes that may be the start of a record cut across frames (held until the next frame or
    :meth:`flush`). The marker holds the random session id: a command cannot forge it by
    accident.
    """

    MAX_CODE = 8

    def __init__(self, session_id: str) -> None:
        self.marker = b"\x1ekubexec-exit:%s:" % session_id.encode()
        self.code: int | None = None
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._held + data
        self._held = b""
        out: list[bytes] = []
        while (start := buf.find(self.marker)) >= 0:
            body = start + len(self.marker)
            end = buf.find(b"\x1e", body, body + self.MAX_CODE + 1)
            if end < 0 and len(buf) - body <= self.MAX_CODE:
                out.append(buf[:start])  # cut across frames: wait for the rest
                self._held = buf[start:]
                return b"".join(out)
            code = buf[body:end] if end >= 0 else b""
            if end < 0 or not code.isdigit():
                out.append(buf[:body])  # not a record after all: plain bytes
                buf = buf[body:]
                continue
            self.code = int(code)
            out.append(buf[:start])
            buf = buf[end + 1 :]
        keep = self._partial(buf)
        out.append(buf[: len(buf) - keep])
        self._held = buf[len(buf) - keep :]
        return b"".join(out)

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def _partial(self, buf: bytes) -> int:
        """How many bytes at the end of ``buf`` begin the marker."""
        tail = buf[-(len(self.marker) - 1) :]
        if b"\x1e" not in tail:
            return 0
        for k in range(min(len(self.marker) - 1, len(buf)), 0, -1):
            if self.marker.startswith(buf[-k:]):
                return k
        return 0


def _checked_session_id(session_id: str) -> str:
    if not _SESSION_ID.match(session_id):
        raise ValueError(f"bad session id {session_id!r} (8-64 of [A-Za-z0-9_-])")
    return session_id


def _grace_ms(grace: float) -> int:
    if not math.isfinite(grace) or grace < 0:
        raise ValueError(f"bad grace {grace!r}")
    return round(grace * 1000)
