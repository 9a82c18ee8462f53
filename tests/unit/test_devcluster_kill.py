"""``python3 -m devcluster kill`` and ``restart --kill``: a crash, not a drain (no cluster needed).

A stand-in component: /bin/sh copied under the component's name (the pid file is trusted only
when the process's executable has that name), ignoring SIGTERM as a draining server would not
exit at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

from devcluster import cli, processes
from devcluster.layout import EXIT_OK, EXIT_USAGE, Layout

if TYPE_CHECKING:
    from pathlib import Path


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Layout:
    lay = Layout(tmp_path / "dc")
    lay.root.mkdir()
    monkeypatch.setattr(cli, "default_layout", lambda: lay)
    monkeypatch.setenv("DEVCLUSTER_REAL_NODES", "0")
    return lay


def start_stand_in(lay: Layout, tmp_path: Path) -> int:
    exe = tmp_path / "kube-apiserver"
    shutil.copy("/bin/sh", exe)
    pid = processes.start(lay, "kube-apiserver", [str(exe), "-c", "trap '' TERM; sleep 60"])
    deadline = time.monotonic() + 5
    while processes.read_pid(lay, "kube-apiserver") != pid:
        assert time.monotonic() < deadline, "the stand-in never ran under its name"
        time.sleep(0.02)
    return pid


def test_kill_sends_sigkill_at_once_and_restarts_nothing(
    layout: Layout, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pid = start_stand_in(layout, tmp_path)
    t0 = time.monotonic()
    assert cli.main(["kill", "kube-apiserver"]) == EXIT_OK
    # TERM first would have waited the 15 s stop timeout on a process that ignores it.
    assert time.monotonic() - t0 < 5
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
    assert not layout.pidfile("kube-apiserver").exists()
    assert "killed kube-apiserver" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["kill", "kube-nosuch"], "kill: unknown component 'kube-nosuch'; one of: etcd,"),
        (["kill"], "kill: no component named; one of: etcd,"),
        (["restart", "--kill", "nosuch"], "restart: unknown component 'nosuch'"),
    ],
)
def test_a_bad_component_is_one_line_and_exit_2(
    layout: Layout, argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"devcluster: error: {says}"), err


def test_the_command_line_names_kill(tmp_path: Path) -> None:
    # The module's own entry point, as the e2e tests call it: a bad name stops before anything.
    env = {**os.environ, "DEVCLUSTER_DIR": str(tmp_path), "DEVCLUSTER_REAL_NODES": "0"}
    done = subprocess.run(
        ["python3", "-m", "devcluster", "kill", "nosuch"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=cli.__file__.rsplit("/devcluster/", 1)[0],
    )
    assert done.returncode == EXIT_USAGE
    assert done.stderr.startswith("devcluster: error: kill: unknown component 'nosuch'")
