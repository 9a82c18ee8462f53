"""The wait: pod events and DNS results in, one deadline, an :class:`Outcome` out.

The main thread owns all state. The watch thread (:mod:`.watching`) and the DNS workers
(:mod:`.dns`) only post messages to one queue, so the loop wakes at once on each change: the
exit follows the last pod's Ready event (or its DNS answer) without polling delay. Between
messages the loop ticks every :data:`TICK` seconds for the clock-driven rules (the
Unschedulable grace, DNS retries, the progress line, the deadline).
"""

from __future__ import annotations

import datetime as dt
import logging
import queue
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from k8smpi_runtime import hosts
from k8smpi_runtime.errors import ApiError, ForbiddenError, K8smpiError, UnauthorizedError
from k8smpi_runtime.waitfor import exitcodes
from k8smpi_runtime.waitfor.denied import explain_denied
from k8smpi_runtime.waitfor.dns import Checker, getaddrinfo_addresses
from k8smpi_runtime.waitfor.readiness import Assessment, Row, Rules, assess, condition, one_line
from k8smpi_runtime.waitfor.watching import (
    PAGE_SIZE,
    Changed,
    Fatal,
    PodCache,
    PodWatch,
    Synced,
    Trouble,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from k8smpi_runtime.kube.config import ClientConfig
    from k8smpi_runtime.selection import Pod, Selected, Target
    from k8smpi_runtime.waitfor.dns import Check
    from k8smpi_runtime.waitfor.progress import Progress
    from k8smpi_runtime.waitfor.watching import PodApi

logger = logging.getLogger(__name__)

TICK = 0.25
#: While events stream in, assess at most this often, and leave at least
#: :data:`IDLE_FACTOR` times an assessment's cost between two: one assessment of 1000 pods
#: costs 15-30 ms of CPU and a rollout sends several events per pod, so assessing on every
#: event would keep a core busy (the latency this adds is one gap, ~0.1 s).
MIN_GAP = 0.1
IDLE_FACTOR = 4.0
#: Re-assess at least this often without news (the Unschedulable grace is clock-driven).
REASSESS = 1.0
#: A Trouble older than this is over (the watch retries every <= 3 s while it lasts).
TROUBLE_FRESH = 5.0


@dataclass(frozen=True)
class Settings:
    timeout: float
    rules: Rules = field(default_factory=Rules)
    dns_parallelism: int = 16
    exec_probe: bool = False
    container: str | None = None
    #: (label, check) pairs that must pass too: --resolve-self.
    extra_checks: tuple[tuple[str, Check], ...] = ()
    page_size: int = PAGE_SIZE


@dataclass(frozen=True)
class Outcome:
    code: int
    message: str
    rows: tuple[Row, ...] = ()
    selected: Selected | None = None
    elapsed: float = 0.0
    stats: dict[str, int] = field(default_factory=dict)


class _DnsDone:
    """A DNS lookup finished (wakes the loop)."""


def format_duration(seconds: float) -> str:
    if seconds >= 120 and seconds % 60 == 0:
        return f"{seconds / 60:.0f}m"
    return f"{seconds:g}s"


def _parse_time(text: object) -> float | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Waiter:
    """One wait for ``target``; :meth:`run` returns the :class:`Outcome`."""

    def __init__(
        self,
        *,
        target: Target,
        settings: Settings,
        api: PodApi,
        progress: Progress,
        exec_config: ClientConfig | None = None,
        namespace_exists: Callable[[], bool | None] = lambda: None,
        lookup: Callable[[str], Sequence[str]] = getaddrinfo_addresses,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        start: float | None = None,
    ) -> None:
        """``start``: when the wait began on ``clock`` (default: when :meth:`run` is called)."""
        self.target = target
        self.settings = settings
        self.api = api
        self.progress = progress
        self.exec_config = exec_config
        self.namespace_exists = namespace_exists
        self.clock = clock
        self.wall = wall
        self.queue: queue.Queue[object] = queue.Queue()
        self.checker = Checker(
            parallelism=settings.dns_parallelism,
            lookup=lookup,
            on_result=lambda: self.queue.put(_DnsDone()),
            clock=clock,
        )
        self.cache = PodCache()
        self._unschedulable_seen: dict[str, float] = {}
        self._given_start = start
        self._start = 0.0
        self._synced = False
        self._dirty = True
        self._trouble: K8smpiError | None = None
        self._trouble_at = float("-inf")
        self._assess_cost = 0.0

    # -- clock-driven facts --------------------------------------------------------------------

    def unschedulable_for(self, pod: Pod) -> float:
        """Seconds the pod has been Unschedulable: since its condition changed, or we saw it."""
        uid = str((pod.get("metadata") or {}).get("uid"))
        now = self.clock()
        first = self._unschedulable_seen.setdefault(uid, now)
        since = _parse_time(condition(pod, "PodScheduled").get("lastTransitionTime"))
        by_server = self.wall() - since if since is not None else 0.0
        return max(now - first, by_server)

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> Outcome:
        self._start = self.clock() if self._given_start is None else self._given_start
        deadline = self._start + self.settings.timeout
        watch = PodWatch(
            self.api,
            self.target,
            self.queue,
            deadline=deadline,
            page_size=self.settings.page_size,
            clock=self.clock,
        )
        watch.start()
        try:
            outcome = self._loop(deadline)
        finally:
            watch.stop()
            self.checker.close()
            self.progress.finish()
        stats = {
            "lists": watch.counters.lists,
            "watches": watch.counters.watches,
            "relists": watch.counters.relists,
            "events": watch.counters.events,
            "dns_lookups": self.checker.lookups,
        }
        return Outcome(
            outcome.code,
            outcome.message,
            outcome.rows,
            outcome.selected,
            self.clock() - self._start,
            stats,
        )

    def _drain(self, wait: float) -> list[object]:
        try:
            messages = [self.queue.get(timeout=max(0.0, wait))]
        except queue.Empty:
            return []
        while True:
            try:
                messages.append(self.queue.get_nowait())
            except queue.Empty:
                return messages

    def _absorb(self, messages: list[object]) -> Outcome | None:
        """Apply the messages to the state; an Outcome when one of them ends the wait."""
        for message in messages:
            if isinstance(message, Synced):
                self.cache.replace(message.pods)
                self._synced = self._dirty = True
            elif isinstance(message, Changed):
                self.cache.apply(message.kind, message.pod)
                self._dirty = True
            elif isinstance(message, _DnsDone):
                self._dirty = True
            elif isinstance(message, Trouble):
                self._trouble, self._trouble_at = message.error, self.clock()
            elif isinstance(message, Fatal):
                return self._fatal(message.error)
        return None

    def _assess(self) -> tuple[Assessment, Selected]:
        pods = self.cache.values()
        selected = self.target.pick(pods)
        a = assess(
            selected,
            ended=pods,
            rules=self.settings.rules,
            dns_result=self.checker.result,
            unschedulable_for=self.unschedulable_for,
            extra_checks=self.settings.extra_checks,
        )
        return a, selected

    def _loop(self, deadline: float) -> Outcome:
        namespace_checked = False
        last: Assessment | None = None
        assessed_at = float("-inf")
        while True:
            now = self.clock()
            wait = min(TICK, deadline - now)
            gap = max(MIN_GAP, IDLE_FACTOR * self._assess_cost)
            if self._dirty and self._synced:
                wait = min(wait, assessed_at + gap - now)
            retry_at = self.checker.next_due()
            if retry_at is not None:
                wait = min(wait, retry_at - now)
            ended = self._absorb(self._drain(wait))
            if ended is not None:
                return ended
            now = self.clock()
            fresh = self._trouble if now - self._trouble_at < TROUBLE_FRESH else None
            due = now - assessed_at >= (gap if self._dirty else REASSESS)
            if self._synced and due:
                last, selected = self._assess()
                self._dirty, assessed_at = False, now
                self._assess_cost = self.clock() - now
                if last.fatal:
                    return self._failed(last)
                if last.done:
                    return self._succeeded(last, selected, deadline)
                if last.no_pods and not namespace_checked:
                    namespace_checked = True
                    if self.namespace_exists() is False:
                        return Outcome(
                            exitcodes.NOT_FOUND, f"namespace {self.target.namespace} not found"
                        )
            if last is not None:
                self.checker.want(last.checks, now)
                note = f"API: {one_line(fresh, 60)}; retrying" if fresh else ""
                self.progress.update(last, now - self._start, note=note)
            if now >= deadline:
                return self._timed_out(last, self._trouble, fresh)

    # -- outcomes ------------------------------------------------------------------------------

    def _where(self) -> str:
        return f"{self.target.description} in namespace {self.target.namespace}"

    def _fatal(self, error: K8smpiError) -> Outcome:
        ns = self.target.namespace
        if isinstance(error, UnauthorizedError | ForbiddenError):
            return Outcome(
                exitcodes.DENIED, explain_denied(error, verb="list", resource="pods", namespace=ns)
            )
        if isinstance(error, ApiError) and error.status in (400, 422):
            return Outcome(exitcodes.USAGE, f"the API server refused the pod list: {error}")
        return Outcome(exitcodes.API, f"listing pods in namespace {ns} failed: {error}")

    def _failed(self, a: Assessment) -> Outcome:
        fatal = a.fatal
        first = fatal[0]
        grace = self.settings.rules.unschedulable_grace
        extra = (
            f" (for longer than --unschedulable-grace {format_duration(grace)})"
            if first.why.startswith("Unschedulable")
            else ""
        )
        more = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
        message = f"pod {first.pod} cannot become ready{more}: {first.why}{extra}"
        rows = fatal + tuple(r for r in a.rows if not r.fatal)
        return Outcome(exitcodes.POD_FAILED, message, rows)

    def _timed_out(
        self, a: Assessment | None, trouble: K8smpiError | None, fresh: K8smpiError | None
    ) -> Outcome:
        """``a`` is None when no list ever succeeded; ``fresh`` is API trouble still going on."""
        timeout = format_duration(self.settings.timeout)
        if a is None:
            if isinstance(trouble, UnauthorizedError | ForbiddenError):
                return self._fatal(trouble)
            why = f": {trouble}" if trouble else ""
            return Outcome(
                exitcodes.API,
                f"could not list pods in namespace {self.target.namespace} within {timeout}{why}",
            )
        api_note = f" (the API server is failing: {one_line(fresh, 80)})" if fresh else ""
        if a.no_pods:
            return Outcome(
                exitcodes.NOT_FOUND,
                f"no pods match {self._where()} after {timeout}{api_note}",
                a.rows,
            )
        pending = max(0, a.total - a.resolved)
        what = (
            f"{pending} of {a.total} pods not ready"
            if pending
            else f"{a.rows[0].pod if a.rows else 'the selection'} not ready"
        )
        return Outcome(
            exitcodes.TIMEOUT,
            f"timed out after {timeout}: {what} ({self._where()}){api_note}",
            a.rows,
        )

    def _succeeded(self, a: Assessment, selected: Selected, deadline: float) -> Outcome:
        what = "Ready and resolvable" if self.settings.rules.dns else "Ready"
        if self.settings.exec_probe and self.exec_config is not None:
            outcome = self._probe(selected, deadline)
            if outcome is not None:
                return outcome
            what += ", exec probe passed"
        elapsed = self.clock() - self._start
        return Outcome(
            exitcodes.OK,
            f"{len(selected.pods)}/{a.total} pods {what} after {elapsed:.1f}s ({self._where()})",
            selected=selected,
        )

    def _probe(self, selected: Selected, deadline: float) -> Outcome | None:
        from k8smpi_runtime.waitfor import probe  # noqa: PLC0415 - websocket only when probing

        if self.exec_config is None:  # pragma: no cover - _succeeded checked it
            return None
        self_ref = self.settings.rules.self_ref
        pods = [p for p in selected.pods if self_ref is None or not hosts.matches(self_ref, p)]
        timeout = max(5.0, min(30.0, deadline - self.clock()))
        try:
            rows = probe.probe_all(
                self.exec_config,
                self.target.namespace,
                pods,
                container=self.settings.container,
                timeout=timeout,
                parallelism=self.settings.dns_parallelism,
            )
        except probe.ProbeDenied as e:
            return Outcome(exitcodes.DENIED, str(e))
        if rows:
            more = f" (and {len(rows) - 1} more)" if len(rows) > 1 else ""
            return Outcome(
                exitcodes.POD_FAILED,
                f"pod {rows[0].pod} failed the exec probe{more}: {rows[0].why}",
                tuple(rows),
            )
        return None
