"""kubexec's control master on the devcluster: calls through it keep every guarantee, and
killing either side leaves nothing behind (here or "in the pod": podexec runs the pods'
processes on this machine, so /proc shows them)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import pytest

from devcluster.client import Cluster, wait_for
from devcluster.workloads import (
    KUBEXEC,
    TEARDOWN_S,
    kubexec_env,
    processes_with,
    running_pods,
    statefulset,
    wait_gone,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    """Two root workers ``m-0``, ``m-1``."""
    name = cluster.create_namespace("kubexec-master")
    try:
        cluster.apply(statefulset("m", service="msvc", replicas=2), name)
        running_pods(cluster, name, "app=m", 2)
        yield name
    finally:
        cluster.delete_namespace(name)


@pytest.fixture
def control(tmp_path: Path) -> Iterator[list[str]]:
    """ssh options for a master on a socket of this test's own; the master is ended after."""
    options = ["-o", "ControlMaster=auto", "-o", f"ControlPath={tmp_path}/m-%C"]
    options += ["-o", "ControlPersist=60", "--grace", "1"]
    yield options
    check = [str(KUBEXEC), *options, "-O", "check", "x"]
    alive = subprocess.run(check, capture_output=True, check=False, timeout=30)
    if alive.returncode == 0:
        pid = int(alive.stderr.decode().split("=", 1)[1].split(")", 1)[0])
        subprocess.run([str(KUBEXEC), *options, "-O", "exit", "x"], capture_output=True, check=True)
        wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="master gone")


def call(
    cluster: Cluster, ns: str, control: list[str], *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(KUBEXEC), "--namespace", ns, *control, *args],
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        env=kubexec_env(cluster),
        timeout=60,
        check=False,
    )


def start(cluster: Cluster, ns: str, control: list[str], command: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(KUBEXEC), "--namespace", ns, *control, "m-0", command],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=kubexec_env(cluster),
    )


def master_pid(cluster: Cluster, control: list[str]) -> int:
    proc = subprocess.run(
        [str(KUBEXEC), *control, "-O", "check", "x"],
        capture_output=True,
        env=kubexec_env(cluster),
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stderr.decode()
    assert text.startswith("Master running (pid="), text
    return int(text.split("=", 1)[1].split(")", 1)[0])


def children(pid: int) -> list[int]:
    """The live (not zombie) child processes of ``pid``: the master's session processes."""
    found = []
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE:
                found.append(child.pid)
    return found


def marked(token: str) -> str:
    """A foreground command, a background child and one that called setsid, all marked."""
    return f"KXT={token} sleep 600 & KXT={token} setsid sleep 601 & KXT={token} exec sleep 602"


def running_marked(
    cluster: Cluster, ns: str, control: list[str]
) -> tuple[int, str, subprocess.Popen[bytes]]:
    """A master (its pid), and a call through it whose 3 marked processes (``token``) run."""
    assert call(cluster, ns, control, "m-0", "true").returncode == 0
    pid = master_pid(cluster, control)
    token = f"kx{secrets.token_hex(6)}"
    proc = start(cluster, ns, control, marked(token))
    try:
        wait_for(lambda: len(processes_with(token)) >= 3, timeout=20, what="3 marked processes")
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return pid, token, proc


def test_calls_through_a_master_keep_codes_streams_and_stdin(
    cluster: Cluster, ns: str, control: list[str]
) -> None:
    first = call(cluster, ns, control, "m-0", "exit 3")
    assert first.returncode == 3, first.stderr
    pid = master_pid(cluster, control)
    for code in (0, 1, 42, 255):
        proc = call(cluster, ns, control, "m-1", f"exit {code}")
        assert (proc.returncode, proc.stdout, proc.stderr) == (code, b"", b"")
    proc = call(cluster, ns, control, "m-0", "printf out1; printf err1 >&2; printf out2")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"out1out2", b"err1")
    data = os.urandom(256 * 1024)
    proc = call(cluster, ns, control, "m-1", "cat", input=data)
    assert (proc.returncode, proc.stdout == data) == (0, True), proc.stderr
    proc = call(cluster, ns, control, "m-1", "wc -c; echo done", input=b"x" * 1000)
    assert proc.stdout.split() == [b"1000", b"done"], proc.stderr
    proc = call(cluster, ns, control, "-n", "m-1", "cat; echo end", input=b"not for you")
    assert (proc.returncode, proc.stdout) == (0, b"end\n"), proc.stderr
    proc = call(cluster, ns, control, "m-9", "true")
    assert proc.returncode == 255
    assert proc.stderr.decode().splitlines() == [
        f"kubexec: no pod named m-9 or with hostname m-9 in namespace {ns}"
    ]
    # Every call went through the same master, and its session processes are gone.
    assert master_pid(cluster, control) == pid
    wait_for(lambda: not children(pid), timeout=10, what="no session processes left")


def test_killing_the_client_tears_the_session_and_the_remote_down(
    cluster: Cluster, ns: str, control: list[str]
) -> None:
    assert call(cluster, ns, control, "m-0", "true").returncode == 0
    pid = master_pid(cluster, control)
    for trial in range(3):
        token = f"kx{secrets.token_hex(6)}"
        proc = start(cluster, ns, control, marked(token))
        try:
            wait_for(lambda t=token: len(processes_with(t)) >= 3, timeout=20, what="3 marked")  # type: ignore[misc]
            assert len(children(pid)) == 1, f"trial {trial}: one session process"
        finally:
            proc.kill()
            proc.wait(timeout=10)
        assert wait_gone(token, TEARDOWN_S) == [], f"trial {trial}: remote leftovers"
        wait_for(lambda: not children(pid), timeout=10, what="the session process gone")
    assert master_pid(cluster, control) == pid, "the master outlives its clients"


def test_killing_the_master_ends_its_calls_with_255_and_no_leftovers(
    cluster: Cluster, ns: str, control: list[str]
) -> None:
    pid, token, proc = running_marked(cluster, ns, control)
    try:
        sessions = children(pid)
        assert len(sessions) == 1
        os.kill(pid, signal.SIGKILL)
        rc = proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 255
    assert proc.stderr is not None
    err = proc.stderr.read().decode().splitlines()
    assert len(err) == 1, err
    assert "control master" in err[0] and "without an exit status" in err[0], err
    assert wait_gone(token, TEARDOWN_S) == []
    wait_for(lambda: not Path(f"/proc/{sessions[0]}").exists(), timeout=10, what="session gone")


def test_a_stale_socket_is_replaced_by_a_new_master(
    cluster: Cluster, ns: str, control: list[str], tmp_path: Path
) -> None:
    assert call(cluster, ns, control, "m-0", "true").returncode == 0
    pid = master_pid(cluster, control)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="master gone")
    sockets = [p for p in tmp_path.glob("m-*") if not p.name.endswith(".lock")]
    assert len(sockets) == 1, "kill -9 leaves the socket file behind"
    proc = call(cluster, ns, control, "m-1", "echo again")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"again\n", b"")
    assert master_pid(cluster, control) not in (pid, 0)


def test_an_idle_master_leaves_after_controlpersist(
    cluster: Cluster, ns: str, tmp_path: Path
) -> None:
    options = ["-o", "ControlMaster=auto", "-S", f"{tmp_path}/p", "-o", "ControlPersist=1s"]
    assert call(cluster, ns, options, "m-0", "sleep 1").returncode == 0
    pid = master_pid(cluster, options)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=15, what="the idle master gone")
    assert not (tmp_path / "p").exists()
    # ControlMaster=no with the path: uses a master if there is one, else runs alone.
    proc = call(cluster, ns, ["-S", f"{tmp_path}/p"], "m-0", "echo alone")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"alone\n", b"")
    assert not (tmp_path / "p").exists()


def test_o_exit_ends_the_master_and_its_sessions(
    cluster: Cluster, ns: str, control: list[str]
) -> None:
    pid, token, proc = running_marked(cluster, ns, control)
    try:
        done = subprocess.run(
            [str(KUBEXEC), *control, "-O", "exit", "x"],
            capture_output=True,
            env=kubexec_env(cluster),
            timeout=30,
            check=False,
        )
        assert (done.returncode, done.stderr) == (0, b"Exit request sent.\n")
        rc = proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 255
    assert wait_gone(token, TEARDOWN_S) == []
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="master gone")
