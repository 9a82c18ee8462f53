"""What a person sees while k8s-waitfor waits, and the table it leaves when it gives up.

- on a terminal: one live line, rewritten in place at most 10 times a second::

      ready 12/16  dns 10/16  pending: my-cnode-3 (Unschedulable), my-cnode-7 (not Ready) +2  14s

- in a log (an init container's, read with ``kubectl logs``): one concise line on each change
  (at most one a second) and every ``interval`` seconds while nothing changes::

      k8s-waitfor: 14.2s ready 12/16 dns 10/16; pending: my-cnode-3 (Unschedulable: 0/4 ...

- on failure, a table, one line per pod that is not ready, with why (:func:`table`).
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import TextIO

    from k8smpi_runtime.waitfor.readiness import Assessment, Row

PROG = "k8s-waitfor"
#: Pods named on a progress line before "+N".
SHOW = 3
#: Rows of the failure table before "... and N more".
TABLE_ROWS = 20
TTY_PERIOD = 0.1
LOG_MIN_GAP = 1.0


def summary(a: Assessment, *, note: str = "") -> str:
    """``ready 12/16  dns 10/16``, plus a note (API trouble, the phase of the wait)."""
    if a.no_pods:
        return "no matching pods yet" + (f"  [{note}]" if note else "")
    text = f"ready {a.ready}/{a.total}"
    if a.dns:
        text += f"  dns {a.resolved}/{a.total}"
    return text + (f"  [{note}]" if note else "")


def _short(row: Row, limit: int) -> str:
    why = row.why if len(row.why) <= limit else row.why[: limit - 1] + "…"
    return f"{row.pod} ({why})"


def pending(rows: Sequence[Row], *, show: int = SHOW, why_limit: int = 40) -> str:
    if not rows:
        return ""
    text = ", ".join(_short(r, why_limit) for r in rows[:show])
    return text + (f" +{len(rows) - show}" if len(rows) > show else "")


class Progress(Protocol):
    def update(self, a: Assessment, elapsed: float, *, note: str = "") -> None: ...

    def finish(self) -> None: ...


class Silent:
    def update(self, a: Assessment, elapsed: float, *, note: str = "") -> None:
        pass

    def finish(self) -> None:
        pass


class LiveLine:
    """One line rewritten in place (``\\r`` + erase to end of line), cut to the terminal width."""

    def __init__(self, stream: TextIO, *, clock_period: float = TTY_PERIOD) -> None:
        self.stream = stream
        self.period = clock_period
        self._last_at = float("-inf")
        self._last_text = ""
        self._shown = False

    def update(self, a: Assessment, elapsed: float, *, note: str = "") -> None:
        if elapsed - self._last_at < self.period:
            return
        width = shutil.get_terminal_size((100, 24)).columns - 1
        head = summary(a, note=note)
        rest = pending(a.rows)
        tail = f"  {elapsed:.0f}s"
        text = head + (f"  pending: {rest}" if rest else "")
        if len(text) + len(tail) > width:
            text = text[: max(0, width - len(tail) - 1)] + "…"
        text += tail
        if text != self._last_text:
            self.stream.write("\r\x1b[K" + text)
            self.stream.flush()
            self._last_text = text
            self._shown = True
        self._last_at = elapsed

    def finish(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False


class LogLines:
    """A line on each change (at most one per ``min_gap`` s) and every ``interval`` s."""

    def __init__(self, stream: TextIO, *, interval: float = 5.0, min_gap: float = LOG_MIN_GAP):
        self.stream = stream
        self.interval = interval
        self.min_gap = min_gap
        self._last_at = float("-inf")
        self._last_key: object = None

    def update(self, a: Assessment, elapsed: float, *, note: str = "") -> None:
        key = (a.ready, a.resolved, a.total, note, tuple((r.pod, r.why) for r in a.rows[:SHOW]))
        since = elapsed - self._last_at
        changed = key != self._last_key
        if not ((changed and since >= self.min_gap) or since >= self.interval):
            return
        rest = pending(a.rows, why_limit=70)
        line = f"{PROG}: {elapsed:.1f}s {summary(a, note=note)}" + (
            f"; pending: {rest}" if rest else ""
        )
        self.stream.write(line + "\n")
        self.stream.flush()
        self._last_at = elapsed
        self._last_key = key

    def finish(self) -> None:
        pass


def table(rows: Sequence[Row], *, limit: int = TABLE_ROWS) -> str:
    """The pods that are not ready, one line each: ``name  phase  why`` in aligned columns."""
    shown = list(rows[:limit])
    if not shown:
        return ""
    name_w = max(len("POD"), *(len(r.pod) for r in shown))
    phase_w = max(len("PHASE"), *(len(r.phase) for r in shown))
    lines = [f"  {'POD':<{name_w}}  {'PHASE':<{phase_w}}  WHY"]
    lines += [f"  {r.pod:<{name_w}}  {r.phase:<{phase_w}}  {r.why}" for r in shown]
    if len(rows) > limit:
        lines.append(f"  ... and {len(rows) - limit} more not ready")
    return "\n".join(lines) + "\n"
