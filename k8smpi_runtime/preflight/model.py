"""What a check finds: :class:`Finding` (one check, one verdict) and :class:`Report` (one pod)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FAIL = "fail"
"""The job would fail (or silently lose its fast path) here: exit non-zero before mpirun."""
WARN = "warn"
"""It will run, but not as well as it could, or the check could not be sure."""
OK = "ok"
ABSENT = "absent"
"""The hardware or software is not there, and nothing asked for it."""
SKIP = "skip"
"""Not checked here (not applicable to this pod, or no way to know)."""

#: Worst first: the order of rows and of findings in messages.
SEVERITY = {FAIL: 4, WARN: 3, OK: 1, ABSENT: 1, SKIP: 0}

#: The checks, in table-column order: node checks, then the launcher's.
CHECKS = (
    "gpu",
    "cuda",
    "cuinit",
    "rdma",
    "rdma-stack",
    "gpudirect",
    "ucx",
    "memlock",
    "shm",
    "nofile",
    "pids",
    "mpi-env",
    "hostfile",
    "exec-rbac",
    "dns",
    "preflight",
)


@dataclass(frozen=True)
class Finding:
    """One check's verdict: what was found, what was expected, and the rule or the fix."""

    check: str
    status: str
    found: str
    expected: str = ""
    message: str = ""

    @property
    def severity(self) -> int:
        return SEVERITY.get(self.status, 0)

    def line(self) -> str:
        """``check: found X, expected Y -- message`` (for the fatal lines)."""
        text = f"{self.check}: found {self.found}"
        if self.expected:
            text += f", expected {self.expected}"
        return f"{text} -- {self.message}" if self.message else text

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Finding:
        return cls(
            check=str(data.get("check", "?")),
            status=str(data.get("status", WARN)),
            found=str(data.get("found", "")),
            expected=str(data.get("expected", "")),
            message=str(data.get("message", "")),
        )


@dataclass
class Report:
    """Every finding for one pod (or for the machine the tool runs on)."""

    pod: str
    findings: list[Finding] = field(default_factory=list)
    #: The pod running the checks across the job (its row has the launcher checks).
    launcher: bool = False

    def add(self, finding: Finding | None) -> None:
        if finding is not None:
            self.findings.append(finding)

    def extend(self, findings: list[Finding]) -> None:
        self.findings.extend(findings)

    @property
    def worst(self) -> int:
        return max((f.severity for f in self.findings), default=0)

    def fatal(self) -> list[Finding]:
        return [f for f in self.findings if f.status == FAIL]

    def by_check(self) -> dict[str, Finding]:
        """The worst finding of each check (a check may report several, e.g. one per HCA)."""
        out: dict[str, Finding] = {}
        for f in self.findings:
            if f.check not in out or f.severity > out[f.check].severity:
                out[f.check] = f
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "pod": self.pod,
            "launcher": self.launcher,
            "findings": [asdict(f) for f in self.findings],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], *, pod: str | None = None) -> Report:
        findings = [Finding.from_json(f) for f in data.get("findings") or [] if isinstance(f, dict)]
        return cls(pod or str(data.get("pod", "?")), findings, bool(data.get("launcher")))


def size_text(value: int | None) -> str:
    """Bytes as people write limits: ``64 KiB``, ``8 MiB``, ``1 GiB``; None is ``unlimited``."""
    if value is None:
        return "unlimited"
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if value >= scale:
            amount = value / scale
            return f"{amount:.0f} {unit}" if amount == int(amount) else f"{amount:.1f} {unit}"
    return f"{value} B"
