"""k8s-waitfor's output: the live line, the log lines, the failure table."""

from __future__ import annotations

import io

import pytest

from k8smpi_runtime.waitfor.progress import LiveLine, LogLines, pending, summary, table
from k8smpi_runtime.waitfor.readiness import Assessment, Row

ROWS = (
    Row("my-cnode-3", "Pending", "Unschedulable: 0/4 nodes are available: 4 Insufficient gpu"),
    Row("my-cnode-1", "Running", "DNS: my-cnode-1.my-hpc-cluster does not resolve"),
)


def state(ready: int = 12, resolved: int = 10, rows: tuple[Row, ...] = ROWS) -> Assessment:
    return Assessment(
        total=16, ready=ready, resolved=resolved, rows=rows, checks=(), done=False, no_pods=False
    )


def test_summary_and_pending() -> None:
    assert summary(state()) == "ready 12/16  dns 10/16"
    no_dns = Assessment(16, 12, 12, (), (), False, False, dns=False)
    assert summary(no_dns, note="API: refused; retrying") == "ready 12/16  [API: refused; retrying]"
    none = Assessment(0, 0, 0, (), (), False, True)
    assert summary(none) == "no matching pods yet"
    many = tuple(Row(f"p-{i}", "Pending", "waiting for the scheduler") for i in range(5))
    assert pending(many, why_limit=10) == (
        "p-0 (waiting f…), p-1 (waiting f…), p-2 (waiting f…) +2"
    )


def test_live_line_rewrites_one_line_and_clears_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    out = io.StringIO()
    line = LiveLine(out)
    line.update(state(), 1.0)
    line.update(state(ready=13), 1.05)  # within 0.1 s: skipped
    line.update(state(ready=13), 1.2)
    line.update(state(ready=13), 1.25)
    line.finish()
    text = out.getvalue()
    assert "\n" not in text
    frames = text.split("\r\x1b[K")
    assert frames[0] == ""
    assert frames[1].startswith("ready 12/16  dns 10/16  pending: my-cnode-3 (Unschedulable")
    assert frames[1].endswith("  1s")
    assert frames[2].startswith("ready 13/16")
    assert frames[3] == ""  # finish() erased the line
    assert len(frames) == 4


def test_log_lines_on_change_at_most_once_a_second_and_every_interval() -> None:
    out = io.StringIO()
    log = LogLines(out, interval=5.0)
    log.update(state(), 0.0)
    log.update(state(), 0.5)  # no change
    log.update(state(ready=13), 0.6)  # a change, but within a second of the last line
    log.update(state(ready=13), 1.1)  # printed now
    log.update(state(ready=13), 3.0)  # no change
    log.update(state(ready=13), 6.2)  # heartbeat
    lines = out.getvalue().splitlines()
    assert [ln.split(" ready")[0] for ln in lines] == [
        "k8s-waitfor: 0.0s",
        "k8s-waitfor: 1.1s",
        "k8s-waitfor: 6.2s",
    ]
    assert lines[0] == (
        "k8s-waitfor: 0.0s ready 12/16  dns 10/16; pending: my-cnode-3 (Unschedulable: 0/4 nodes"
        " are available: 4 Insufficient gpu), my-cnode-1 (DNS: my-cnode-1.my-hpc-cluster does "
        "not resolve)"
    )


def test_table() -> None:
    assert table(ROWS) == (
        "  POD         PHASE    WHY\n"
        "  my-cnode-3  Pending  Unschedulable: 0/4 nodes are available: 4 Insufficient gpu\n"
        "  my-cnode-1  Running  DNS: my-cnode-1.my-hpc-cluster does not resolve\n"
    )
    many = [Row(f"w-{i}", "Pending", "x") for i in range(25)]
    text = table(many)
    assert text.count("\n") == 22
    assert text.endswith("  ... and 5 more not ready\n")
    assert table([]) == ""


def test_live_line_fits_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    out = io.StringIO()
    LiveLine(out).update(state(), 75.4)
    shown = out.getvalue().removeprefix("\r\x1b[K")
    assert len(shown) == 39
    assert shown.endswith("…  75s")
