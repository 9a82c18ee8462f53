"""The remote wrapper, run for real with the local /bin/sh; a pipe stands in for the exec stdin.

Closing the pipe is what the pod sees when kubexec dies or the connection drops (containerd
closes the exec's stdin). The user-switch tests need root, as the wrapper does in a pod.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from k8smpi_runtime.kubexec import remote

if TYPE_CHECKING:
    from collections.abc import Iterator

GRACE = 0.3
ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="switching user needs root")
needs_setpriv = pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv")


def marked_pids(session_id: str) -> list[int]:
    """Live (non-zombie) processes whose environment carries the session marker."""
    needle = f"KUBEXEC_SESSION={session_id}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in environ.split(b"\0") and state not in ("Z", "X"):
            found.append(int(entry.name))
    return found


def wait_for(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture
def session_id() -> Iterator[str]:
    sid = remote.new_session_id()
    yield sid
    for pid in marked_pids(sid):  # never leave a test's processes behind
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


class Wrapper:
    """One wrapper process: stdin is the lifeline pipe, stdout and stderr are drained."""

    def __init__(self, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
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

    def write(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def feed(self, data: bytes) -> None:
        """Write all of ``data``, then EOF."""
        self.write(data)
        self.close_stdin()

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
        """Wait for the exit with the lifeline still open; then close it."""
        try:
            rc = self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            if self.proc.stdin and not self.proc.stdin.closed:
                self.close_stdin()
        assert self.streams_closed(timeout)
        return rc, b"".join(self._out), b"".join(self._err)


def _drain(stream: Any, sink: list[bytes]) -> None:
    sink.append(stream.read())


def argv_for(command: str | None, session_id: str, **kwargs: Any) -> list[str]:
    options: dict[str, Any] = {"grace": GRACE, "uid": None, "gid": None, "groups": ()}
    options.update(kwargs)
    return remote.build_remote_argv(command=command, session_id=session_id, **options)


def run(command: str | None, session_id: str, **kwargs: Any) -> tuple[int, bytes, bytes]:
    env = kwargs.pop("env", None)
    return Wrapper(argv_for(command, session_id, **kwargs), env=env).finish()


# --- argv and script ----------------------------------------------------------------------


def test_argv_shape(session_id: str) -> None:
    argv = remote.build_remote_argv(
        command="echo 'a;b'", grace=2.5, uid=1000, gid=100, groups=[5, 7], session_id=session_id
    )
    assert argv[:4] == ["/bin/sh", "-c", remote.WRAPPER, "kubexec"]
    assert argv[4:] == [
        "echo 'a;b'",
        session_id,
        "2500",
        "lifeline",
        "1000",
        "100",
        "5,7",
        "/bin/sh",
    ]
    no_user = remote.build_remote_argv(
        command=None, grace=0, uid=None, gid=7, groups=[1], session_id=session_id, stdin="tty"
    )
    assert no_user[4:] == ["", session_id, "0", "tty", "", "", "", "/bin/sh"]
    guard = remote.build_guard_argv(session_id=session_id, grace=1)
    assert guard[:4] == argv[:4]
    assert guard[4:8] == ["", session_id, "1000", "guard"]


def test_wrapper_is_compact_posix_sh() -> None:
    assert "#" not in remote.WRAPPER.split("\n", 1)[0]
    assert not any(line.startswith((" ", "#")) for line in remote.WRAPPER.splitlines())
    assert len(remote.WRAPPER) < 5000  # it travels in every exec URL
    subprocess.run(["/bin/sh", "-n", "-c", remote.WRAPPER], check=True, timeout=5)


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
        {"stdin": "guard"},
    ],
)
def test_argv_rejects_bad_values(kwargs: dict[str, Any]) -> None:
    options: dict[str, Any] = {
        "command": "true", "grace": 1.0, "uid": 1, "gid": 1, "groups": (),
        "session_id": "0123456789abcdef",
    }  # fmt: skip
    options.update(kwargs)
    with pytest.raises(ValueError):
        remote.build_remote_argv(**options)


def test_session_ids_are_random() -> None:
    ids = {remote.new_session_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 for i in ids)


# --- exit status and streams --------------------------------------------------------------


@pytest.mark.parametrize("code", [0, 1, 42])
def test_exit_code_passes_through(session_id: str, code: int) -> None:
    assert run(f"exit {code}", session_id) == (code, b"", b"")


def test_killed_by_signal_gives_128_plus_n(session_id: str) -> None:
    # No "Killed" from the wrapper's shell either: stderr is the command's alone.
    assert run("kill -9 $$", session_id) == (137, b"", b"")
    assert run("kill -TERM $$", session_id) == (143, b"", b"")


def test_streams_are_unchanged_and_separate(session_id: str, tmp_path: Path) -> None:
    out_bytes, err_bytes = bytes(range(256)) * 300, os.urandom(50_000)
    (tmp_path / "out").write_bytes(out_bytes)
    (tmp_path / "err").write_bytes(err_bytes)
    command = f"cat {tmp_path}/out; cat {tmp_path}/err >&2; exit 3"
    assert run(command, session_id) == (3, out_bytes, err_bytes)


def test_command_string_goes_to_the_shell(session_id: str) -> None:
    rc, out, _ = run("""printf '%s|' "a b" 'c;d'; echo; echo "$0" """, session_id)
    assert (rc, out) == (0, b"a b|c;d|\n/bin/sh\n")


def test_no_command_runs_a_login_shell(session_id: str) -> None:
    assert run(None, session_id)[0] == 0  # stdin is /dev/null: the shell ends at once


def test_environment(session_id: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SHELL"}
    rc, out, _ = run('echo "$SHELL $KUBEXEC_SESSION"', session_id, env=env)
    assert (rc, out) == (0, f"/bin/sh {session_id}\n".encode())
    env["SHELL"] = "/bin/zsh"
    assert run("echo $SHELL", session_id, env=env)[1] == b"/bin/zsh\n"


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


def test_stdout_ends_when_the_command_ends(session_id: str) -> None:
    # The watcher holds neither stdout nor stderr: EOF comes with the command's end even
    # though the lifeline stays open (containerd would keep the exec open otherwise).
    wrapper = Wrapper(argv_for("echo done", session_id))
    assert wrapper.streams_closed(2.0)
    assert wrapper.proc.stdin is not None
    assert not wrapper.proc.stdin.closed
    assert wrapper.finish() == (0, b"done\n", b"")


# --- the lifeline ---------------------------------------------------------------------------


def test_lifeline_eof_kills_command_and_setsid_grandchild(session_id: str) -> None:
    wrapper = Wrapper(argv_for("setsid sleep 1000 & exec sleep 1000", session_id))
    assert wait_for(lambda: len(marked_pids(session_id)) == 2, 2.0)
    started = time.monotonic()
    wrapper.close_stdin()  # kubexec killed -9, or the connection dropped
    assert wait_for(lambda: not marked_pids(session_id), GRACE + 2)
    assert wrapper.proc.wait(GRACE + 2) == 255
    assert time.monotonic() - started < GRACE + 2


def test_lifeline_eof_kills_after_grace_what_ignores_term(session_id: str) -> None:
    loop = "while :; do sleep 1000; done"
    command = f"trap '' TERM; setsid sh -c 'trap \"\" TERM; {loop}' & {loop}"
    wrapper = Wrapper(argv_for(command, session_id))
    assert wait_for(lambda: len(marked_pids(session_id)) == 4, 2.0)
    wrapper.close_stdin()
    assert wait_for(lambda: not marked_pids(session_id), GRACE + 2)
    assert wrapper.proc.wait(GRACE + 2) == 255


def test_normal_end_stands_the_watcher_down(session_id: str) -> None:
    # A daemon detached on purpose (orted --daemonize) outlives the exec and the lifeline.
    command = "setsid sleep 1000 </dev/null >/dev/null 2>&1 &"
    wrapper = Wrapper(argv_for(command, session_id))
    assert wrapper.finish() == (0, b"", b"")  # closes the lifeline after the exit
    [daemon] = marked_pids(session_id)
    time.sleep(0.5)
    assert marked_pids(session_id) == [daemon]


# --- forward mode: stdin is the command's, a guard exec is the lifeline ----------------------


def start_guard(session_id: str) -> Wrapper:
    guard = Wrapper(remote.build_guard_argv(session_id=session_id, grace=GRACE))
    assert guard.proc.stdout is not None
    return guard


def wait_ready(guard: Wrapper) -> None:
    # The guard prints "ready" and then closes its stdout.
    assert guard.streams_closed(2.0)
    assert guard.stdout == b"ready\n"


def test_forward_stdin_reaches_the_command(session_id: str) -> None:
    guard = start_guard(session_id)
    wait_ready(guard)
    data = os.urandom(300_000)
    wrapper = Wrapper(argv_for("cat; echo end >&2", session_id, stdin="forward"))
    writer = threading.Thread(target=wrapper.feed, args=(data,))
    writer.start()
    assert wrapper.finish() == (0, data, b"end\n")
    writer.join()
    guard.write(b"done\n")
    assert guard.finish() == (0, b"ready\n", b"")


def test_forward_without_command_reads_a_script(session_id: str) -> None:
    guard = start_guard(session_id)
    wait_ready(guard)
    wrapper = Wrapper(argv_for(None, session_id, stdin="forward"))
    wrapper.write(b"echo from-stdin\nexit 3\n")
    wrapper.close_stdin()
    assert wrapper.finish()[:2] == (3, b"from-stdin\n")
    guard.write(b"done\n")
    assert guard.finish()[0] == 0


def test_guard_eof_kills_the_forward_command(session_id: str) -> None:
    guard = start_guard(session_id)
    wait_ready(guard)
    wrapper = Wrapper(argv_for("setsid sleep 1000 & sleep 1000", session_id, stdin="forward"))
    assert wait_for(lambda: len(marked_pids(session_id)) == 3, 2.0)
    guard.close_stdin()  # no "done": the connection was lost
    assert wait_for(lambda: not marked_pids(session_id), GRACE + 2)
    assert wrapper.proc.wait(GRACE + 2) == 128 + signal.SIGTERM
    assert guard.proc.wait(2) == 0


def test_forward_refuses_to_run_without_its_guard(session_id: str) -> None:
    rc, out, err = run("echo should-not-run", session_id, stdin="forward")
    assert (rc, out) == (255, b"")
    assert (
        err
        == (
            f"kubexec: the lifeline exec (guard) of session {session_id} is not running;"
            " not starting\n"
        ).encode()
    )


def test_tty_mode_replaces_the_wrapper(session_id: str) -> None:
    wrapper = Wrapper(argv_for("echo $$ $KUBEXEC_SESSION", session_id, stdin="tty"))
    pid = wrapper.proc.pid
    assert wrapper.finish() == (0, f"{pid} {session_id}\n".encode(), b"")


# --- running as the user ------------------------------------------------------------------

IDS = 'id -u; id -g; id -G; echo "$HOME $USER $LOGNAME"'


@needs_root
@needs_setpriv
def test_root_switches_to_a_passwd_user(session_id: str) -> None:
    rc, out, err = run(IDS, session_id, uid=65534, gid=None, groups=())
    assert (rc, err) == (0, b"")
    assert out.decode().splitlines() == ["65534", "65534", "65534", "/nonexistent nobody nobody"]


@needs_root
@needs_setpriv
def test_root_switches_to_a_numeric_uid_without_passwd_entry(session_id: str) -> None:
    assert "4242" not in Path("/etc/passwd").read_text()
    rc, out, _ = run(IDS, session_id, uid=4242, gid=100, groups=[5, 7])
    assert rc == 0
    assert out.decode().splitlines() == ["4242", "100", "100 5 7", "/ 4242 4242"]
    rc, out, _ = run(IDS, session_id, uid=4242, gid=None, groups=())
    assert out.decode().splitlines()[:3] == ["4242", "4242", "4242"]


@needs_root
def test_root_switches_with_coreutils_chroot_without_setpriv(session_id: str) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as bin_dir:  # the user must reach it too
        Path(bin_dir).chmod(0o755)
        for tool in ("tr", "sleep", "setsid", "chroot", "id"):
            found = shutil.which(tool)
            assert found is not None
            (Path(bin_dir) / tool).symlink_to(found)
        rc, out, _ = run(IDS, session_id, uid=4242, gid=100, groups=[5], env={"PATH": bin_dir})
    assert rc == 0
    assert out.decode().splitlines() == ["4242", "100", "100 5", "/ 4242 4242"]


@needs_root
def test_root_without_a_switch_tool_says_so(session_id: str) -> None:
    with tempfile.TemporaryDirectory(dir="/tmp") as bin_dir:
        for tool in ("tr", "sleep", "setsid"):
            found = shutil.which(tool)
            assert found is not None
            (Path(bin_dir) / tool).symlink_to(found)
        rc, out, err = run("true", session_id, uid=4242, gid=None, groups=(), env={"PATH": bin_dir})
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
    as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    argv = as_nobody + argv_for("echo should-not-run", session_id, uid=1000, gid=1000)
    rc, out, err = Wrapper(argv).finish()
    assert (rc, out) == (255, b"")
    assert err == (
        b"kubexec: cannot run as uid 1000 in pod (container runs as uid 65534, not root);"
        b" set securityContext.runAsUser=1000 on the pod\n"
    )
    # The container's own uid needs no switch.
    argv = as_nobody + argv_for("id -u", session_id, uid=65534, gid=65534)
    assert Wrapper(argv).finish() == (0, b"65534\n", b"")


@needs_root
@needs_setpriv
def test_root_without_setuid_capability_cannot_switch(session_id: str) -> None:
    no_caps = ["setpriv", "--bounding-set=-setuid,-setgid"]
    rc, out, err = Wrapper(no_caps + argv_for("true", session_id, uid=1000, gid=1000)).finish()
    assert (rc, out) == (255, b"")
    assert b"without CAP_SETUID/CAP_SETGID); set securityContext.runAsUser=1000" in err


# --- framed mode: forward over v4, which cannot half-close stdin -------------------------------


def frames(data: bytes, size: int = 65536) -> bytes:
    chunks = [data[i : i + size] for i in range(0, len(data), size)]
    return b"".join(b"%d\n%s" % (len(c), c) for c in chunks) + b"0\n"


def test_framed_stdin_is_decoded_and_ends_at_the_end_frame(session_id: str) -> None:
    guard = start_guard(session_id)
    wait_ready(guard)
    data = os.urandom(200_000) + b"\n0\n12\n"  # payload that looks like frames stays payload
    wrapper = Wrapper(argv_for("cat; echo end >&2", session_id, stdin="framed"))
    wrapper.write(frames(data, 70_000))  # the exec's stdin stays open: only the frame ends it
    assert wrapper.finish() == (0, data, b"end\n")
    guard.write(b"done\n")
    assert guard.finish()[0] == 0


def test_framed_command_that_stops_reading_is_not_held_up(session_id: str) -> None:
    guard = start_guard(session_id)
    wait_ready(guard)
    wrapper = Wrapper(argv_for("head -c 3; exit 4", session_id, stdin="framed"))
    wrapper.write(b"10\n0123456789")  # no end frame, stdin left open
    assert wrapper.finish() == (4, b"012", b"")
    guard.write(b"done\n")
    assert guard.finish()[0] == 0
