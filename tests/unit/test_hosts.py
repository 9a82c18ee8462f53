"""Host strings -> the pods they name (kubexec, k8s-waitfor and hostfile-gen share this)."""

from __future__ import annotations

from typing import Any

import pytest

from k8smpi_runtime.hosts import HostError, HostRef, find, matches, parse_host


def pod(
    name: str,
    *,
    hostname: str | None = None,
    subdomain: str | None = None,
    ip: str | None = None,
    deleting: bool = False,
) -> dict[str, Any]:
    spec: dict[str, str] = {}
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    meta: dict[str, str] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"podIP": ip, "podIPs": [{"ip": ip}]} if ip else {}
    return {"metadata": meta, "spec": spec, "status": status}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my-cnode-1", HostRef("my-cnode-1", name="my-cnode-1")),
        ("alice@my-cnode-1", HostRef("alice@my-cnode-1", user="alice", name="my-cnode-1")),
        (
            "my-cnode-1.my-hpc-cluster",
            HostRef("my-cnode-1.my-hpc-cluster", name="my-cnode-1", subdomain="my-hpc-cluster"),
        ),
        (
            "w-0.job.ns1",
            HostRef("w-0.job.ns1", name="w-0", subdomain="job", namespace="ns1"),
        ),
        (
            "w-0.job.ns1.svc",
            HostRef("w-0.job.ns1.svc", name="w-0", subdomain="job", namespace="ns1"),
        ),
        (
            "W-0.Job.ns1.svc.hpc.example.",
            HostRef("W-0.Job.ns1.svc.hpc.example.", name="w-0", subdomain="job", namespace="ns1"),
        ),
        ("a@b@w-0", HostRef("a@b@w-0", user="a@b", name="w-0")),
        ("10.0.3.7", HostRef("10.0.3.7", ip="10.0.3.7")),
        ("bob@fd00::7", HostRef("bob@fd00::7", user="bob", ip="fd00::7")),
        ("[fd00::7]", HostRef("[fd00::7]", ip="fd00::7")),
    ],
)
def test_parse_host(text: str, expected: HostRef) -> None:
    assert parse_host(text) == expected


@pytest.mark.parametrize("text", ["", "@host", "alice@", "a..b", ".x", "w-0.job.ns1.cluster.local"])
def test_parse_host_rejects(text: str) -> None:
    with pytest.raises(HostError):
        parse_host(text)


def test_statefulset_pod_by_name_and_fqdn() -> None:
    p = pod("my-cnode-1", hostname="my-cnode-1", subdomain="my-hpc-cluster", ip="10.0.0.5")
    assert matches(parse_host("my-cnode-1"), p)
    assert matches(parse_host("my-cnode-1.my-hpc-cluster"), p)
    assert matches(parse_host("my-cnode-1.my-hpc-cluster.default.svc.cluster.local"), p)
    assert not matches(parse_host("my-cnode-1.other-service"), p)
    assert matches(parse_host("10.0.0.5"), p)
    assert not matches(parse_host("10.0.0.6"), p)


def test_indexed_job_pod_by_hostname() -> None:
    # Indexed Job pods: name has a random suffix, hostname is <job>-<index>.
    p = pod("workers-2-x7k2p", hostname="workers-2", subdomain="workers")
    assert matches(parse_host("workers-2"), p)
    assert matches(parse_host("workers-2.workers"), p)
    assert matches(parse_host("workers-2-x7k2p"), p)
    assert not matches(parse_host("workers-2-x7k2p.workers"), p)


def test_find_prefers_live_pod() -> None:
    old = pod("w-0", ip="10.0.0.1", deleting=True)
    new = pod("w-0", ip="10.0.0.2")
    assert find(parse_host("w-0"), [old, new]) is new
    assert find(parse_host("w-9"), [old, new]) is None


def test_ipv6_forms_compare_equal() -> None:
    p = pod("w", ip="fd00:0:0::7")
    assert matches(parse_host("fd00::7"), p)
