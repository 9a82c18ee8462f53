"""The remote wrapper, run for real with the local /bin/sh; a pipe stands in for the exec stdin.

Closing the pipe is what the pod sees when kubexec dies or the connection drops (the runtime
closes the exec's stdin). The user-switch tests need root, as the wrapper does in a pod.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from k8smpi_runtime.kubexec import remote
from tests.unit.wrapperkit import (
    Stdin,
    marked_pids,
    spawn,
    wait_for,
    wrapper_pids,
)

pytestmark = pytest.mark.usefixtures("no_claims_left")


GRACE = 0.3
MARGIN = 5.0
"""Seconds on top of the grace for a teardown to show: the mechanism, not its speed, is under
test (a loaded 2-core machine took over 2 s)."""
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="switching user needs root")
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")


class Wrapper(Stdin):
    """One exec: stdin is the lifeline pipe (the preamble is written at once), stdout and
    stderr are drained."""

    def __init__(
        self,
        launch: remote.Launch,
        *,
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> None:
        self.proc = spawn(launch, env=env, prefix=prefix)
        self.session_id = launch.argv[4] if launch.preamble else launch.argv[5]
        self.record: int | None = None
        self._out: list[bytes] = []
        self._err: list[bytes] = []
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=_drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=_drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for reader in self._readers:
            reader.start()
        if launch.preamble:
            self.write(launch.preamble)

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    @property
    def stdout(self) -> bytes:
        return b"".join(self._out)

    def streams_closed(self, timeout: float) -> bool:
        for reader in self._readers:
            reader.join(timeout)
        return not any(reader.is_alive() for reader in self._readers)

    def finish(self, timeout: float = 5.0) -> tuple[int, bytes, bytes]:
        """Wait for the exit with the lifeline still open; then close it. stderr comes back
        without the exit record, which must match the exit status when there is one."""
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdin and not self.proc.stdin.closed:
                self.close_stdin()
        assert self.streams_closed(timeout)
        record = remote.Records(self.session_id)
        err = record.feed(b"".join(self._err)) + record.flush()
        self.record = record.code
        if record.code is not None:
            assert record.code == rc
        return rc, b"".join(self._out), err


def _drain(stream: Any, sink: list[bytes]) -> None:
    sink.append(stream.read())


def launch(command: str | None, session_id: str, **kwargs: Any) -> remote.Launch:
    options: dict[str, Any] = {"grace": GRACE, "uid": None, "gid": None, "groups": ()}
    options.update(kwargs)
    return remote.build(command=command, session_id=session_id, **options)


def run(command: str | None, session_id: str, **kwargs: Any) -> tuple[int, bytes, bytes]:
    env = kwargs.pop("env", None)
    prefix = kwargs.pop("prefix", ())
    return Wrapper(launch(command, session_id, **kwargs), env=env, prefix=prefix).finish()


# --- what travels in the request --------------------------------------------------------------


def orted_command(size: int) -> str:
    """An Open MPI 4.1 orted line of about ``size`` bytes: many quoted -mca parameters."""
    words = ["orted", "-mca", "ess", '"env"', "-mca", "ess_base_jobid", '"546111488"']
    i = 0
    while len(" ".join(words)) < size:
        words += ["-mca", f"btl_tcp_param_{i}", f'"value;{i}:tcp://10.0.{i % 250}.7:5{i % 9}441"']
        i += 1
    return " ".join(words)


def test_the_request_is_small_whatever_the_command(session_id: str) -> None:
    command = orted_command(32 * 1024)
    built = launch(command, session_id, uid=1000, gid=100, groups=[5, 7])
    assert built.argv[:4] == ["/bin/sh", "-c", remote.ENTRY, "kubexec"]
    assert built.argv[4:] == [
        session_id, "300", "lifeline", "1000", "100", "5,7", "/bin/sh", "0", ""
    ]  # fmt: skip
    query = urllib.parse.urlencode([("command", c) for c in built.argv])
    assert len(query) < 2048  # proxies commonly cap the request line at 8 KiB
    assert command.encode() in built.preamble  # the command travels on stdin
    tty = remote.build(
        command=None, grace=0, uid=None, gid=7, groups=[1], session_id=session_id, mode="tty"
    )
    assert tty.argv == [
        "/bin/sh", "-c", remote.TTY_WRAPPER, "kubexec", "", session_id, "", "", "", "/bin/sh"
    ]  # fmt: skip
    assert tty.preamble == b""


def test_a_32_kib_orted_command_runs_whole(session_id: str) -> None:
    command = orted_command(32 * 1024)
    echo = f"cat <<'EOF'\n{command}\nEOF"
    rc, out, err = run(echo, session_id)
    assert (rc, err) == (0, b"")
    assert out == command.encode() + b"\n"


def test_scripts_are_compact_posix_sh() -> None:
    for script in (remote.ENTRY, remote.WRAPPER, remote.TTY_WRAPPER):
        assert not any(line.startswith((" ", "#")) for line in script.splitlines())
        subprocess.run(["/bin/sh", "-n", "-c", script], check=True, timeout=5)
    assert len(remote.ENTRY) < 1024
    assert len(remote.TTY_WRAPPER) < 2500


@pytest.mark.parametrize(
    "kwargs",
    [
        {"session_id": "short"},
        {"session_id": "has space in it"},
        {"grace": -1.0},
        {"grace": float("nan")},
        {"command": "a\0b"},
        {"uid": -1},
        {"groups": [2**32]},
        {"shell": ""},
        {"mode": "guard"},
    ],
)
def test_build_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    options: dict[str, Any] = {
        "command": "true", "grace": 1.0, "uid": 1, "gid": 1, "groups": (),
        "session_id": "0123456789abcdef",
    }  # fmt: skip
    options.update(kwargs)
    with pytest.raises(ValueError):
        remote.build(**options)


def test_session_ids_are_random() -> None:
    ids = {remote.new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 for i in ids)


def test_a_preamble_cut_short_runs_nothing(session_id: str) -> None:
    built = launch("echo ran", session_id)
    wrapper = Wrapper(remote.Launch(built.argv))
    wrapper.write(built.preamble[: len(built.preamble) // 2])
    wrapper.close_stdin()
    rc, out, _ = wrapper.finish()
    assert (rc, out) == (255, b"")


# --- exit status and streams --------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_code_passes_through(session_id: str, code: int) -> None:
    assert run(f"exit {code}", session_id) == (code, b"", b"")


def test_killed_by_signal_gives_128_plus_n(session_id: str) -> None:
    # No "Killed" from the wrapper's shell either: stderr is the command's alone.
    assert run("kill -9 $$", session_id) == (137, b"", b"")
    assert run("kill -TERM $$", remote.new_session_id()) == (143, b"", b"")


def test_streams_are_unchanged_and_separate(session_id: str, tmp_path: Path) -> None:
    out_bytes, err_bytes = bytes(range(256)) * 300, os.urandom(50_000)
    (tmp_path / "out").write_bytes(out_bytes)
    (tmp_path / "err").write_bytes(err_bytes)
    command = f"cat {tmp_path}/out; cat {tmp_path}/err >&2; exit 3"
    assert run(command, session_id) == (3, out_bytes, err_bytes)


def test_command_string_goes_to_the_shell(session_id: str) -> None:
    command = "printf '%s|' \"a b\" 'c;d' '\\n' ' x '\necho \"$0\"\n\n echo 'last' \\\n"
    rc, out, _ = run(command, session_id)
    assert (rc, out) == (0, b"a b|c;d|\\n| x |/bin/sh\nlast\n")


def test_no_command_runs_a_login_shell(session_id: str) -> None:
    assert run(None, session_id)[0] == 0  # stdin is /dev/null: the shell ends at once


def test_environment(session_id: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHELL"}
    rc, out, _ = run('echo "$SHELL $KUBEXEC_SESSION"', session_id, env=env)
    assert (rc, out) == (0, f"/bin/sh {session_id}\n".encode())
    env["SHELL"] = "/bin/zsh"
    assert run("echo $SHELL", remote.new_session_id(), env=env)[1] == b"/bin/zsh\n"


def test_command_leads_its_own_session_with_default_signals(session_id: str) -> None:
    # The command's shell reads its own stat and status (builtins: no child in between).
    command = (
        "read -r s </proc/self/stat; echo $s; "
        "while read -r k v; do [ $k = SigIgn: ] && echo $v; done </proc/self/status; true"
    )
    rc, out, _ = run(command, session_id)
    stat, sigign = out.decode().splitlines()
    fields = stat.rsplit(")", 1)[1].split()
    pid, session = int(stat.split()[0]), int(fields[3])
    assert rc == 0
    assert session == pid  # setsid: the command is a session leader
    assert int(sigign, 16) & 0b110 == 0  # SIGINT/SIGQUIT not ignored (no async list)


@pytest.mark.parametrize("mode", ["lifeline", "forward"])
def test_the_exit_record_follows_the_command(session_id: str, mode: str) -> None:
    wrapper = Wrapper(launch("echo to-stderr >&2; exit 7", session_id, mode=mode))
    if mode == "forward":
        wrapper.end_input()
    assert wrapper.finish() == (7, b"", b"to-stderr\n")
    assert wrapper.record == 7
    # The wrapper's own refusals come before any command, without a record.
    again = Wrapper(launch("true", session_id, mode=mode))
    assert again.finish()[0] == 255
    assert again.record is None


def test_stdout_ends_when_the_command_ends(session_id: str) -> None:
    # The watcher holds neither stdout nor stderr: EOF comes with the command's end even
    # though the lifeline stays open (containerd would keep the exec open otherwise).
    wrapper = Wrapper(launch("echo done", session_id))
    assert wrapper.streams_closed(2.0)
    assert wrapper.proc.stdin is not None
    assert not wrapper.proc.stdin.closed
    assert wrapper.finish() == (0, b"done\n", b"")


# --- point 2: one start per session id -------------------------------------------------------


def test_a_second_start_of_the_same_session_refuses(session_id: str, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    assert run(f"echo run >> {log}", session_id) == (0, b"", b"")
    rc, out, err = run(f"echo run >> {log}", session_id)  # a replayed request
    assert (rc, out) == (255, b"")
    assert (
        err
        == (
            f"kubexec: session {session_id} was started before in this container; not running it"
            " twice\n"
        ).encode()
    )
    assert log.read_text() == "run\n"
    rc, _, _ = run(f"echo run >> {log}", session_id, mode="forward")
    assert rc == 255
    assert log.read_text() == "run\n"


# --- the lifeline ---------------------------------------------------------------------------


def test_lifeline_eof_kills_command_and_setsid_grandchild(session_id: str) -> None:
    wrapper = Wrapper(launch("setsid sleep 1000 & exec sleep 1000", session_id))
    assert wait_for(lambda: len(marked_pids(session_id)) == 2, 2.0)
    started = time.monotonic()
    wrapper.close_stdin()  # kubexec killed -9, or the connection dropped
    assert wait_for(lambda: not marked_pids(session_id), GRACE + MARGIN)
    assert wrapper.proc.wait(GRACE + MARGIN) == 255
    assert time.monotonic() - started < GRACE + MARGIN


def test_lifeline_eof_kills_after_grace_what_ignores_term(session_id: str) -> None:
    loop = "while :; do sleep 1000; done"
    command = f"trap '' TERM; setsid sh -c 'trap \"\" TERM; {loop}' & {loop}"
    wrapper = Wrapper(launch(command, session_id))
    assert wait_for(lambda: len(marked_pids(session_id)) == 4, 2.0)
    wrapper.close_stdin()
    assert wait_for(lambda: not marked_pids(session_id), GRACE + MARGIN)
    assert wrapper.proc.wait(GRACE + MARGIN) == 255


@pytest.mark.parametrize("mode", ["lifeline", "forward"])
def test_a_wrapper_its_runtime_killed_still_tears_down(session_id: str, mode: str) -> None:
    # containerd SIGKILLs an exec's own process when its stream idle timeout cuts the stream,
    # and never ends the exec's stdin: the command, which ran on, goes all the same, and so
    # does the watcher that waits for that end.
    wrapper = Wrapper(launch("setsid sleep 1000 & exec sleep 1000", session_id, mode=mode))
    assert wait_for(lambda: len(marked_pids(session_id)) == 2, 2.0)
    wrapper.proc.kill()
    assert wait_for(lambda: not marked_pids(session_id), GRACE + MARGIN)
    assert wait_for(lambda: not wrapper_pids(session_id), MARGIN)
    wrapper.close_stdin()


def test_normal_end_stands_the_watcher_down(session_id: str) -> None:
    # A daemon detached on purpose (orted --daemonize) outlives the exec and the lifeline.
    command = "setsid sleep 1000 </dev/null >/dev/null 2>&1 &"
    wrapper = Wrapper(launch(command, session_id))
    assert wrapper.finish() == (0, b"", b"")  # closes the lifeline after the exit
    [daemon] = marked_pids(session_id)
    assert wait_for(lambda: not wrapper_pids(session_id), 2.0)  # the watcher left by itself
    time.sleep(0.5)
    assert marked_pids(session_id) == [daemon]


@pytest.mark.parametrize("mode", ["lifeline", "forward"])
def test_keepalive_lines_are_ignored(session_id: str, mode: str) -> None:
    # kubexec writes an empty line every keepalive interval, between frames in forward mode.
    wrapper = Wrapper(launch("sleep 0.5; cat", session_id, mode=mode))
    for _ in range(20):
        wrapper.write(remote.KEEPALIVE)
    if mode == "forward":
        wrapper.send(b"data\n")
        wrapper.write(remote.KEEPALIVE * 3)
        wrapper.end_input()
        wrapper.write(remote.KEEPALIVE * 3)
    expected = b"data\n" if mode == "forward" else b""
    assert wrapper.finish() == (0, expected, b"")


# --- forward mode: the command's input arrives framed on the same exec ----------------------------


def test_forward_stdin_reaches_the_command(session_id: str) -> None:
    data = os.urandom(300_000) + b"\n0\n12\n"  # payload that looks like frames stays payload
    wrapper = Wrapper(launch("cat; echo end >&2", session_id, mode="forward"))

    def write() -> None:
        wrapper.send(data)
        wrapper.end_input()

    writer = threading.Thread(target=write)
    writer.start()
    assert wrapper.finish() == (0, data, b"end\n")
    writer.join()


def test_forward_without_command_reads_a_script(session_id: str) -> None:
    wrapper = Wrapper(launch(None, session_id, mode="forward"))
    wrapper.send(b"echo from-stdin\nexit 3\n")
    wrapper.end_input()
    assert wrapper.finish()[:2] == (3, b"from-stdin\n")


def test_forward_connection_loss_kills_the_command(session_id: str) -> None:
    # One exec, its own lifeline: no guard exec that could race it or be lost on its own.
    wrapper = Wrapper(launch("setsid sleep 1000 & sleep 1000", session_id, mode="forward"))
    assert wait_for(lambda: len(marked_pids(session_id)) == 3, 2.0)
    wrapper.send(b"some input")
    wrapper.close_stdin()  # no end frame: the connection was lost
    assert wait_for(lambda: not marked_pids(session_id), GRACE + MARGIN)
    assert wrapper.proc.wait(GRACE + MARGIN) == 255


def test_forward_input_end_is_not_connection_loss(session_id: str) -> None:
    # The end of the command's input is a frame; the lifeline stays, the command runs on.
    wrapper = Wrapper(
        launch("cat >/dev/null; sleep 0.5; echo still-here", session_id, mode="forward")
    )
    wrapper.send(b"abc")
    wrapper.end_input()
    assert wrapper.finish() == (0, b"still-here\n", b"")


def test_forward_command_that_stops_reading_is_not_held_up(session_id: str) -> None:
    wrapper = Wrapper(launch("head -c 3; exit 4", session_id, mode="forward"))
    wrapper.write(b"10\n0123456789")  # no end frame, stdin left open
    assert wrapper.finish() == (4, b"012", b"")


def test_framing_survives_a_head_that_reads_ahead(session_id: str, tmp_path: Path) -> None:
    # busybox's head -c reads its input in blocks: a decoder built on it loses the next frames.
    fake = tmp_path / "head"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        "n = int(sys.argv[sys.argv.index('-c') + 1])\n"
        "data = b''\n"
        "while len(data) < n:\n"
        "    chunk = os.read(0, 65536)\n"
        "    if not chunk: break\n"
        "    data += chunk\n"
        "os.write(1, data[:n])\n"
    )
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}")
    check = subprocess.run(
        ["sh", "-c", "printf ab | { head -c 1 >/dev/null; cat; }"],
        env=env, capture_output=True, check=True,
    )  # fmt: skip
    assert check.stdout == b""  # the fake reads ahead, as busybox's does
    wrapper = Wrapper(launch("cat", session_id, mode="forward"), env=env)
    pieces = [b"first\n", b"second\n", os.urandom(5000), b"last\n"]
    for piece in pieces:
        wrapper.send(piece)
    wrapper.end_input()
    assert wrapper.finish() == (0, b"".join(pieces), b"")


def test_tty_mode_replaces_the_wrapper(session_id: str) -> None:
    wrapper = Wrapper(launch("echo $$ $KUBEXEC_SESSION", session_id, mode="tty"))
    pid = wrapper.proc.pid
    assert wrapper.finish() == (0, f"{pid} {session_id}\n".encode(), b"")


# --- running as the user ------------------------------------------------------------------

IDS = 'id -u; id -g; id -G; echo "$HOME $USER $LOGNAME"'


def hiding(*tools: str) -> tuple[str, ...]:
    """A prefix that runs the wrapper in a mount namespace where ``tools`` do not exist."""
    binds = " && ".join(
        f"mount --bind /dev/null {path}"
        for tool in tools
        for path in {shutil.which(tool, path=d) for d in remote.SYSTEM_PATH.split(":")}
        if path
    )
    return ("unshare", "-m", "sh", "-c", f'{binds} && exec "$@"', "hide")


@needs_root
@needs_setpriv
@pytest.mark.parametrize("mode", ["lifeline", "forward", "tty"])
def test_root_switches_to_a_passwd_user(session_id: str, mode: str) -> None:
    wrapper = Wrapper(launch(IDS, session_id, uid=65534, gid=None, groups=(), mode=mode))
    if mode == "forward":
        wrapper.end_input()
    rc, out, err = wrapper.finish()
    assert (rc, err) == (0, b"")
    assert out.decode().splitlines() == ["65534", "65534", "65534", "/nonexistent nobody nobody"]


@needs_root
@needs_setpriv
def test_root_switches_to_a_numeric_uid_without_passwd_entry(session_id: str) -> None:
    assert "4242" not in Path("/etc/passwd").read_text()
    rc, out, _ = run(IDS, session_id, uid=4242, gid=100, groups=[5, 7])
    assert rc == 0
    assert out.decode().splitlines() == ["4242", "100", "100 5 7", "/ 4242 4242"]
    rc, out, _ = run(IDS, remote.new_session_id(), uid=4242, gid=None, groups=())
    assert out.decode().splitlines()[:3] == ["4242", "4242", "4242"]


@needs_root
@needs_setpriv
def test_the_switch_drops_privileges_for_good(session_id: str) -> None:
    status = "while read -r k v; do case $k in Cap*|NoNewPrivs:) echo $k $v;; esac; done <"
    rc, out, _ = run(f"{status}/proc/self/status", session_id, uid=4242, gid=4242, groups=())
    assert rc == 0
    assert sorted(out.decode().splitlines()) == [
        "CapAmb: 0000000000000000",
        "CapBnd: 0000000000000000",
        "CapEff: 0000000000000000",
        "CapInh: 0000000000000000",
        "CapPrm: 0000000000000000",
        "NoNewPrivs: 1",
    ]


@needs_root
@needs_setpriv
@pytest.mark.parametrize("mode", ["lifeline", "forward"])
def test_no_wrapper_process_stays_root(session_id: str, mode: str) -> None:
    wrapper = Wrapper(
        launch("exec sleep 1000", session_id, uid=4242, gid=4242, groups=(), mode=mode)
    )
    assert wait_for(lambda: len(marked_pids(session_id)) == 1, 2.0)
    assert wait_for(lambda: len(wrapper_pids(session_id)) >= 2, 2.0)  # wrapper and watcher
    assert set(wrapper_pids(session_id).values()) == {4242}
    wrapper.close_stdin()
    assert wrapper.proc.wait(GRACE + MARGIN) == 255
    assert wait_for(lambda: not marked_pids(session_id), 2.0)


@needs_root
@needs_setpriv
@pytest.mark.parametrize("mode", ["lifeline", "forward", "tty"])
def test_a_user_writable_path_entry_gives_no_root(session_id: str, mode: str) -> None:
    # Every tool the wrapper might call, planted first on the container's PATH (in a folder
    # the user can reach and write: the attack).
    base = Path(tempfile.mkdtemp(dir="/tmp"))
    base.chmod(0o755)
    evil = base / "bin"
    evil.mkdir(mode=0o777)
    evil.chmod(0o777)
    log = base / "ran-as"
    log.touch()
    log.chmod(0o666)
    for tool in ("setpriv", "chroot", "tr", "sleep", "setsid", "id", "head", "dd", "cat", "mkdir"):
        real = shutil.which(tool)
        assert real is not None
        script = evil / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $(/usr/bin/id -u)" >>{log}\nexec {real} "$@"\n')
        script.chmod(0o755)
    env = dict(os.environ, PATH=f"{evil}:/usr/bin:/bin")
    wrapper = Wrapper(
        launch("id -u", session_id, uid=4242, gid=4242, groups=(), mode=mode), env=env
    )
    if mode == "forward":
        wrapper.end_input()
    assert wrapper.finish()[:2] == (0, b"4242\n")
    ran = log.read_text().splitlines()
    shutil.rmtree(base)
    assert "id 4242" in ran  # the command itself gets the container's PATH back
    assert not [line for line in ran if line.endswith(" 0")], ran


@needs_root
def test_root_switches_with_coreutils_chroot_without_setpriv(session_id: str) -> None:
    rc, out, _ = run(IDS, session_id, uid=4242, gid=100, groups=[5], prefix=hiding("setpriv"))
    assert rc == 0
    assert out.decode().splitlines() == ["4242", "100", "100 5", "/ 4242 4242"]


@needs_root
def test_root_without_a_switch_tool_says_so(session_id: str) -> None:
    rc, out, err = run(
        "true", session_id, uid=4242, gid=None, groups=(), prefix=hiding("setpriv", "chroot")
    )
    assert (rc, out) == (255, b"")
    assert err == (
        b"kubexec: cannot switch to uid 4242 in pod: it needs setpriv (util-linux) or coreutils"
        b" chroot; or set securityContext.runAsUser=4242 on the pod\n"
    )


@needs_root
def test_same_uid_needs_no_switch(session_id: str) -> None:
    assert run("id -u", session_id, uid=0, gid=0, groups=())[:2] == (0, b"0\n")


@needs_root
@needs_setpriv
def test_non_root_container_cannot_switch(session_id: str) -> None:
    as_nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    rc, out, err = run("echo should-not-run", session_id, uid=1000, gid=1000, prefix=as_nobody)
    assert (rc, out) == (255, b"")
    assert err == (
        b"kubexec: cannot run as uid 1000 in pod (container runs as uid 65534, not root);"
        b" set securityContext.runAsUser=1000 on the pod\n"
    )
    # The container's own uid needs no switch.
    other = remote.new_session_id()
    assert run("id -u", other, uid=65534, gid=65534, prefix=as_nobody) == (0, b"65534\n", b"")


@needs_root
@needs_setpriv
def test_root_without_setuid_capability_cannot_switch(session_id: str) -> None:
    no_caps = ("setpriv", "--bounding-set=-setuid,-setgid")
    rc, out, err = run("true", session_id, uid=1000, gid=1000, prefix=no_caps)
    assert (rc, out) == (255, b"")
    assert b"without CAP_SETUID/CAP_SETGID); set securityContext.runAsUser=1000" in err


@needs_root
def test_claims_need_no_writable_tmp(session_id: str) -> None:
    # Nowhere to claim (a read-only root filesystem without /dev/shm): it still runs.
    read_only = "mount -t tmpfs -o ro tmpfs /dev/shm && mount -t tmpfs -o ro tmpfs /tmp"
    hide = ("unshare", "-m", "sh", "-c", f'{read_only} && exec "$@"', "ro")
    assert run("echo ok", session_id, prefix=hide) == (0, b"ok\n", b"")
