"""kubexec's control master without a cluster: where the socket is, whom it trusts, the wire.

The e2e tier (tests/e2e/test_kubexec_master.py) runs calls through a real master and kills
either side; here are the cases a single uid on a cluster cannot produce: a socket or a
directory owned by another user, a connection from another user to the master.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from k8smpi_runtime.kubexec import control, sshargs

if TYPE_CHECKING:
    from collections.abc import Iterator

NOBODY = 65534


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory another user can reach (pytest's tmp_path is under a 0700 directory)."""
    path = Path(tempfile.mkdtemp(prefix="kx-control-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def inv(*argv: str, env: dict[str, str] | None = None) -> sshargs.Invocation:
    return sshargs.parse(list(argv), env or {})


# -- the options ------------------------------------------------------------------------------


def test_ssh_spellings_of_the_control_options() -> None:
    assert inv("h").control_master == "no"
    assert inv("-M", "h").control_master == "yes"
    assert inv("-MM", "h").control_master == "ask"
    assert inv("-o", "ControlMaster=auto", "h").control_master == "auto"
    assert inv("-o", "controlmaster no", "-o", "ControlMaster=yes", "h").control_master == "no"
    assert inv("-S", "/p", "-o", "ControlPath=/q", "h").control_path == "/p"
    assert inv("-o", "ControlPersist=yes", "h").control_persist == float("inf")
    assert inv("-o", "ControlPersist=0", "h").control_persist == float("inf")
    assert inv("-o", "ControlPersist=no", "h").control_persist == 0.0
    assert inv("-o", "ControlPersist=1m30s", "h").control_persist == 90.0
    assert inv("-O", "check", "h").control_command == "check"
    env = {
        "KUBEXEC_CONTROL_MASTER": "auto",
        "KUBEXEC_CONTROL_PATH": "/e",
        "KUBEXEC_CONTROL_PERSIST": "10",
    }
    got = inv("h", env=env)
    assert (got.control_master, got.control_path, got.control_persist) == ("auto", "/e", 10.0)
    assert inv("-o", "ControlMaster=no", "h", env=env).control_master == "no"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-o", "ControlMaster=maybe", "h"], "ControlMaster=maybe"),
        (["-o", "ControlPersist=soon", "h"], "ControlPersist=soon"),
        (["-O", "forward", "h"], "-O forward"),
    ],
)
def test_bad_control_options_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(sshargs.UsageError, match=message):
        inv(*argv)


def test_path_tokens() -> None:
    call = inv("-l", "alice", "-p", "2222", "w-0.svc1")
    key = control.credential_key(kubeconfig=None, context=None, env={})
    env = {"HOME": "/home/me", "USER": "me"}
    path = control.expand("~/c/%r@%h:%p-%u-%i-%C-%%", call, env, key)
    assert path == f"/home/me/c/alice@w-0.svc1:2222-me-{os.getuid()}-{control.key_hash(key)}-%"
    with pytest.raises(control.ControlError, match="unknown token %Z"):
        control.expand("/x/%Z", call, env, key)


def test_credential_settings_choose_the_master(tmp_path: Path) -> None:
    def key(env: dict[str, str], **kw: str) -> str:
        return control.credential_key(
            kubeconfig=kw.get("kubeconfig"), context=kw.get("context"), env=env
        )

    base = key({"KUBECONFIG": "/a"})
    assert key({"KUBECONFIG": "/a", "UNRELATED": "1"}) == base
    assert key({"KUBECONFIG": "/b"}) != base
    assert key({"KUBECONFIG": "/a"}, context="other") != base
    assert key({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}) != key({})
    # Relative paths are the caller's: the key holds them absolute.
    os.chdir(tmp_path)
    assert f"KUBECONFIG={tmp_path}/k" in key({"KUBECONFIG": "k"})


# -- whom the client trusts -------------------------------------------------------------------


def listening(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(1)
    return sock


def test_the_default_directory_is_made_private(tmp_path: Path) -> None:
    path = control.private_dir({"TMPDIR": str(tmp_path)})
    st = os.lstat(path)
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert st.st_uid == os.getuid()


def test_a_directory_open_to_others_is_refused(tmp_path: Path) -> None:
    shared = tmp_path / f"kubexec-{os.getuid()}"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    with pytest.raises(control.Refused, match="not private"):
        control.private_dir({"TMPDIR": str(tmp_path)})


@pytest.mark.skipif(os.getuid() != 0, reason="making a file another user's needs root")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    theirs = tmp_path / f"kubexec-{os.getuid()}"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, NOBODY, NOBODY)
    with pytest.raises(control.Refused, match=f"owner uid {NOBODY}"):
        control.private_dir({"TMPDIR": str(tmp_path)})


@pytest.mark.skipif(os.getuid() != 0, reason="making a socket another user's needs root")
def test_a_socket_of_another_user_is_refused_and_the_call_runs_alone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "m"
    sock = listening(path)
    try:
        os.chown(path, NOBODY, NOBODY)
        with pytest.raises(control.Refused, match=f"belongs to uid {NOBODY}"):
            control.connect(str(path))
        call = inv("-o", "ControlMaster=auto", "-S", str(path), "h", "true")
        assert control.client(call, ["h", "true"], {}) is None  # runs without the master
    finally:
        sock.close()


def test_a_path_that_is_not_a_socket_is_refused(tmp_path: Path) -> None:
    (tmp_path / "m").write_text("")
    with pytest.raises(control.Refused, match="not a socket"):
        control.connect(str(tmp_path / "m"))


def test_a_stale_socket_is_no_master(tmp_path: Path) -> None:
    path = tmp_path / "m"
    listening(path).close()  # the file stays, nobody listens
    assert path.exists()
    assert control.connect(str(path)) is None
    assert control.connect(str(tmp_path / "absent")) is None


@pytest.mark.skipif(os.getuid() != 0, reason="a listener as another user needs root")
def test_a_master_running_as_another_user_is_refused(open_dir: Path) -> None:
    """Our uid owns the socket file, but the process listening on it is someone else."""
    tmp_path = open_dir
    tmp_path.chmod(0o777)  # the other user binds its socket here
    path = tmp_path / "m"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the other user's "master"
        try:
            os.close(ready_r)
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(str(tmp_path / "theirs"))
            sock.listen(1)
            os.write(ready_w, b"x")
            time.sleep(30)
        finally:
            os._exit(0)
    try:
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"x"
        # A link we own to their socket: lstat says ours, SO_PEERCRED says theirs.
        os.link(tmp_path / "theirs", path)
        os.lchown(path, os.getuid(), os.getgid())
        with pytest.raises(control.Refused, match="runs as another user"):
            control.connect(str(path))
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# -- the wire ---------------------------------------------------------------------------------


def test_requests_round_trip() -> None:
    raw = control.encode("session", ["key", "/cwd", "2", "h", "echo \u00e9", "A=1"])
    size = int.from_bytes(raw[:4], "big")
    assert size == len(raw) - 4
    assert control.decode(raw[4:]) == ("session", ["key", "/cwd", "2", "h", "echo \u00e9", "A=1"])
    with pytest.raises(ValueError, match="not a kubexec control request"):
        control.decode(b"something-else\0session")


@pytest.mark.skipif(os.getuid() != 0, reason="connecting as another user needs root")
def test_the_master_closes_connections_from_another_user(open_dir: Path) -> None:
    """A real master process (its credentials broken: no cluster needed) answers ``-O check``
    to its own uid and closes a connection from another uid unread."""
    tmp_path = open_dir
    path = tmp_path / "m"
    sock = listening(path)
    path.chmod(0o777)  # the kernel lets the other user connect; the master must refuse it
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "KUBECONFIG": str(tmp_path / "missing"),
    }
    code = "from k8smpi_runtime.kubexec import master; import sys; sys.exit(master.main())"
    argv = [sys.executable, "-c", code, "--fd", str(sock.fileno()), "--path", str(path)]
    argv += ["--persist", "inf", "--key", "k"]
    proc = subprocess.Popen(argv, pass_fds=[sock.fileno()], env=env, stderr=subprocess.PIPE)
    sock.close()
    try:
        assert control.command("check", str(path)) == 0
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the other user
            code_ = 1
            try:
                os.setgid(NOBODY)
                os.setuid(NOBODY)
                other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                other.connect(str(path))
                other.settimeout(10)
                code_ = 0 if other.recv(64) == b"" else 2  # closed unanswered
            finally:
                os._exit(code_)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "the master answered another user"
        assert control.command("exit", str(path)) == 0
        assert proc.wait(timeout=10) == 0
        assert not path.exists()
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr is not None
    assert b"refused a connection from another user" in proc.stderr.read()
