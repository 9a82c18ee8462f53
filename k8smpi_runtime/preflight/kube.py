"""What only the API server knows: the pod's own requests, pods/exec permission on each
worker (SelfSubjectAccessReview) and the workers' DNS names.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from k8smpi_runtime.errors import K8smpiError
from k8smpi_runtime.hostfile.slots import parse_quantity, resource_amount
from k8smpi_runtime.preflight.model import FAIL, OK, SKIP, Finding
from k8smpi_runtime.selection import pod_name
from k8smpi_runtime.waitfor import dns
from k8smpi_runtime.waitfor.readiness import dns_names, pod_ips

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from k8smpi_runtime.kube.rest import Api
    from k8smpi_runtime.selection import Pod

GPU = "nvidia.com/gpu"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


def gpus_of(pod: Pod, resource: str = GPU) -> int:
    return math.floor(resource_amount(pod, resource))


def rdma_of(pod: Pod) -> int:
    """The pod's RDMA device resources (``rdma/*``: the shared-device and SR-IOV plugins)."""
    total = 0
    for container in (pod.get("spec") or {}).get("containers") or []:
        resources = container.get("resources") or {}
        limits = resources.get("limits") or resources.get("requests") or {}
        for name, value in limits.items():
            if name.startswith("rdma/"):
                total += math.floor(parse_quantity(value))
    return total


def own_pod(api: Api, namespace: str, name: str) -> Pod | None:
    try:
        return api.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
    except K8smpiError:
        return None


def may_exec(api: Api, namespace: str, pod: str) -> tuple[bool, str]:
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {
            "resourceAttributes": {
                "namespace": namespace,
                "verb": "create",
                "resource": "pods",
                "subresource": "exec",
                "name": pod,
            }
        },
    }
    answer = api.request("POST", SSAR, body=body)
    status = answer.get("status") or {}
    return bool(status.get("allowed")), str(status.get("reason") or "")


def check_exec_rbac(api: Api, namespace: str, pods: Sequence[Pod]) -> Finding:
    """pods/exec ``create`` on every worker, asked as the credentials in use."""
    denied: list[str] = []
    try:
        for pod in pods:
            allowed, _ = may_exec(api, namespace, pod_name(pod))
            if not allowed:
                denied.append(pod_name(pod))
    except K8smpiError as e:
        return Finding("exec-rbac", FAIL, f"SelfSubjectAccessReview failed: {e}", "an answer")
    if denied:
        return Finding(
            "exec-rbac",
            FAIL,
            f"may not create pods/exec on {', '.join(denied[:5])}"
            + (f" and {len(denied) - 5} more" if len(denied) > 5 else ""),
            f"allowed on all {len(pods)} workers",
            "kubexec needs pods/exec: create, get on each worker (the Role's resourceNames "
            "must follow the worker count)",
        )
    return Finding("exec-rbac", OK, f"create pods/exec allowed on {len(pods)} workers")


def check_dns(
    pods: Sequence[Pod],
    *,
    parallelism: int = 16,
    lookup: Callable[[str], list[str]] = dns.getaddrinfo_addresses,
) -> Finding:
    """Each worker's DNS names resolve to its current IP (the waiter's judgement)."""
    checks = [
        (pod_name(p), dns.Check(name, pod_ips(p), str((p.get("metadata") or {}).get("uid", ""))))
        for p in pods
        for name in dns_names(p)
    ]
    if not checks:
        return Finding("dns", SKIP, "no pod has a DNS name (no spec.subdomain)")

    def one(check: dns.Check) -> dns.Result:
        try:
            return dns.judge(check, lookup(check.name))
        except OSError as e:
            return dns.judge(check, None, e)

    with ThreadPoolExecutor(max(1, parallelism), thread_name_prefix="dns") as pool:
        results = list(pool.map(one, [c for _, c in checks]))
    bad = [f"{c.name} {r.detail}" for (_, c), r in zip(checks, results, strict=True) if not r.ok]
    if bad:
        return Finding(
            "dns",
            FAIL,
            "; ".join(bad[:3]) + (f" (+{len(bad) - 3})" if len(bad) > 3 else ""),
            f"all {len(checks)} names resolve to their pods",
            "check the headless Service (publishNotReadyAddresses) and the pods' subdomain",
        )
    return Finding("dns", OK, f"{len(checks)} names resolve to their pods")
