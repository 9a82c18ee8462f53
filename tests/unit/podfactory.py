"""Pod objects as the API returns them, for the selection and hostfile unit tests."""

from __future__ import annotations

from typing import Any

Pod = dict[str, Any]


def container(name: str = "main", **resources: dict[str, str]) -> dict[str, Any]:
    """A container; ``limits={...}`` / ``requests={...}``."""
    return {"name": name, "image": "x", "resources": dict(resources)}


def make_pod(
    name: str,
    *,
    gpus: int | str | None = None,
    containers: list[dict[str, Any]] | None = None,
    init: list[dict[str, Any]] | None = None,
    owner: tuple[str, str, str] | None = None,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    namespace: str = "ns1",
    node: str | None = "node-0",
    ip: str | None = "10.0.0.1",
    ready: bool = True,
    phase: str = "Running",
    hostname: str | None = None,
    subdomain: str | None = None,
    deleting: bool = False,
) -> Pod:
    """``owner`` is (kind, name, uid) of the controller."""
    if containers is None:
        limits = {"nvidia.com/gpu": str(gpus)} if gpus is not None else {}
        containers = [container(limits=limits) if limits else container()]
    meta: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "uid": f"uid-{name}",
        "labels": dict(labels or {}),
        "annotations": dict(annotations or {}),
    }
    if owner:
        kind, oname, uid = owner
        meta["ownerReferences"] = [{"kind": kind, "name": oname, "uid": uid, "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    if node:
        spec["nodeName"] = node
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    conditions = [
        {"type": "PodScheduled", "status": "True" if node else "False"},
        {"type": "Ready", "status": "True" if ready else "False"},
    ]
    if not node:
        conditions[0].update(
            reason="Unschedulable",
            message="0/4 nodes are available: 4 Insufficient nvidia.com/gpu.",
        )
    status: dict[str, Any] = {"phase": phase if node else "Pending", "conditions": conditions}
    if ip and node:
        status["podIP"] = ip
        status["podIPs"] = [{"ip": ip}]
    return {"metadata": meta, "spec": spec, "status": status}


def sts_pod(sts: str, ordinal: int, *, gpus: int | None = 4, **kw: Any) -> Pod:
    """A StatefulSet pod: name <sts>-<ordinal>, hostname == name, subdomain = the service."""
    labels = {"app": sts, "apps.kubernetes.io/pod-index": str(ordinal), **kw.pop("labels", {})}
    kw.setdefault("subdomain", f"{sts}-svc")
    kw.setdefault("ip", f"10.0.1.{ordinal + 1}")
    return make_pod(
        f"{sts}-{ordinal}",
        gpus=gpus,
        owner=("StatefulSet", sts, f"uid-sts-{sts}"),
        labels=labels,
        hostname=f"{sts}-{ordinal}",
        **kw,
    )


def job_pod(job: str, index: int, suffix: str, *, gpus: int | None = 1, **kw: Any) -> Pod:
    """An Indexed Job pod: random-suffixed name, hostname <job>-<index>."""
    labels = {
        "batch.kubernetes.io/job-name": job,
        "batch.kubernetes.io/controller-uid": f"uid-job-{job}",
        "batch.kubernetes.io/job-completion-index": str(index),
        **kw.pop("labels", {}),
    }
    kw.setdefault("subdomain", job)
    return make_pod(
        f"{job}-{index}-{suffix}",
        gpus=gpus,
        owner=("Job", job, f"uid-job-{job}"),
        labels=labels,
        annotations={"batch.kubernetes.io/job-completion-index": str(index)},
        hostname=f"{job}-{index}",
        **kw,
    )
