"""k8s-waitfor's DNS checks: verdicts, backoff, bounded parallelism (a fake resolver)."""

from __future__ import annotations

import socket
import threading
import time

from k8smpi_runtime.waitfor import dns
from k8smpi_runtime.waitfor.dns import Check, Checker, Result, judge

POD = Check("w-0.sub", frozenset({"10.0.0.5"}), "uid-1")


def test_judge() -> None:
    assert judge(POD, ["10.0.0.5"]) == Result(True)
    assert judge(POD, ["10.0.0.9", "10.0.0.5"]).ok
    assert judge(POD, ["10.0.0.9"]) == Result(
        False, "resolves to 10.0.0.9, not the pod's IP 10.0.0.5 (stale)"
    )
    assert judge(POD, []) == Result(False, "does not resolve")
    nxdomain = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert judge(POD, None, nxdomain) == Result(False, "does not resolve")
    again = socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert judge(POD, None, again).detail == (
        "lookup failed (Temporary failure in name resolution)"
    )
    v6 = Check("w-1.sub", frozenset({"fd00::0:7"}), "u")
    assert judge(v6, ["fd00::7"]).ok
    # No IP to compare with (--resolve-self NAME outside a pod): resolving is enough.
    assert judge(Check("x", frozenset(), "self"), ["1.2.3.4"]).ok


def test_backoff_grows_then_caps() -> None:
    delays = [dns.backoff(n) for n in range(1, dns.LATE_AFTER + 5)]
    assert 0.04 <= delays[0] <= 0.06
    assert delays[1] > delays[0]
    assert all(d <= dns.CAP * 1.2 for d in delays[: dns.LATE_AFTER - 1])
    assert max(delays) <= dns.LATE_CAP * 1.2
    assert delays[-1] >= dns.LATE_CAP * 0.8
    # Many failing names: the cap grows so that retries stay under MAX_RATE a second.
    assert dns.backoff(40, failing=1000) >= 1000 / dns.MAX_RATE * 0.8
    assert dns.backoff(1, failing=1000) <= 0.06


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_parallelism_is_bounded_and_failures_are_retried() -> None:
    running = 0
    peak = 0
    lock = threading.Lock()
    release = threading.Event()
    answers: dict[str, list[str]] = {}

    def lookup(name: str) -> list[str]:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        release.wait(5)
        with lock:
            running -= 1
        if name not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return answers[name]

    checks = [Check(f"w-{i}.sub", frozenset({f"10.0.0.{i}"}), f"u{i}") for i in range(10)]
    checker = Checker(parallelism=3, lookup=lookup)
    try:
        checker.want(checks, time.monotonic())
        wait_until(lambda: running == 3)
        checker.want(checks, time.monotonic())  # nothing more while 3 are in flight
        assert checker.lookups == 3
        release.set()
        for i in range(0, 10, 2):
            answers[f"w-{i}.sub"] = [f"10.0.0.{i}"]
        # Keep asking (the waiter's loop does) until every check has a result.
        deadline = time.monotonic() + 5
        while any(checker.result(c) is None for c in checks):
            assert time.monotonic() < deadline
            checker.want(checks, time.monotonic())
            time.sleep(0.01)
        assert peak == 3
        for i in range(1, 10, 2):
            answers[f"w-{i}.sub"] = [f"10.0.0.{i}"]
        # The failures are retried (backoff) until they pass; passed ones are not looked up again.
        while not all((r := checker.result(c)) is not None and r.ok for c in checks):
            assert time.monotonic() < deadline
            checker.want(checks, time.monotonic())
            time.sleep(0.01)
        before = checker.lookups
        checker.want(checks, time.monotonic())
        assert checker.lookups == before
        assert checker.next_due() is None
    finally:
        release.set()
        checker.close()


def test_unwanted_checks_are_forgotten() -> None:
    checker = Checker(parallelism=2, lookup=lambda _n: ["10.0.0.5"])
    try:
        checker.want([POD], time.monotonic())
        wait_until(lambda: checker.result(POD) is not None)
        recreated = Check("w-0.sub", frozenset({"10.0.0.6"}), "uid-2")
        checker.want([recreated], time.monotonic())
        assert checker.result(POD) is None
        wait_until(lambda: checker.result(recreated) is not None)
        assert not checker.result(recreated).ok  # type: ignore[union-attr]
    finally:
        checker.close()
