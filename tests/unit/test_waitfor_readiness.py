"""k8s-waitfor's readiness rules, on pod objects: pure functions, no cluster."""

from __future__ import annotations

from k8smpi_runtime import hosts
from k8smpi_runtime.selection import Target, host_refs
from k8smpi_runtime.waitfor.dns import Check, Result
from k8smpi_runtime.waitfor.readiness import (
    Rules,
    assess,
    container_trouble,
    dns_form,
    dns_names,
    has_ended_for_good,
    why_not_ready,
)
from tests.unit.podfactory import make_pod, sts_pod

STS = Target(
    namespace="ns1",
    description="statefulset cnode",
    label_selector="app=cnode",
    expected=3,
    owner_uid="uid-sts-cnode",
)


def ok(_check: Check) -> Result:
    return Result(True)


def waiting(pod: dict[str, object], reason: str, message: str = "") -> dict[str, object]:
    status = pod["status"]
    assert isinstance(status, dict)
    status["containerStatuses"] = [
        {"name": "main", "state": {"waiting": {"reason": reason, "message": message}}}
    ]
    return pod


def test_ready_means_ready_condition_and_dns_for_exactly_the_expected_pods() -> None:
    pods = [sts_pod("cnode", i) for i in range(3)]
    a = assess(STS.pick(pods), dns_result=ok)
    assert a.done and (a.ready, a.resolved, a.total) == (3, 3, 3)
    assert {c.name for c in a.checks} == {f"cnode-{i}.cnode-svc" for i in range(3)}
    assert all(c.ips == frozenset({f"10.0.1.{int(c.name[6]) + 1}"}) for c in a.checks)


def test_running_but_not_ready_is_not_ready() -> None:
    pods = [sts_pod("cnode", 0), sts_pod("cnode", 1), sts_pod("cnode", 2, ready=False)]
    a = assess(STS.pick(pods), dns_result=ok)
    assert not a.done
    assert [(r.pod, r.phase, r.why) for r in a.rows] == [("cnode-2", "Running", "not Ready")]
    # DNS is looked up for Ready pods only.
    assert "cnode-2.cnode-svc" not in {c.name for c in a.checks}


def test_missing_statefulset_pods_are_named() -> None:
    a = assess(STS.pick([sts_pod("cnode", 0)]), rules=Rules(statefulset="cnode"), dns_result=ok)
    assert not a.done
    assert [(r.pod, r.why) for r in a.rows] == [
        ("cnode-1", "no such pod yet"),
        ("cnode-2", "no such pod yet"),
    ]
    plain = Target(
        namespace="ns1", description="pods matching app=x", label_selector="app=x", expected=4
    )
    rows = assess(plain.pick([make_pod("a", labels={"app": "x"})]), dns_result=ok).rows
    assert rows[-1].why == "expected 4 pods, 1 exist: 3 pods not created yet"


def test_extra_pods_are_not_ready() -> None:
    pods = [sts_pod("cnode", i) for i in range(4)]
    a = assess(STS.pick(pods), dns_result=ok)
    assert not a.done
    assert "4 pods match but 3 are expected" in a.rows[-1].why


def test_a_bare_selector_needs_at_least_one_pod() -> None:
    target = Target(namespace="ns1", description="pods", label_selector="app=x")
    assert not assess(target.pick([])).done
    assert assess(target.pick([])).no_pods
    assert assess(target.pick([make_pod("a", labels={"app": "x"})]), dns_result=ok).done


def test_a_recreated_pod_counts_only_when_the_new_one_is_ready() -> None:
    old = sts_pod("cnode", 2, deleting=True)
    new = sts_pod("cnode", 2, ready=False, ip="10.0.1.99")
    new["metadata"]["uid"] = "uid-new"
    pods = [sts_pod("cnode", 0), sts_pod("cnode", 1)]
    # The old one being deleted does not count, and is not fatal.
    a = assess(STS.pick([*pods, old]), ended=[*pods, old], dns_result=ok)
    assert not a.done and not a.fatal
    assert a.rows[0].pod == "cnode-2" and a.rows[0].phase == "Terminating"
    a = assess(STS.pick([*pods, new]), dns_result=ok)
    assert not a.done and a.rows[0].why == "not Ready"
    new["status"]["conditions"][1]["status"] = "True"
    a = assess(STS.pick([*pods, new]), dns_result=ok)
    assert a.done
    assert Check("cnode-2.cnode-svc", frozenset({"10.0.1.99"}), "uid-new") in a.checks


def test_dns_results_decide() -> None:
    pods = [sts_pod("cnode", i) for i in range(3)]

    def results(check: Check) -> Result | None:
        if check.name.startswith("cnode-0"):
            return None
        if check.name.startswith("cnode-1"):
            return Result(False, "does not resolve")
        return Result(False, "resolves to 10.9.9.9, not the pod's IP 10.0.1.3 (stale)")

    a = assess(STS.pick(pods), dns_result=results)
    assert not a.done and (a.ready, a.resolved) == (3, 0)
    assert [r.why for r in a.rows] == [
        "DNS: cnode-0.cnode-svc checking",
        "DNS: cnode-1.cnode-svc does not resolve",
        "DNS: cnode-2.cnode-svc resolves to 10.9.9.9, not the pod's IP 10.0.1.3 (stale)",
    ]
    assert assess(STS.pick(pods), rules=Rules(dns=False)).done


def test_dns_names_of_a_pod_and_of_host_words() -> None:
    pod = make_pod("trainer-0-abc", hostname="trainer-0", subdomain="trainer")
    assert dns_names(pod) == ["trainer-0.trainer"]
    assert dns_names(make_pod("plain")) == []
    # The forms a hostfile uses: with a dot only; IPs and bare pod names are not DNS's business.
    assert dns_form("alice@w-1.sub.ns1.svc.cluster.local.") == "w-1.sub.ns1.svc.cluster.local."
    assert dns_form("w-1") is None
    assert dns_form("10.0.0.7") is None
    assert dns_names(pod, ["trainer-0.trainer.ns1.svc.example.org", "trainer-0.trainer"]) == [
        "trainer-0.trainer",
        "trainer-0.trainer.ns1.svc.example.org",
    ]


def test_host_lists_check_the_names_the_hostfile_uses() -> None:
    pods = [sts_pod("cnode", 0), sts_pod("cnode", 1)]
    target = Target(
        namespace="ns1",
        description="hosts",
        hosts=host_refs(["cnode-0.cnode-svc.ns1.svc.cluster.local", "cnode-1", "cnode-7"], "ns1"),
    )
    a = assess(target.pick(pods), dns_result=ok)
    assert {c.name for c in a.checks} == {
        "cnode-0.cnode-svc",
        "cnode-0.cnode-svc.ns1.svc.cluster.local",
        "cnode-1.cnode-svc",
    }
    assert [(r.pod, r.why) for r in a.rows] == [("cnode-7", "no such pod")]


def test_the_launcher_itself_need_not_be_ready() -> None:
    pods = [sts_pod("cnode", 0, ready=False), sts_pod("cnode", 1), sts_pod("cnode", 2)]
    rules = Rules(self_ref=hosts.parse_host("cnode-0"))
    a = assess(STS.pick(pods), rules=rules, dns_result=lambda _c: Result(False, "does not resolve"))
    assert a.ready == 3
    assert "publishNotReadyAddresses" in a.rows[0].why
    assert assess(STS.pick(pods), rules=rules, dns_result=ok).done


def test_unschedulable_fails_only_after_the_grace() -> None:
    pods = [sts_pod("cnode", 0), sts_pod("cnode", 1), sts_pod("cnode", 2, node=None, ready=False)]
    rules = Rules(unschedulable_grace=30)
    a = assess(STS.pick(pods), rules=rules, dns_result=ok, unschedulable_for=lambda _p: 10)
    assert not a.fatal
    assert a.rows[0].why == "Unschedulable: 0/4 nodes are available: 4 Insufficient nvidia.com/gpu."
    a = assess(STS.pick(pods), rules=rules, dns_result=ok, unschedulable_for=lambda _p: 31)
    assert [(r.pod, r.phase) for r in a.fatal] == [("cnode-2", "Pending")]


def test_image_pull_and_crash_loops_are_fatal_creating_is_not() -> None:
    for reason, fatal in [
        ("ImagePullBackOff", True),
        ("ErrImagePull", True),
        ("CrashLoopBackOff", True),
        ("ContainerCreating", False),
        ("CreateContainerConfigError", False),
    ]:
        pods = [sts_pod("cnode", 0), sts_pod("cnode", 1)]
        pods.append(waiting(sts_pod("cnode", 2, ready=False), reason, "back-off pulling x"))
        a = assess(STS.pick(pods), dns_result=ok)
        assert bool(a.fatal) is fatal, reason
        assert reason in a.rows[0].why
    pod = waiting(make_pod("p", ready=False), "CrashLoopBackOff", "back-off 5m0s")
    assert container_trouble(pod) == ("container main: CrashLoopBackOff: back-off 5m0s", True)
    assert why_not_ready(make_pod("q", node=None)).startswith("Unschedulable: 0/4")


def test_an_ended_pod_that_is_needed_fails_the_wait() -> None:
    target = Target(namespace="ns1", description="pods", label_selector="app=x", expected=2)
    live = make_pod("a", labels={"app": "x"})
    failed = make_pod("b", labels={"app": "x"}, phase="Failed", ready=False)
    failed["status"].update(reason="Evicted", message="The node was low on memory.")
    a = assess(target.pick([live, failed]), ended=[live, failed], dns_result=ok)
    assert [(r.pod, r.phase, r.why) for r in a.fatal] == [
        ("b", "Failed", "Evicted: The node was low on memory.")
    ]
    # Not needed (the selection is complete without it): ignored.
    c = make_pod("c", labels={"app": "x"})
    assert assess(target.pick([live, c, failed]), ended=[failed], dns_result=ok).done
    # A StatefulSet's failed pod is replaced by its controller: wait for the replacement.
    sts_failed = sts_pod("cnode", 2, phase="Failed", ready=False)
    assert not has_ended_for_good(sts_failed)
    pods = [sts_pod("cnode", 0), sts_pod("cnode", 1), sts_failed]
    a = assess(STS.pick(pods), ended=pods, dns_result=ok)
    assert not a.fatal and not a.done


def test_an_ended_host_of_a_host_list_is_fatal() -> None:
    done = make_pod("w-1", phase="Succeeded", ready=False)
    done["status"]["containerStatuses"] = [
        {"name": "main", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}
    ]
    target = Target(namespace="ns1", description="hosts", hosts=host_refs(["w-0", "w-1"], "ns1"))
    a = assess(target.pick([make_pod("w-0"), done]), ended=[done], dns_result=ok)
    assert [(r.pod, r.why) for r in a.fatal] == [
        ("w-1 (w-1)", "container main exited 0 (Completed)")
    ]


def test_extra_checks_must_pass() -> None:
    pods = [sts_pod("cnode", i) for i in range(3)]
    self_check = Check("launcher.svc", frozenset({"10.0.9.9"}), "self")
    a = assess(
        STS.pick(pods),
        dns_result=lambda c: Result(c is not self_check, "does not resolve"),
        extra_checks=[("launcher (self)", self_check)],
    )
    assert not a.done
    assert a.rows[-1].why == "DNS: launcher.svc does not resolve"
    assert self_check in a.checks
