"""Reports as people and machines read them: one row per pod, a column per check, worst first;
the fatal findings one line each; JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from k8smpi_runtime.preflight.model import CHECKS, FAIL

if TYPE_CHECKING:
    from collections.abc import Sequence

    from k8smpi_runtime.preflight.model import Report

CELL = {"fail": "FAIL", "warn": "warn", "ok": "ok", "absent": "absent", "skip": "skip"}


def ordered(reports: Sequence[Report]) -> list[Report]:
    """Worst pod first; ties keep the job's order."""
    return sorted(reports, key=lambda r: -r.worst)


def render(reports: Sequence[Report]) -> str:
    rows = ordered(reports)
    columns = [c for c in CHECKS if any(c in r.by_check() for r in rows)]
    header = ["pod", *columns]
    lines = [header]
    for report in rows:
        cells = report.by_check()
        name = report.pod + (" (launcher)" if report.launcher else "")
        lines.append(
            [name, *[CELL.get(cells[c].status, "?") if c in cells else "-" for c in columns]]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return (
        "\n".join(
            "  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip()
            for line in lines
        )
        + "\n"
    )


def details(report: Report) -> str:
    """One pod's findings, worst first: ``status  check  found  (expected ...)  -- why``."""
    out = []
    for f in sorted(report.findings, key=lambda f: -f.severity):
        line = f"{CELL.get(f.status, f.status):6}  {f.check:10}  {f.found}"
        if f.expected:
            line += f"  (expected {f.expected})"
        if f.message:
            line += f"\n{'':20}{f.message}"
        out.append(line)
    return "\n".join(out) + "\n"


def fatal_lines(reports: Sequence[Report]) -> list[str]:
    """``<pod>: <check>: found ..., expected ... -- why`` for each fatal finding."""
    return [
        f"{r.pod}: {f.line()}" for r in ordered(reports) for f in r.findings if f.status == FAIL
    ]


def warnings(reports: Sequence[Report]) -> list[str]:
    return [
        f"{r.pod}: {f.line()}" for r in ordered(reports) for f in r.findings if f.status == "warn"
    ]


def to_json(reports: Sequence[Report]) -> str:
    doc = {
        "fatal": sum(len(r.fatal()) for r in reports),
        "pods": [r.to_json() for r in ordered(reports)],
    }
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def any_fatal(reports: Sequence[Report]) -> bool:
    return any(f.status == FAIL for r in reports for f in r.findings)
