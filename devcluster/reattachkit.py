"""kubexec's re-attach on the real node: pods that run this checkout's kubexec, an API server
crash and its return, and what the audit log says. Shared by the e2e tier
(tests/e2e/test_real_node_reattach.py) and bench/reattach.py.

The real node's images carry the kubexec ``make images`` built; these pods mount this checkout
read-only at /src and put it first on PYTHONPATH, so the image's ``/opt/mpi/bin/kubexec`` (a
console script) runs the code under test, in the launcher pod and in the workers (tree spawn).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import TYPE_CHECKING, Any

from devcluster.client import devcluster, wait_for
from devcluster.workloads import REPO, kubexec_rbac, real_node_pod, running_pods

if TYPE_CHECKING:
    from collections.abc import Mapping

    from devcluster.client import JSON, Cluster

APP = "rj"
"""Every pod's ``app`` label; kubexec's job selector."""
SERVICE = "rw"
KUBEXEC = "/opt/mpi/bin/kubexec"
LEFT = "sh /src/devcluster/session-procs.sh"
"""Lists kubexec's session processes in a pod of :func:`job_pods` (pid and command line)."""


def job_pods(
    cluster: Cluster, namespace: str, workers: int, env: Mapping[str, str] | None = None
) -> list[str]:
    """A launcher pod ``rl`` and ``workers`` worker pods ``rw-<i>`` (hostname and subdomain,
    behind a headless Service, as a StatefulSet's) from the example image (Open MPI 4.1 and
    /opt/app/bin/app), all with the launcher's service account (tree spawn runs kubexec in the
    workers) and this checkout's kubexec; Running and Ready. The workers' names."""
    domain = cluster.state["cluster_domain"]
    variables = {
        "PYTHONPATH": "/src",
        "KUBEXEC_SELECTOR": f"app={APP}",
        # Byte-compiling into a read-only /src fails quietly, on every call: do not try.
        "PYTHONDONTWRITEBYTECODE": "1",
        **(env or {}),
    }
    names = [f"{SERVICE}-{i}" for i in range(workers)]

    def pod(name: str, **spec: Any) -> JSON:
        made = real_node_pod(
            cluster,
            name,
            image="example",
            labels={"app": APP},
            run_as=1000,
            serviceAccountName="launcher",
            volumes=[{"name": "src", "hostPath": {"path": str(REPO), "type": "Directory"}}],
            dnsConfig={"searches": [f"{SERVICE}.{namespace}.svc.{domain}"]},
            **spec,
        )
        container = made["spec"]["containers"][0]
        container["env"] = [{"name": k, "value": v} for k, v in variables.items()]
        container["volumeMounts"] = [{"name": "src", "mountPath": "/src", "readOnly": True}]
        return made

    service: JSON = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE},
        "spec": {"clusterIP": "None", "selector": {"app": APP}, "publishNotReadyAddresses": True},
    }
    objects = [
        *kubexec_rbac("launcher"),
        service,
        pod("rl", hostname="rl", subdomain=SERVICE),
        *(pod(n, hostname=n, subdomain=SERVICE) for n in names),
    ]
    cluster.apply(objects, namespace)
    running_pods(cluster, namespace, f"app={APP}", workers + 1)
    return names


def crash_apiserver() -> float:
    """SIGKILL the API server (a crash: every stream through it is cut at once); the time."""
    done = devcluster("kill", "kube-apiserver", capture=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"devcluster kill kube-apiserver: {done.stderr}")
    return time.time()


def start_apiserver() -> float:
    """Start the API server again and wait until it is healthy; the time it answered."""
    done = devcluster("up", capture=True, timeout=180)
    if done.returncode != 0:
        raise AssertionError(f"devcluster up: {done.stderr}")
    return time.time()


def left_in(cluster: Cluster, namespace: str, pod: str) -> list[str]:
    """The session processes still in ``pod`` (pid and command line each)."""
    ran = cluster.kubectl("exec", "-n", namespace, pod, "--", "sh", "-c", LEFT, check=False)
    if ran.returncode != 0:
        raise AssertionError(f"looking into {pod}: {ran.stderr.decode(errors='replace')}")
    return ran.stdout.decode(errors="replace").splitlines()


def wait_nothing_left(cluster: Cluster, namespace: str, pods: list[str], timeout: float) -> None:
    wait_for(
        lambda: not any(left_in(cluster, namespace, p) for p in pods),
        timeout=timeout,
        interval=1.0,
        what=f"no kubexec session process in {pods}",
    )


def attaches(
    cluster: Cluster, namespace: str, since: float = 0.0, *, started: bool = False
) -> list[JSON]:
    """The audit log's re-attach execs into ``namespace`` (the wrapper in ``attach`` mode)
    asked for after ``since`` (a time.time()): completed ones, or (``started``) those whose
    stream is open, ended or not."""
    from k8smpi_runtime.kubexec import remote  # noqa: PLC0415 - the project's own, not the kit's

    stage = "ResponseStarted" if started else "ResponseComplete"
    found = []
    for event in cluster.audit_events():
        ref = event.get("objectRef", {})
        if (
            event.get("stage") != stage
            or ref.get("subresource") != "exec"
            or ref.get("namespace") != namespace
        ):
            continue
        query = urllib.parse.urlsplit(event["requestURI"]).query
        words = urllib.parse.parse_qs(query).get("command", [])
        attach = words[:3] == ["/bin/sh", "-c", remote.ENTRY] and words[6:7] == ["attach"]
        if attach and stamp(event["requestReceivedTimestamp"]) >= since:
            found.append(event)
    return found


def stamp(rfc3339: str) -> float:
    """An audit timestamp (``2026-11-29T19:00:00.123456Z``) as a time.time()."""
    import datetime  # noqa: PLC0415

    return datetime.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp()
