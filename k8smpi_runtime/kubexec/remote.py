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

**Positional parameters** (``sh -c ENTRY kubexec $1 ... $9``): ``$1`` the session id, ``$2``
the grace in milliseconds, ``$3`` the mode (``lifeline``, ``forward`` or ``attach``), ``$4`` the
target uid (empty: do not switch), ``$5`` its gid (empty: the passwd entry's gid, else the
uid), ``$6`` supplementary gids (comma-separated, empty: none), ``$7`` the shell, ``$8`` the
re-attach window in milliseconds (0: none), ``$9`` (``attach`` only) the offsets to relay
from. After the preamble, the wrapper also has ``cmd`` (the command), ``has_cmd`` (1 when
there is one) and ``_w`` (its own text, to run itself again as the user). :data:`TTY_WRAPPER`
takes ``$1`` the command, then the session id, uid, gid, groups and shell.

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
   which kubexec removes from the stream (:class:`Records`) and compares with the exec's
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
   detached on purpose, such as ``orted --daemonize``, stays alive. A runtime may instead kill
   the wrapper's own process and never end the exec's stdin (containerd does both when its
   stream idle timeout cuts the stream): a *guard* process learns of that death from a FIFO
   that only the wrapper's process holds open for writing, and tears the command (and the
   watcher) down unless the command had ended (``ended``, written by the subshell that runs
   it).

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

**The session** (a re-attach window, ``$8`` milliseconds > 0; kubexec's ``--reattach``, see
:mod:`k8smpi_runtime.kubexec.reattach`). Step 6 would end a job whenever its stream is cut by
something other than kubexec going away (an API server restart, a failover). With a window the
wrapper keeps the command's session in its claim folder ``D`` (mode 0700) instead:

- the command's stdout and stderr go into FIFOs; a pump per stream appends them to segment
  files ``D/<1|2>.<number>.<start offset>`` (:data:`SEGMENT` bytes each) and counts them; a
  relay sends them on to the exec's stdout/stderr. The first record on stderr is the start
  record ``\x1ekubexec-start:<id>:\x1e`` (from then on kubexec may re-attach);
- kubexec acknowledges what it received with a stdin line ``a<out> <err>``; whole acknowledged
  segments are removed. With :data:`BUFFER` bytes of a stream unacknowledged the pump stops
  reading (the command's writes then wait: flow control, or a detached session's cap);
- forwarded stdin frames end with an empty trailer line; a frame counts once its trailer came
  and is queued to the command through a FIFO; the count is the input position;
- the end of the exec's stdin without ``bye``: the stream is lost. A keeper process starts the
  window's timer; the command runs on, its output kept. An exec with mode ``attach`` and ``$9``
  = ``<out>,<err>`` (what kubexec received) takes the session over: it answers with the attach
  record ``\x1ekubexec-attach:<id>:<input position>:<0|1 input ended>\x1e`` (kubexec resends
  stdin from there) and relays from those offsets. An attach never starts a command; a session
  that is not there, or was torn down, is exit 255 with one line;
- the command runs in a subshell of its own that keeps its exit status in ``D/status`` (so the
  status outlives a runtime's kill of the exec's process; that kill, which the guard above
  sees, counts as a lost stream); once both streams are drained the relay
  writes the exit record with the lengths, ``\x1ekubexec-exit:<id>:<status>:<out>:<err>\x1e``,
  and waits for kubexec's ``bye`` (kubexec has all once the lengths are in), then exits with
  the status. A stream lost after the command ended keeps the files for the window;
- ``bye`` on stdin (kubexec leaves on purpose): the keeper tears the session down at once, as
  step 6 does. The window (``$8``, kubexec's plus :data:`WINDOW_MARGIN`) passing with no exec
  attached: the same teardown. The folder is then emptied but for ``gone`` (a late attach is
  refused, a replayed start too).

Without ``/dev/shm`` or ``/tmp`` writable, or without ``mkfifo``, the wrapper says so on stderr
and runs as without a window.

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
WINDOW_MARGIN = 5.0
"""Seconds the pod waits for a re-attach beyond kubexec's window: a try kubexec starts at the
end of its window still finds the session."""
SEGMENT = 256 * 1024
"""The size at which a stream's kept output starts a new segment file (whole segments go once
kubexec acknowledged them)."""
BUFFER = 4 * 1024 * 1024
"""Bytes of a stream kept in the session folder that kubexec has not acknowledged, at most
(plus up to 8 reads of 64 KiB): beyond it the command's writes block until kubexec acknowledges
more (while attached: as ssh's flow control; while detached: until a re-attach)."""

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
sid=$1 grace=$2 mode=$3 uid=$4 gid=$5 groups=$6 shell=$7 window=${8:-0} at=${9:-}
@SWITCH@
if [ -n "$uid" ] && [ "$uid" != "$cur" ]; then
    become /bin/sh -c '_w=$1 cmd=$2 has_cmd=$3; shift 3; eval "$_w"' kubexec \
        "$_w" "$cmd" "$has_cmd" "$sid" "$grace" "$mode" "" "" "" "$shell" "$window" "$at"
fi
# From here on: the target user. me: this exec's id (its files in D); self: the running
# process (scan skips it); par: whose children are ours.
me=$$ self=$$ par=$$ D=
if [ "$mode" = attach ]; then
    for _d in /dev/shm /tmp; do
        [ -d "$_d/.kubexec-$sid" ] && { D=$_d/.kubexec-$sid; break; }
    done
else
    # One start per session id.
    for _d in /dev/shm /tmp; do
        mkdir -m 700 "$_d/.kubexec-$sid" 2>/dev/null && { D=$_d/.kubexec-$sid; break; }
        if [ -d "$_d/.kubexec-$sid" ]; then
            echo "kubexec: session $sid was started before in this container; not running it" \
                "twice" >&2
            exit 255
        fi
    done
fi
: "${SHELL:=$shell}"
export SHELL
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
# Ours: marked, or a child of $par (the command), or in a session such a process leads.
# Each started after the wrapper: older processes are skipped unread (and never signalled).
scan() {
    _sig=$1 n=0 _all= _lead=
    for _d in /proc/[0-9]*; do
        _p=${_d#/proc/}
        [ "$_p" = "$self" ] || [ "$_p" = "$$" ] && continue
        _st=
        { read -r _st <"$_d/stat"; } 2>/dev/null
        [ -n "$_st" ] || continue
        set -- ${_st##*) }
        case $1 in Z|X|x) continue ;; esac
        [ "${20:-0}" -ge "$t0" ] || continue
        _all="$_all $_p:$2:$4"
        if [ "$4" = "$_p" ] && { [ "$2" = "$par" ] || marked "$_p"; }; then
            _lead="$_lead $_p "
        fi
    done
    for _e in $_all; do
        _p=${_e%%:*} _r=${_e#*:}
        _pp=${_r%%:*} _s=${_r#*:}
        case "$_lead" in
        *" $_s "*) ;;
        *) [ "$_pp" = "$par" ] || marked "$_p" || continue ;;
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
# else dd that fills its block (GNU, newer busybox), else dd a byte at a time. Chosen by a
# self-test the first time it is needed.
copy() {
    if [ "$(printf ab | { head -c 1 >/dev/null; cat; } 2>/dev/null)" = b ]; then
        copy() { head -c "$1"; }
    elif [ "$(printf ab | { dd bs=1 count=1 iflag=fullblock >/dev/null; cat; } 2>/dev/null)" = b ]
    then
        copy() { dd bs="$1" count=1 iflag=fullblock 2>/dev/null; }
    else
        copy() { dd bs=1 count="$1" 2>/dev/null; }
    fi
    copy "$1"
}
# The session (re-attach window > 0): the command's output goes through the session folder D,
# its status is kept there, and an exec that attaches later relays it on from where kubexec
# stopped receiving (see the module docstring).
# pad N W: _p is N with leading zeros to W digits. seg S Q START: _g is the file of stream S's
# segment number Q, which starts at byte START of the stream.
pad() {
    _p=$1
    while [ "${#_p}" -lt "$2" ]; do _p=0$_p; done
}
seg() {
    pad "$2" 9
    _g=$D/$1.$_p
    pad "$3" 15
    _g=$_g.$_p
}
# wake S: tell the current exec's relay that stream S has more (when it asked: want<S>).
wake() {
    if [ -s "$D/want$1" ]; then
        : >"$D/want$1"
        _c=
        read -r _c <"$D/cur"
        [ -p "$D/w.$_c" ] && echo "$1" 1<>"$D/w.$_c"
    fi
}
# tell EVENT: to the keeper (never blocks: the FIFO is opened read-write).
tell() {
    [ -p "$D/ctl" ] && echo "$*" 1<>"$D/ctl"
}
# clean: the session's files go; the claim stays (a late replay is refused) and says so,
# first (what checks for "gone" or another file never finds neither).
clean() {
    [ -p "$D/q" ] && echo q 1<>"$D/q"
    : >"$D/gone"
    for _f in "$D"/*; do
        [ "$_f" = "$D/gone" ] || rm -rf "$_f" 2>/dev/null
    done
}
# pump S: stream S of the command (FIFO o<S>) into its segments, a chunk (one read) at a time,
# counting the bytes (from dd's report; else by wc); waking the relay after each. Segments of
# @SEGMENT@ bytes; the acknowledged ones are removed; with @BUFFER@ bytes not acknowledged, it
# stops reading (the command then blocks) until kubexec acknowledges more. At the end: the
# stream's length in n<S>.
pump() {
    _i=$1 _q=0 _s=0 _n=0 _t=0 _a=0 _old=
    exec 3<"$D/o$_i"
    seg "$_i" 0 0
    while :; do
        _r=$(dd bs=65536 count=1 2>&1 <&3 >>"$_g")
        case "$nl$_r" in *"${nl}0+0 records in"*) break ;; esac
        _b=${_r##*"records out$nl"}
        _b=${_b%% *}
        case $_b in '' | *[!0-9]*) set -- $(wc -c <"$_g"); _b=$((${1:-0} - _n)) ;; esac
        _n=$((_n + _b)) _t=$((_t + _b))
        wake "$_i"
        if [ "$_n" -ge @SEGMENT@ ]; then
            _s=$_t _q=$((_q + 1)) _n=0
            _old="$_old $_g:$_s"
            seg "$_i" "$_q" "$_s"
            : >"$_g"
        fi
        [ $((_t - _a)) -lt @BUFFER@ ] && [ -z "$_old" ] && continue
        while :; do
            _a1= _a2=
            read -r _a1 _a2 2>/dev/null <"$D/ack"
            eval "_a=\${_a$_i:-0}"
            case $_a in *[!0-9]*) _a=0 ;; esac
            _k= _keep=
            for _e in $_old; do
                if [ "${_e##*:}" -le "$_a" ]; then _k="$_k ${_e%:*}"; else _keep="$_keep $_e"; fi
            done
            [ -n "$_k" ] && rm -f $_k
            _old=$_keep
            [ $((_t - _a)) -lt @BUFFER@ ] || [ -e "$D/torn" ] && break
            sleep 0.2 2>/dev/null || sleep 1
        done
    done
    echo "$_t" >"$D/n$_i"
    tell "e $_i"
}
# openat S FD OFFSET: FD reads stream S from byte OFFSET (1 if that byte is no longer kept).
openat() {
    _b= _bs=0 _bq=0
    for _f in "$D/$1".*.*; do
        [ -e "$_f" ] || continue
        _r=${_f#"$D/$1".}
        _fq=$((1${_r%%.*} - 1000000000)) _fs=$((1${_r#*.} - 1000000000000000))
        [ "$_fs" -le "$3" ] && _b=$_f _bs=$_fs _bq=$_fq
    done
    [ -n "$_b" ] || return 1
    eval "exec $2<\"\$_b\"; q$1=\$_bq"
    [ "$3" -gt "$_bs" ] || return 0
    copy $(($3 - _bs)) <&"$2" >/dev/null
}
# drain S FD OUT: what stream S has (from FD) to OUT, on through its next segments.
drain() {
    while :; do
        eval "_q=\$q$1"
        pad $((_q + 1)) 9
        _nx=
        for _f in "$D/$1.$_p".*; do [ -e "$_f" ] && _nx=$_f; done
        KUBEXEC_SESSION=$sid dd bs=65536 <&"$2" >&"$3" 2>/dev/null 8>&- &
        echo $! >"$D/r.$me"
        wait $! || return 1
        [ -n "$_nx" ] || return 0
        eval "exec $2<\"\$_nx\"; q$1=\$((_q + 1))"
    done
}
# relay OUT ERR [S...]: both streams from these offsets (first sending what streams S have),
# to fds 1 and 4, until the session is done, then the exit record (with the streams' lengths).
# A stream is sent on when
# its pump wakes this relay, which it does once after each time the relay asked (want<S>):
# so a stream whose want<S> is set has nothing unsent. Returns 0: delivered; 1: this exec's
# stream is gone or another exec took over; 2: the session was torn down; 3: the offsets are
# no longer kept.
relay() {
    exec 7<>"$D/w.$me"
    openat 1 5 "$1" && openat 2 6 "$2" || return 3
    _dr=$3
    while :; do
        for _j in $_dr; do
            echo 1 >"$D/want$_j"
            drain "$_j" $((_j + 4)) $((_j * 3 - 2)) || return 1
        done
        if [ -e "$D/done" ]; then
            for _j in 1 2; do
                [ -s "$D/want$_j" ] || drain "$_j" $((_j + 4)) $((_j * 3 - 2)) || return 1
            done
            break
        fi
        [ -e "$D/torn" ] || [ -e "$D/gone" ] && return 2
        read -r _dr <&7 || return 1
        [ -e "$D/off.$me" ] && return 1
        case $_dr in 1 | 2) ;; *) _dr= ;; esac
    done
    read -r _st <"$D/status"
    read -r _n1 <"$D/n1"
    read -r _n2 <"$D/n2"
    printf '\036kubexec-exit:%s:%s:%s:%s\036' "$sid" "$_st" "$_n1" "$_n2" >&4
}
# byebye: after the exit record, wait for kubexec's goodbye (or the stream's end) before this
# exec ends: kubexec has everything once the record and the lengths it names came, and leaves;
# the goodbye goes out before the exec's end could cut this exec's stdin.
byebye() {
    while read -r _x <&7; do
        case $_x in b | e) return ;; esac
    done
}
# enq N: queue a checked frame of N bytes (in f.<me>; 0: the end of input) for the command,
# and count it, unless another exec took over (it then counts from what was queued before).
enq() {
    echo 1 >"$D/c.$self"
    _c=
    read -r _c <"$D/cur"
    if [ "$_c" = "$me" ] && [ ! -e "$D/status" ]; then
        if [ "$1" = 0 ]; then
            echo 0 1<>"$D/q"
            : >"$D/ineof"
        else
            { echo "$1"; copy "$1" <"$D/f.$me"; echo; } 1<>"$D/q"
            _in=$((_in + $1))
            echo "$_in" >"$D/inpos"
        fi
    fi
    echo 0 >"$D/c.$self"
}
# swatch RELAY: this exec's stdin to its end: keepalives, acknowledgements, bye, and frames.
# A frame counts once whole (its trailer line arrived). The end without bye: the stream is
# lost; the relay stops and the keeper's window starts.
swatch() {
    read -r self _x </proc/self/stat
    echo "$self" >"$D/s.$me"
    _in=0 _bye=
    read -r _in <"$D/inpos"
    while IFS= read -r _f; do
        case $_f in
        '') ;;
        a*) _f=${_f#a}; case $_f in *[!0-9\ ]* | '') ;; *) echo "$_f" >"$D/ack" ;; esac ;;
        bye) _bye=1; break ;;
        0) [ -p "$D/q" ] && enq 0 ;;
        *[!0-9]*) ;;
        *)
            copy "$_f" >"$D/f.$me"
            IFS= read -r _t || break
            [ -p "$D/q" ] && [ -z "$_t" ] && enq "$_f" ;;
        esac
    done
    if [ -n "$_bye" ]; then
        : >"$D/off.$me"
        tell "b $me"
        [ -p "$D/w.$me" ] && echo b 1<>"$D/w.$me"
        [ -e "$D/done" ] && clean
        return
    fi
    lost "$1"
}
# lost RELAY: this exec's stream is gone (its stdin ended without goodbye, or its process was
# killed: see guard): the relay and the watcher stop, the keeper's window starts.
lost() {
    [ -p "$D/w.$me" ] && echo e 1<>"$D/w.$me"
    : >"$D/off.$me"
    _r=
    read -r _r 2>/dev/null <"$D/r.$me"
    [ -n "$_r" ] && marked "$_r" && kill -s KILL "$_r" 2>/dev/null
    [ -n "$1" ] && alive "$1" && kill -s TERM "$1" 2>/dev/null
    _p=
    read -r _p 2>/dev/null <"$D/s.$me"
    [ -n "$_p" ] && [ "$_p" != "$self" ] && alive "$_p" && kill -s TERM "$_p" 2>/dev/null
    tell "d $me"
    # After the end the status may not have reached kubexec: kept for a re-attach.
    if [ -e "$D/done" ]; then
        sleep $(((window + 999) / 1000))
        _c=
        read -r _c <"$D/cur"
        [ "$_c" = "$me" ] && clean
    fi
}
# feed: queued frames (q) to stdout, the command's stdin; "0" closes it. Reads on until the
# session's files go ("q"), so a watcher never blocks on a command that is gone.
feed() {
    exec 8<>"$D/q"
    _o=1
    while IFS= read -r _f <&8; do
        case $_f in
        0) [ "$_o" = 1 ] && { exec >/dev/null; _o=0; } ;;
        q) return ;;
        '' | *[!0-9]*) ;;
        *)
            if [ "$_o" = 1 ]; then
                copy "$_f" <&8 || { exec >/dev/null; _o=0; }
            else
                copy "$_f" <&8 >/dev/null
            fi ;;
        esac
    done
}
# wakecur: wake the relay of the current exec.
wakecur() {
    _c=
    read -r _c <"$D/cur"
    [ -p "$D/w.$_c" ] && echo x 1<>"$D/w.$_c"
}
# tstart / tstop: the re-attach window's timer ("t <generation>" on ctl when it runs out).
tstart() {
    tstop
    _g=$((_g + 1))
    (
        trap 'kill $_z 2>/dev/null; exit 0' TERM
        sleep $(((window + 999) / 1000)) &
        _z=$!
        wait $_z && echo "t $_g" 1<>"$D/ctl"
    ) &
    _t=$!
}
tstop() {
    [ -n "$_t" ] && { kill -s TERM "$_t" 2>/dev/null; wait "$_t"; }
    _t=
}
# keeper: the session's events on ctl (a: an exec attached, d: one lost its stream,
# b: kubexec said goodbye, t: the window ran out, x: the command ended, e: a stream ended).
# Tears the session down on goodbye or when the window runs out while no exec is attached.
keeper() {
    read -r self _x </proc/self/stat
    _att=$me _x= _e=0 _g=0 _t=
    while read -r _v _a <&9; do
        case $_v in
        a) _att=$_a; tstop ;;
        d) [ "$_a" = "$_att" ] && { _att=; tstart; } ;;
        b) [ -e "$D/done" ] || { : >"$D/torn"; wakecur; teardown; clean; }; break ;;
        t) if [ "$_a" = "$_g" ] && [ -z "$_att" ]; then
                _t=
                if [ -e "$D/done" ]; then clean; else : >"$D/torn"; wakecur; teardown; clean; fi
                break
            fi ;;
        x) _x=1 ;;
        e) _e=$((_e + 1)) ;;
        esac
        if [ -n "$_x" ] && [ "$_e" -ge 2 ] && [ ! -e "$D/done" ]; then
            : >"$D/done"
            wakecur
        fi
        [ -e "$D/done" ] && [ -n "$_att" ] && break
    done
    tstop
}
# guard ACTION...: ACTION runs once this exec's own process ($$) is gone, which the end of
# FIFO g.<me> says (only that process holds it open for writing, fd 8: children close it;
# opened before the guard exists, so a kill at any time is seen). A runtime may kill the
# process when it cuts the stream (containerd does, SIGKILL, on its stream idle timeout)
# without ending the exec's stdin, the end the watchers wait for. Without mkfifo: no guard.
guard() {
    mkfifo -m 600 "$D/g.$me" 2>/dev/null || return 0
    exec 8<>"$D/g.$me"
    (
        exec 6<"$D/g.$me" </dev/null >/dev/null 3<&- 4>&- 7<&- 8<&- 9<&-
        rm -f "$D/g.$me"
        read -r self _x </proc/self/stat
        read -r _x <&6
        "$@"
    ) &
}
# gone RELAY: the guard's action in a session: the stream is lost, unless this exec
# was done with already (goodbye, lost, or another exec took over: off.<me>).
gone() {
    [ -e "$D/off.$me" ] || [ -e "$D/gone" ] || lost "$@"
}
# session: the command with its output through D (above); this exec relays it until the
# command ends or the stream is lost.
session() {
    F= _i=/dev/null
    # Held open all along: what is written to a FIFO that no process holds is lost. ctl (9)
    # is opened here, before the keeper exists, and the keeper inherits it: a command that
    # ends at once has its events told before a keeper's own open could have run.
    exec 3<&0 4>&2 2>/dev/null 7<>"$D/w.$me" 9<>"$D/ctl"
    (exec </dev/null 3<&- 4>&- 7<&- >/dev/null; keeper) &
    K=$!
    echo "$K" >"$D/keeper"
    (exec </dev/null 3<&- 4>&- 7<&- 9<&- >/dev/null; pump 1) &
    P1=$!
    (exec </dev/null 3<&- 4>&- 7<&- 9<&- >/dev/null; pump 2) &
    P2=$!
    if [ "$mode" = forward ]; then
        (exec </dev/null 3<&- 4>&- 7<&- 9<&- >"$D/p"; feed) &
        F=$! _i=$D/p
    fi
    (exec </dev/null 3<&- 9<&-; relay 0 0 "") &
    A=$!
    (exec <&3 >/dev/null 3<&- 4>&- 7<&- 9<&-; swatch "$A") &
    exec 3<&-
    guard gone "$A"
    # The command, and keeping its status, in a subshell of their own: the runtime may kill
    # this exec's process when its stream is cut (containerd does, SIGKILL, on its stream
    # idle timeout), and the status must outlive it. In the foreground, both: an
    # asynchronous list would ignore SIGINT and SIGQUIT.
    (
        # The start record: the session and its command exist (kubexec re-attaches only then).
        printf '\036kubexec-start:%s:\036' "$sid" >&4
        exec >/dev/null 4>&- 7<&- 8>&- 9<&-
        (export KUBEXEC_SESSION="$sid"; exec $_s "$@" <"$_i" >"$D/o1" 2>"$D/o2")
        st=$?
        echo "$st" >"$D/status"
        tell x
        exit "$st"
    )
    st=$?
    wait "$A"
    _r=$?
    wait "$K" "$P1" "$P2"
    if [ "$_r" = 0 ]; then
        byebye
        exit "$st"
    fi
    [ -e "$D/torn" ] && clean
    exit 255
}
# attach: this exec takes the session over from the one before (whose stream is gone) and
# relays from the offsets kubexec received (at: OUT,ERR).
attach() {
    _k=0
    while [ -n "$D" ] && [ ! -e "$D/cur" ] && [ ! -e "$D/gone" ] && [ "$_k" -lt 20 ]; do
        sleep 0.1 2>/dev/null || sleep 1
        _k=$((_k + 1))
    done
    _why=
    if [ -z "$D" ] || [ -e "$D/gone" ] || [ ! -e "$D/cur" ]; then
        _why="is not in this container (it ended, its re-attach window passed, or the"
        _why="$_why container restarted)"
    elif [ -e "$D/torn" ]; then
        _why="was torn down"
    elif [ ! -e "$D/done" ] && { _k=; read -r _k <"$D/keeper"; ! alive "$_k"; }; then
        _why="lost its keeper process"
    elif ! mkfifo -m 600 "$D/w.$me" 2>/dev/null; then
        _why="cannot be attached to (mkfifo failed)"
    fi
    if [ -n "$_why" ]; then
        echo "kubexec: session $sid $_why; its exit status is unknown" >&2
        exit 255
    fi
    # Before this exec takes the session over (a kill from then on is seen).
    guard gone ""
    _o=
    read -r _o <"$D/cur"
    echo "$me" >"$D/cur"
    : >"$D/off.$_o"
    _r=
    read -r _r 2>/dev/null <"$D/r.$_o"
    [ -n "$_r" ] && marked "$_r" && kill -s KILL "$_r" 2>/dev/null
    [ -p "$D/w.$_o" ] && echo x 1<>"$D/w.$_o"
    tell "a $me"
    # A frame an earlier watcher is queueing counts before the input position is read.
    for _f in "$D"/c.*; do
        [ -e "$_f" ] || continue
        while alive "${_f##*.}" && { read -r _v <"$_f"; [ "$_v" = 1 ]; }; do
            sleep 0.05 2>/dev/null || sleep 1
        done
    done
    _in=0 _e=0
    read -r _in <"$D/inpos"
    [ -e "$D/ineof" ] && _e=1
    exec 3<&0 4>&2 2>/dev/null
    (exec <&3 >/dev/null 3<&- 4>&- 8<&-; swatch "$me") &
    exec 3<&-
    printf '\036kubexec-attach:%s:%s:%s\036' "$sid" "$_in" "$_e" >&4
    relay "${at%,*}" "${at#*,}" "1 2"
    case $? in
    0) byebye; exit "$_st" ;;
    2) echo "kubexec: session $sid was torn down (its re-attach window passed)" >&4 ;;
    3) echo "kubexec: session $sid no longer keeps the output from offsets $at" >&4 ;;
    esac
    exit 255
}
if [ -n "$has_cmd" ]; then set -- "$shell" -c "$cmd"; else set -- "$shell" -l; fi
_s=
command -v setsid >/dev/null 2>&1 && _s=setsid
[ "$mode" = attach ] && attach
if [ "$window" -gt 0 ]; then
    if [ -n "$D" ] && mkfifo -m 600 "$D/ctl" "$D/o1" "$D/o2" "$D/w.$me" 2>/dev/null &&
        { [ "$mode" != forward ] || mkfifo -m 600 "$D/q" "$D/p" 2>/dev/null; }; then
        seg 1 0 0
        : >"$_g"
        seg 2 0 0
        : >"$_g"
        echo "$me" >"$D/cur"
        echo 0 >"$D/inpos"
        echo 1 >"$D/want1"
        echo 1 >"$D/want2"
        session "$@"
    fi
    echo "kubexec: no re-attach in this pod (no writable /dev/shm or /tmp, or no mkfifo):" \
        "a lost stream ends the command" >&2
fi
# watch 1|0: read the exec's stdin to its end; with 1, feed the command's input (frames) to
# stdout. Empty lines are keepalives (and frames' trailers). The end while the wrapper runs:
# the connection is lost.
watch() {
    read -r self _x </proc/self/stat
    [ -n "$D" ] && echo "$self" >"$D/watch"
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
# orphaned: the guard's action without a session (this exec's process is gone). The command
# still running (no "ended"): the stream was cut, so as for a lost lifeline, the command and
# the watcher (whose stdin may never end) go.
orphaned() {
    if [ ! -e "$D/ended" ]; then
        _p=
        read -r _p 2>/dev/null <"$D/watch"
        [ -n "$_p" ] && alive "$_p" && kill -s TERM "$_p" 2>/dev/null
        teardown
    fi
    rm -f "$D/ended" "$D/watch"
}
fired=
trap 'fired=1' USR1
# From here on the shell's own stderr is /dev/null (a shell reports "Killed" for a child
# that died by a signal); the command, a subshell that execs, gets the exec's stderr (fd 4).
exec 3<&0 4>&2 2>/dev/null
# The watcher is a subshell that moves its fds with exec: a function call with redirections
# would keep saved copies of the exec's stdout, and the exec would never end.
if [ "$mode" = forward ]; then
    # In the background of the pipeline's left side, so the pipeline ends with the command.
    [ -n "$D" ] && guard orphaned
    # The command in a subshell that says when it ended (the guard's "ended", above).
    { (exec <&3 3<&- 4>&- 8>&-; watch 1) & } | (
        exec 3<&- 8>&-
        (export KUBEXEC_SESSION="$sid"; exec $_s "$@" 2>&4 4>&-)
        _x=$?
        [ -n "$D" ] && : >"$D/ended"
        exit "$_x"
    )
    st=$?
else
    (exec <&3 >/dev/null 3<&- 4>&-; watch 0) &
    exec 3<&-
    [ -n "$D" ] && guard orphaned
    [ -z "$fired" ] && (
        exec 8>&-
        (export KUBEXEC_SESSION="$sid"; exec $_s "$@" </dev/null 2>&4 4>&-)
        _x=$?
        [ -n "$D" ] && : >"$D/ended"
        exit "$_x"
    )
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
    return (
        source.replace("@SWITCH@", _SWITCH_SOURCE)
        .replace("@SYSTEM_PATH@", SYSTEM_PATH)
        .replace("@SEGMENT@", str(SEGMENT))
        .replace("@BUFFER@", str(BUFFER))
    )


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
    window: float = 0.0,
) -> Launch:
    """The exec that runs ``command`` through the wrapper (see the module docstring).

    ``command`` is the ssh-joined command string; ``None`` (or empty) runs ``shell -l``.
    ``uid=None`` runs as the container's user; ``gid`` and ``groups`` only matter with a uid.
    ``window``: seconds the remote session waits for a re-attach after its stream is lost (0:
    none, the command is torn down at once). Non-tty modes need the exec opened with
    ``stdin=true``, :attr:`Launch.preamble` written first, then (``forward``) the command's
    input as :func:`frame` and :data:`END_OF_INPUT`, and :data:`KEEPALIVE` at will.
    """
    if mode not in ("lifeline", "forward", "tty"):
        raise ValueError(f"unknown stdin mode {mode!r}")
    if command is not None and "\0" in command:
        raise ValueError("the command contains a NUL byte")
    sid, user = _checked(session_id, shell, uid, gid, groups)
    if mode == "tty":
        return Launch(["/bin/sh", "-c", TTY_WRAPPER, "kubexec", command or "", sid, *user, shell])
    argv = ["/bin/sh", "-c", ENTRY, "kubexec", sid, str(_ms(grace)), mode, *user, shell]
    return Launch([*argv, str(_remote_window_ms(window)), ""], preamble(command))


def attach(
    *,
    session_id: str,
    offsets: tuple[int, int],
    grace: float,
    window: float,
    uid: int | None,
    gid: int | None,
    groups: Sequence[int],
    shell: str = "/bin/sh",
) -> Launch:
    """The exec that re-attaches to session ``session_id``, whose stdout and stderr kubexec
    received up to ``offsets``. It never starts a command: a session that is not there (or
    was torn down) is an exit 255 with one line on stderr, without an attach record."""
    out, err = offsets
    if out < 0 or err < 0:
        raise ValueError(f"bad offsets {offsets!r}")
    sid, user = _checked(session_id, shell, uid, gid, groups)
    argv = ["/bin/sh", "-c", ENTRY, "kubexec", sid, str(_ms(grace)), "attach", *user, shell]
    return Launch([*argv, str(_remote_window_ms(window)), f"{out},{err}"], preamble(None))


def preamble(command: str | None) -> bytes:
    """The first bytes on a non-tty exec's stdin: the wrapper, then the command."""
    script = WRAPPER.encode()
    cmd_lines = command.encode().split(b"\n") if command else []
    body = script + b"".join(line + b"\n" for line in cmd_lines)
    head = b"%s %d %d\n" % (PREAMBLE_MAGIC, script.count(b"\n"), len(cmd_lines))
    return head + body


def frame(data: bytes) -> bytes:
    """One piece of the command's input in ``forward`` mode: its length, the bytes, and an
    empty trailer line (whose arrival proves the frame whole; older readers see a keepalive)."""
    return b"%d\n%s\n" % (len(data), data) if data else b""


def ack(out: int, err: int) -> bytes:
    """What kubexec writes on stdin to say it has ``out`` and ``err`` bytes of the command's
    stdout and stderr: the session may drop what lies before."""
    return b"a%d %d\n" % (out, err)


BYE = b"bye\n"
"""What kubexec writes on stdin when it goes away on purpose: the session ends now."""


class Attached(Record):
    """What an attach record says: the input the session has, and whether its end came."""

    input_position: int
    input_ended: bool


class Records:
    """Takes the wrapper's records out of its stderr, frame by frame: the exit record
    (``\\x1ekubexec-exit:<sid>:<status>[:<stdout length>:<stderr length>]\\x1e``, :attr:`code`
    and :attr:`lengths`), the start record (``\\x1ekubexec-start:<sid>:\\x1e``, :attr:`started`)
    and the attach record (``\\x1ekubexec-attach:<sid>:<input position>:<0|1>\\x1e``,
    :attr:`attached`).

    :meth:`feed` returns what to write now: everything but the records and, at a frame's end,
    bytes that may be the start of a record cut across frames (held until the next frame or
    :meth:`flush`; :meth:`drop` forgets them when the stream broke: the session sends them
    again). The markers hold the random session id: a command cannot forge them by accident.
    """

    MAX_BODY = 64

    def __init__(self, session_id: str) -> None:
        sid = session_id.encode()
        self.markers = {
            b"\x1ekubexec-exit:%s:" % sid: self._exit,
            b"\x1ekubexec-start:%s:" % sid: self._start,
            b"\x1ekubexec-attach:%s:" % sid: self._attach,
        }
        self.code: int | None = None
        self.lengths: tuple[int, int] | None = None
        self.started = False
        self.attached: Attached | None = None
        self._held = b""

    def _exit(self, body: bytes) -> bool:
        fields = body.split(b":")
        if len(fields) not in (1, 3) or not all(f.isdigit() for f in fields):
            return False
        self.code = int(fields[0])
        if len(fields) == 3:
            self.lengths = (int(fields[1]), int(fields[2]))
        return True

    def _start(self, body: bytes) -> bool:
        if body:
            return False
        self.started = True
        return True

    def _attach(self, body: bytes) -> bool:
        position, _, ended = body.partition(b":")
        if not position.isdigit() or ended not in (b"0", b"1"):
            return False
        self.attached = Attached(int(position), ended == b"1")
        return True

    def feed(self, data: bytes) -> bytes:
        buf = self._held + data
        self._held = b""
        out: list[bytes] = []
        while True:
            found = [(i, m) for m in self.markers if (i := buf.find(m)) >= 0]
            if not found:
                break
            start, marker = min(found)
            body = start + len(marker)
            end = buf.find(b"\x1e", body, body + self.MAX_BODY + 1)
            if end < 0 and len(buf) - body <= self.MAX_BODY:
                out.append(buf[:start])  # cut across frames: wait for the rest
                self._held = buf[start:]
                return b"".join(out)
            if end < 0 or not self.markers[marker](buf[body:end]):
                out.append(buf[:body])  # not a record after all: plain bytes
                buf = buf[body:]
                continue
            out.append(buf[:start])
            buf = buf[end + 1 :]
        keep = self._partial(buf)
        out.append(buf[: len(buf) - keep])
        self._held = buf[len(buf) - keep :]
        return b"".join(out)

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return held

    def drop(self) -> None:
        self._held = b""

    def _partial(self, buf: bytes) -> int:
        """How many bytes at the end of ``buf`` begin a marker."""
        longest = max(len(m) for m in self.markers)
        if b"\x1e" not in buf[-(longest - 1) :]:
            return 0
        for k in range(min(longest - 1, len(buf)), 0, -1):
            if any(m.startswith(buf[-k:]) for m in self.markers):
                return k
        return 0


def _checked(
    session_id: str, shell: str, uid: int | None, gid: int | None, groups: Sequence[int]
) -> tuple[str, list[str]]:
    """The checked session id, and the user parameters ($4 $5 $6) of the wrapper."""
    if not shell or "\0" in shell:
        raise ValueError(f"bad shell {shell!r}")
    ids = [i for i in (uid, gid, *groups) if i is not None]
    if any(not 0 <= i < 2**32 - 1 for i in ids):
        raise ValueError(f"uid/gid out of range: {ids}")
    user = [
        "" if uid is None else str(uid),
        "" if uid is None or gid is None else str(gid),
        "" if uid is None else ",".join(str(g) for g in groups),
    ]
    return _checked_session_id(session_id), user


def _checked_session_id(session_id: str) -> str:
    if not _SESSION_ID.match(session_id):
        raise ValueError(f"bad session id {session_id!r} (8-64 of [A-Za-z0-9_-])")
    return session_id


def _remote_window_ms(window: float) -> int:
    """What the pod waits for a re-attach: kubexec's window and :data:`WINDOW_MARGIN` (0: 0)."""
    return _ms(window + WINDOW_MARGIN) if _ms(window) > 0 else 0


def _ms(seconds: float) -> int:
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"bad duration {seconds!r}")
    return round(seconds * 1000)
