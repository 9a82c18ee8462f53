"""The wait as a state machine: a scripted list + watch, a fake resolver, real threads."""

from __future__ import annotations

import copy
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from k8smpi_runtime import hosts
from k8smpi_runtime.errors import ForbiddenError, GoneError, TransportError
from k8smpi_runtime.selection import Target
from k8smpi_runtime.waitfor import exitcodes
from k8smpi_runtime.waitfor.progress import Silent
from k8smpi_runtime.waitfor.readiness import Rules
from k8smpi_runtime.waitfor.waiting import Outcome, Settings, Waiter
from tests.unit.podfactory import make_pod, sts_pod

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from k8smpi_runtime.selection import Pod

END = object()
STS = Target(
    namespace="ns1",
    description="statefulset cnode",
    label_selector="app=cnode",
    expected=3,
    owner_uid="uid-sts-cnode",
)


class ScriptedApi:
    """list() answers from ``lists`` (or the current pods); watch() from a queue of events."""

    def __init__(self, pods: list[Pod]) -> None:
        self.pods = pods
        self.version = 10
        self.lists: list[Any] = []
        self.events: queue.Queue[Any] = queue.Queue()
        self.calls: list[tuple[str, str]] = []

    def list(
        self, path: str, params: Mapping[str, str | int | bool] | None = None, *, limit: int = 500
    ) -> tuple[list[Pod], str]:
        self.calls.append(("list", ""))
        if self.lists:
            item = self.lists.pop(0)
            if isinstance(item, Exception):
                raise item
        return copy.deepcopy(self.pods), str(self.version)

    def watch(
        self,
        path: str,
        params: Mapping[str, str | int | bool] | None = None,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> Iterator[dict[str, Any]]:
        self.calls.append(("watch", resource_version))
        while True:
            try:
                item = self.events.get(timeout=30)
            except queue.Empty:
                return
            if item is END:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def send(self, kind: str, pod: Pod) -> None:
        self.version += 1
        pod = copy.deepcopy(pod)
        pod["metadata"]["resourceVersion"] = str(self.version)
        self.events.put({"type": kind, "object": pod})


class Resolver:
    def __init__(self, answers: dict[str, list[str]] | None = None) -> None:
        self.answers = answers if answers is not None else {}

    def __call__(self, name: str) -> list[str]:
        import socket  # noqa: PLC0415

        if name not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.answers[name]


def sts_answers(n: int = 3) -> dict[str, list[str]]:
    return {f"cnode-{i}.cnode-svc": [f"10.0.1.{i + 1}"] for i in range(n)}


def waiter(
    api: ScriptedApi,
    *,
    timeout: float = 5.0,
    target: Target = STS,
    rules: Rules | None = None,
    resolver: Resolver | None = None,
    namespace_exists: Any = lambda: None,
) -> Waiter:
    return Waiter(
        target=target,
        settings=Settings(timeout=timeout, rules=rules or Rules(statefulset="cnode")),
        api=api,
        progress=Silent(),
        lookup=resolver or Resolver(sts_answers()),
        namespace_exists=namespace_exists,
    )


class Running:
    """A waiter running in a thread, so the test can feed events meanwhile."""

    def __init__(self, w: Waiter) -> None:
        self.outcome: Outcome | None = None
        self.finished_at = 0.0
        self.thread = threading.Thread(target=self._run, args=(w,), daemon=True)
        self.thread.start()

    def _run(self, w: Waiter) -> None:
        self.outcome = w.run()
        self.finished_at = time.monotonic()

    def still_waiting(self, for_s: float = 0.3) -> bool:
        self.thread.join(for_s)
        return self.thread.is_alive()

    def result(self, timeout: float = 10) -> Outcome:
        self.thread.join(timeout)
        assert self.outcome is not None, "the wait did not end"
        return self.outcome


def test_ready_and_resolvable_exits_ok_with_one_list_and_one_watch() -> None:
    api = ScriptedApi([sts_pod("cnode", i) for i in range(3)])
    outcome = waiter(api).run()
    assert outcome.code == exitcodes.OK, outcome.message
    assert "3/3 pods Ready and resolvable" in outcome.message
    assert [c[0] for c in api.calls] == ["list", "watch"]
    assert outcome.stats["dns_lookups"] == 3


def test_exits_as_soon_as_the_last_pod_turns_ready() -> None:
    last = sts_pod("cnode", 2, ready=False)
    api = ScriptedApi([sts_pod("cnode", 0), sts_pod("cnode", 1), last])
    run = Running(waiter(api))
    assert run.still_waiting()
    ready = copy.deepcopy(last)
    ready["status"]["conditions"][1]["status"] = "True"
    sent = time.monotonic()
    api.send("MODIFIED", ready)
    assert run.result().code == exitcodes.OK
    assert run.finished_at - sent < 0.5


def test_a_recreated_pod_counts_only_when_the_new_one_is_ready() -> None:
    pods = [sts_pod("cnode", i) for i in range(3)]
    api = ScriptedApi(pods)
    resolver = Resolver({})
    run = Running(waiter(api, resolver=resolver))
    # DNS not there yet: cnode-2 gets deleted and recreated meanwhile.
    assert run.still_waiting()
    old = copy.deepcopy(pods[2])
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    api.send("MODIFIED", old)
    api.send("DELETED", old)
    new = sts_pod("cnode", 2, ready=False, ip="10.0.1.77")
    new["metadata"]["uid"] = "uid-cnode-2-new"
    api.send("ADDED", new)
    answers = sts_answers()
    resolver.answers.update(answers)  # the old IP for cnode-2: a stale record
    assert run.still_waiting()
    new_ready = copy.deepcopy(new)
    new_ready["status"]["conditions"][1]["status"] = "True"
    api.send("MODIFIED", new_ready)
    assert run.still_waiting(0.5)  # Ready, but DNS still says 10.0.1.3
    resolver.answers["cnode-2.cnode-svc"] = ["10.0.1.77"]
    assert run.result().code == exitcodes.OK


def test_a_stale_record_is_not_ready_and_times_out_with_the_table() -> None:
    api = ScriptedApi([sts_pod("cnode", i) for i in range(3)])
    answers = sts_answers()
    answers["cnode-1.cnode-svc"] = ["10.0.1.200"]
    outcome = waiter(api, timeout=0.8, resolver=Resolver(answers)).run()
    assert outcome.code == exitcodes.TIMEOUT
    assert outcome.message == (
        "timed out after 0.8s: 1 of 3 pods not ready (statefulset cnode in namespace ns1)"
    )
    assert [(r.pod, r.why) for r in outcome.rows] == [
        (
            "cnode-1",
            "DNS: cnode-1.cnode-svc resolves to 10.0.1.200, not the pod's IP 10.0.1.2 (stale)",
        )
    ]


def test_unschedulable_fails_fast_after_the_grace() -> None:
    pods = [sts_pod("cnode", 0), sts_pod("cnode", 1), sts_pod("cnode", 2, node=None, ready=False)]
    api = ScriptedApi(pods)
    rules = Rules(unschedulable_grace=0.5, statefulset="cnode")
    start = time.monotonic()
    outcome = waiter(api, timeout=20, rules=rules).run()
    assert outcome.code == exitcodes.POD_FAILED
    assert time.monotonic() - start < 3
    assert outcome.message == (
        "pod cnode-2 cannot become ready: Unschedulable: 0/4 nodes are available: 4 Insufficient "
        "nvidia.com/gpu. (for longer than --unschedulable-grace 0.5s)"
    )
    assert outcome.rows[0].pod == "cnode-2"


def test_a_failed_pod_fails_fast() -> None:
    target = Target(namespace="ns1", description="pods", label_selector="app=x", expected=2)
    failed = make_pod("b", labels={"app": "x"}, phase="Failed", ready=False)
    api = ScriptedApi([make_pod("a", labels={"app": "x"}), failed])
    outcome = waiter(api, target=target, timeout=20, rules=Rules(dns=False)).run()
    assert outcome.code == exitcodes.POD_FAILED
    assert outcome.message == "pod b cannot become ready: phase Failed"


def test_watch_resumes_from_the_last_version_and_relists_only_on_410() -> None:
    pods = [sts_pod("cnode", 0), sts_pod("cnode", 1), sts_pod("cnode", 2, ready=False)]
    api = ScriptedApi(pods)
    run = Running(waiter(api, timeout=20))
    assert run.still_waiting()
    api.send("MODIFIED", pods[0])  # version 11
    api.events.put(TransportError("API server 127.0.0.1:6443 refused the connection"))
    assert run.still_waiting(0.6)
    assert ("watch", "11") in api.calls
    ready = copy.deepcopy(pods[2])
    ready["status"]["conditions"][1]["status"] = "True"
    api.pods[2] = ready  # what the relist sees
    api.events.put(GoneError("too old resource version", status=410))
    outcome = run.result()
    assert outcome.code == exitcodes.OK
    assert [c[0] for c in api.calls] == ["list", "watch", "watch", "list", "watch"]
    assert outcome.stats["relists"] == 1


def test_api_down_at_start_is_retried_then_reported() -> None:
    api = ScriptedApi([sts_pod("cnode", i) for i in range(3)])
    api.lists = [TransportError("API server x refused the connection")] * 100
    outcome = waiter(api, timeout=0.7).run()
    assert outcome.code == exitcodes.API
    assert "could not list pods in namespace ns1 within 0.7s" in outcome.message
    assert "refused the connection" in outcome.message
    api = ScriptedApi([sts_pod("cnode", i) for i in range(3)])
    api.lists = [TransportError("refused")] * 2
    assert waiter(api).run().code == exitcodes.OK


def test_an_untrusted_certificate_is_not_waited_out() -> None:
    # A TLS verification failure stays one: fail at once, not at the 20 s deadline.
    api = ScriptedApi([sts_pod("cnode", i) for i in range(3)])
    api.lists = [
        TransportError("TLS verification of https://k failed: self-signed", retryable=False)
    ] * 100
    outcome = waiter(api, timeout=20).run()
    assert outcome.code == exitcodes.API
    assert "TLS verification of https://k failed" in outcome.message
    assert api.calls == [("list", "")]  # one try, no retry


def test_access_denied_is_one_line_naming_who_and_what() -> None:
    api = ScriptedApi([])
    api.lists = [
        ForbiddenError(
            'pods is forbidden: User "system:serviceaccount:ns1:launcher" cannot list resource '
            '"pods" in API group "" in the namespace "ns1"',
            status=403,
        )
    ]
    outcome = waiter(api).run()
    assert outcome.code == exitcodes.DENIED
    assert outcome.message == (
        "API access denied: service account ns1/launcher may not list pods in namespace ns1 "
        "(k8s-waitfor needs pods: get, list, watch)"
    )


def test_no_pods() -> None:
    target = Target(namespace="nope", description="pods matching app=x", label_selector="app=x")
    outcome = waiter(ScriptedApi([]), target=target, namespace_exists=lambda: False).run()
    assert (outcome.code, outcome.message) == (exitcodes.NOT_FOUND, "namespace nope not found")
    outcome = waiter(ScriptedApi([]), target=target, timeout=0.5).run()
    assert outcome.code == exitcodes.NOT_FOUND
    assert outcome.message == "no pods match pods matching app=x in namespace nope after 0.5s"


def test_the_launcher_pod_itself_need_not_be_ready() -> None:
    pods = [sts_pod("cnode", 0, ready=False), sts_pod("cnode", 1), sts_pod("cnode", 2)]
    rules = Rules(self_ref=hosts.parse_host("cnode-0"), statefulset="cnode")
    assert waiter(ScriptedApi(pods), rules=rules).run().code == exitcodes.OK


@pytest.mark.parametrize("dns", [True, False])
def test_no_dns_skips_lookups(dns: bool) -> None:
    pods = [sts_pod("cnode", i) for i in range(3)]
    rules = Rules(dns=dns, statefulset="cnode")
    outcome = waiter(ScriptedApi(pods), rules=rules, resolver=Resolver({}), timeout=0.5).run()
    assert outcome.code == (exitcodes.TIMEOUT if dns else exitcodes.OK)
    assert (outcome.stats["dns_lookups"] > 0) is dns
