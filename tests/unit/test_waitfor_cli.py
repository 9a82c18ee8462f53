"""k8s-waitfor's command line: arguments, durations, exit statuses (no cluster)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from k8smpi_runtime.errors import ConfigError, ForbiddenError, TransportError
from k8smpi_runtime.hostfile.core import Refused
from k8smpi_runtime.selection import SelectionError
from k8smpi_runtime.waitfor import cli, exitcodes

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """main() configures the package's loggers; leave them as other tests expect them."""
    saved = [
        (log, list(log.handlers), log.level, log.propagate)
        for log in map(logging.getLogger, ("k8smpi_runtime", cli.PROG))
    ]
    yield
    for log, handlers, level, propagate in saved:
        log.handlers, log.level, log.propagate = handlers, level, propagate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("1.5m", 90), ("1m30s", 90), ("2h", 7200), ("500ms", 0.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert cli.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5", "ten", "5d", "0s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_duration(text)


@pytest.mark.parametrize(
    ("words", "on"),
    [([], False), (["--preflight"], True), (["--preflight", "--no-preflight"], False)],
)
def test_preflight_switch(words: list[str], on: bool) -> None:
    """deploy/ passes --$(K8SMPI_PREFLIGHT): ``preflight`` or ``no-preflight``."""
    args = cli.build_parser().parse_args(["--statefulset", "w", *words])
    assert args.preflight is on


def test_help_documents_every_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in (0, 2, 3, 4, 5, 6, 7, 8, 130):
        assert f"\n  {code} " in out
    assert "--unschedulable-grace" in out
    assert "default 10m" in out


@pytest.mark.parametrize(
    "argv",
    [
        [],  # nothing selected: the anchor exits 0 here
        ["--statefulset", "a", "--job", "b"],
        ["-l", "app=x", "--timeout", "0"],
        ["-l", "app=x", "--timeout", "forever"],
        ["-l", "app=x", "--dns-parallelism", "0"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == exitcodes.USAGE
    assert "k8s-waitfor: error:" in capsys.readouterr().err


def test_bad_selection_and_bad_config_are_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert cli.main(["-l", "app in (x"]) == exitcodes.USAGE
    err = capsys.readouterr().err
    assert err == "k8s-waitfor: malformed label selector 'app in (x' at 'app in (x'\n"
    assert cli.main(["-l", "app=x"]) == exitcodes.USAGE
    err = capsys.readouterr().err
    assert err.startswith("k8s-waitfor: kubeconfig not found: ")
    assert err.count("\n") == 1
    assert cli.main(["--count", "0", "-l", "app=x"]) == exitcodes.USAGE


def test_traceback_only_with_verbose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert cli.main(["-l", "app=x"]) == exitcodes.USAGE
    assert "Traceback" not in capsys.readouterr().err
    assert cli.main(["-v", "-l", "app=x"]) == exitcodes.USAGE
    assert "Traceback" in capsys.readouterr().err


def test_exit_status_of_known_errors() -> None:
    assert cli.exit_status(SelectionError("x")) == exitcodes.USAGE
    assert cli.exit_status(ConfigError("x")) == exitcodes.USAGE
    assert cli.exit_status(cli.NothingToWaitFor("x")) == exitcodes.NOT_FOUND
    assert cli.exit_status(ForbiddenError("x", status=403)) == exitcodes.DENIED
    assert cli.exit_status(cli.Denied("x")) == exitcodes.DENIED
    assert cli.exit_status(Refused("x")) == exitcodes.OUTPUT
    assert cli.exit_status(TransportError("x")) == exitcodes.API
    assert cli.exit_status(cli.GaveUp("x")) == exitcodes.API


def test_user_agent_names_the_tool() -> None:
    assert cli.USER_AGENT.startswith("k8s-waitfor/")
    assert "k8smpi-runtime" in cli.USER_AGENT


def test_retrying_gives_up_at_the_deadline() -> None:
    calls = []

    def fail() -> None:
        calls.append(1)
        raise TransportError("refused")

    with pytest.raises(cli.GaveUp, match="reading x: gave up at the deadline: refused"):
        cli.retrying(fail, deadline=time.monotonic() + 0.5, what="reading x")
    assert 2 <= len(calls) <= 5
    with pytest.raises(ForbiddenError):
        cli.retrying(
            lambda: (_ for _ in ()).throw(ForbiddenError("no", status=403)),
            deadline=time.monotonic() + 5,
            what="x",
        )
