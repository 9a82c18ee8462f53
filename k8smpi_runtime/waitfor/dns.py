"""DNS checks through the system resolver: is a pod's name in DNS, with the pod's current IP?

``socket.getaddrinfo`` is what MPI itself calls, so ``/etc/nsswitch.conf``, the search domains
and ``ndots`` of the pod's ``/etc/resolv.conf`` all apply; no cluster domain is assumed. A name
that resolves only to other addresses is a stale record (a previous pod's), not ready.

:class:`Checker` runs lookups on a ``ThreadPoolExecutor`` with at most ``parallelism`` in
flight. A failed name is retried with backoff: 50 ms growing by 1.5x to 0.5 s, 2 s once it has
failed 60 times. A record usually appears within a second or two of its pod turning Ready
(EndpointSlice, then DNS) and the gap between tries adds directly to the time from the last
record to exit, hence the short cap; but the caps grow with the number of failing names so
that all retries together stay under :data:`MAX_RATE` lookups a second (a 1000-pod job
without its headless Service must not flood the resolver). A check is keyed by the pod's uid
and IPs too, so a recreated pod is checked afresh. Results are kept while it is wanted.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

logger = logging.getLogger(__name__)

FIRST_DELAY = 0.05
GROWTH = 1.5
CAP = 0.5
LATE_CAP = 2.0
LATE_AFTER = 60
#: Retries per second, all failing names together, at most (on average).
MAX_RATE = 200.0


@dataclass(frozen=True)
class Check:
    """One name that must resolve to one of a pod's IPs."""

    name: str
    #: The pod's current IPs (status.podIPs); empty: the name must merely resolve.
    ips: frozenset[str]
    #: The pod incarnation (metadata.uid): a recreated pod gets new checks.
    uid: str


@dataclass(frozen=True)
class Result:
    ok: bool
    #: Why not, for the table: ``does not resolve``, ``resolves to X, not the pod's IP Y``...
    detail: str = ""


def getaddrinfo_addresses(name: str) -> list[str]:
    """The addresses the system resolver gives for ``name`` (raises socket.gaierror)."""
    infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _normal(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip.split("%", 1)[0]))
    except ValueError:
        return ip


def judge(check: Check, addresses: Sequence[str] | None, error: OSError | None = None) -> Result:
    """The result of one lookup: ``addresses`` it gave, or the ``error`` it raised."""
    if error is not None:
        if isinstance(error, socket.gaierror) and error.errno in _NO_NAME:
            return Result(False, "does not resolve")
        return Result(False, f"lookup failed ({error.strerror or error})")
    found = sorted({_normal(a) for a in addresses or ()})
    if not found:
        return Result(False, "does not resolve")
    if not check.ips or {_normal(ip) for ip in check.ips} & set(found):
        return Result(True)
    want = ", ".join(sorted(check.ips))
    return Result(False, f"resolves to {', '.join(found[:3])}, not the pod's IP {want} (stale)")


_NO_NAME = {
    getattr(socket, name)
    for name in ("EAI_NONAME", "EAI_NODATA", "EAI_ADDRFAMILY")
    if hasattr(socket, name)
}


def backoff(failures: int, failing: int = 1) -> float:
    """Seconds before retry number ``failures`` (>= 1) of one of ``failing`` names, +-20%."""
    cap = max(CAP if failures < LATE_AFTER else LATE_CAP, failing / MAX_RATE)
    delay: float = min(FIRST_DELAY * GROWTH ** (failures - 1), cap)
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography


@dataclass
class _State:
    result: Result | None = None
    failures: int = 0
    due: float = 0.0
    in_flight: bool = False


class Checker:
    """Runs wanted checks; the caller's loop calls :meth:`want` whenever it wakes up.

    ``on_result`` is called from a worker thread after each lookup (to wake that loop).
    """

    def __init__(
        self,
        *,
        parallelism: int = 16,
        lookup: Callable[[str], Sequence[str]] = getaddrinfo_addresses,
        on_result: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.parallelism = max(1, parallelism)
        self._lookup = lookup
        self._on_result = on_result
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[Check, _State] = {}
        #: Wanted checks whose last lookup failed.
        self._failing: set[Check] = set()
        self._in_flight = 0
        self._pool: ThreadPoolExecutor | None = None
        #: Lookups started so far (for -v and the benchmark).
        self.lookups = 0

    def result(self, check: Check) -> Result | None:
        with self._lock:
            state = self._states.get(check)
            return state.result if state else None

    def want(self, checks: Iterable[Check], now: float) -> None:
        """Start the due lookups among ``checks`` (``now`` on the ``clock``); forget the others."""
        wanted = set(checks)
        with self._lock:
            for check in list(self._states):
                if check not in wanted and not self._states[check].in_flight:
                    del self._states[check]
                    self._failing.discard(check)
            for check in wanted:
                self._states.setdefault(check, _State())
            due = [
                c
                for c, s in self._states.items()
                if c in wanted
                and not s.in_flight
                and not (s.result and s.result.ok)
                and s.due <= now
            ]
            due.sort(key=lambda c: self._states[c].due)
            free = self.parallelism - self._in_flight
            for check in due[: max(0, free)]:
                self._states[check].in_flight = True
                self._in_flight += 1
                self.lookups += 1
                self._executor().submit(self._run, check)

    def next_due(self) -> float | None:
        """The earliest time a lookup is due; None when none waits, or no slot is free (a
        finishing lookup wakes the caller through ``on_result``)."""
        with self._lock:
            if self._in_flight >= self.parallelism:
                return None
            dues = [
                s.due
                for s in self._states.values()
                if not s.in_flight and not (s.result and s.result.ok)
            ]
        return min(dues) if dues else None

    def close(self) -> None:
        """Stop starting lookups; running ones finish on their own (bounded by the resolver)."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.parallelism, thread_name_prefix="dns")
        return self._pool

    def _run(self, check: Check) -> None:
        try:
            result = judge(check, self._lookup(check.name))
        except OSError as e:
            result = judge(check, None, e)
        except UnicodeError:  # a label longer than 63 characters, say
            result = Result(False, "is not a valid DNS name")
        logger.debug("dns %s -> %s", check.name, result)
        with self._lock:
            self._in_flight -= 1
            state = self._states.get(check)
            if state is not None:
                state.in_flight = False
                state.result = result
                if result.ok:
                    self._failing.discard(check)
                else:
                    self._failing.add(check)
                    state.failures += 1
                    state.due = self._clock() + backoff(state.failures, len(self._failing))
        self._on_result()
