"""The devcluster does what the other e2e tests rely on: scheduling with extended resources,
pods/exec through the apiserver to kwok, pod DNS through CoreDNS, RBAC, and the audit log."""

from __future__ import annotations

import json
import ssl
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from devcluster.client import JSON, Cluster, devcluster, wait_for

SMOKE = Path(__file__).resolve().parents[2] / "devcluster" / "smoke" / "compute-nodes.yaml"


def compute_nodes() -> list[JSON]:
    """The seed talk's compute nodes: 4 pods, 4 GPUs and 1 HCA each, behind a headless Service."""
    return list(yaml.safe_load_all(SMOKE.read_text()))


def ready_pods(cluster: Cluster, namespace: str, count: int) -> list[JSON] | None:
    pods = cluster.get("pods", "-n", namespace, "-l", "app=my-hpc-compute-nodes")["items"]
    ready = [
        p
        for p in pods
        if p["status"].get("podIP")
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions", [])
        )
    ]
    return ready if len(ready) == count else None


def test_statefulset_exec_dns_scheduling_rbac(cluster: Cluster, namespace: str) -> None:
    cluster.apply(compute_nodes(), namespace)
    pods = wait_for(
        lambda: ready_pods(cluster, namespace, 4), timeout=90, what="4 Ready pods with IPs"
    )
    by_name = {p["metadata"]["name"]: p for p in pods}
    assert sorted(by_name) == [f"my-cnode-{i}" for i in range(4)]
    # The real scheduler placed them: one per node, since each node has exactly 4 GPUs.
    assert len({p["spec"]["nodeName"] for p in pods}) == 4

    # pods/exec: apiserver -> kwok -> a process on this machine; output and exit code back.
    proc = cluster.kubectl(
        "exec", "-n", namespace, "my-cnode-1", "--", "sh", "-c", "echo ok; exit 3", check=False
    )
    assert proc.stdout == b"ok\n", proc.stderr
    assert proc.returncode == 3, proc.stderr
    execs = cluster.exec_events(namespace, "my-cnode-1")
    assert execs, "the exec is not in the apiserver's audit log"
    assert execs[-1]["user"]["username"] == "kubernetes-admin"

    # Pod DNS through CoreDNS, short form via the search domains, and the full name.
    ip = by_name["my-cnode-1"]["status"]["podIP"]
    assert cluster.resolve(namespace, "my-cnode-1.my-hpc-cluster") == [ip]
    fqdn = f"my-cnode-1.my-hpc-cluster.{namespace}.svc.{cluster.state['cluster_domain']}"
    assert cluster.resolve(namespace, fqdn) == [ip]
    assert cluster.resolve(namespace, "my-cnode-9.my-hpc-cluster") == []

    # A fifth pod asking for more GPUs than any node has stays Pending, Unschedulable.
    too_big: JSON = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-big"},
        "spec": {
            "containers": [
                {
                    "name": "c",
                    "image": "k8smpi/cpu:dev",
                    "resources": {"limits": {"nvidia.com/gpu": "5"}},
                }
            ]
        },
    }
    cluster.apply([too_big], namespace)

    def unschedulable() -> JSON | None:
        pod = cluster.get("pod", "too-big", "-n", namespace)
        for c in pod["status"].get("conditions", []):
            if c["type"] == "PodScheduled" and c["status"] == "False":
                return pod
        return None

    pod = wait_for(unschedulable, timeout=60, what="too-big to be marked unschedulable")
    cond = next(c for c in pod["status"]["conditions"] if c["type"] == "PodScheduled")
    assert cond["reason"] == "Unschedulable"
    assert "nvidia.com/gpu" in cond["message"]
    assert pod["status"]["phase"] == "Pending"

    # A service account with no RBAC gets 403 for pods/exec, both verbs the apiserver checks.
    cluster.kubectl("create", "serviceaccount", "no-rbac", "-n", namespace)
    token = cluster.kubectl("create", "token", "no-rbac", "-n", namespace).stdout.decode().strip()
    for method in ("POST", "GET"):
        status, body = exec_request(cluster, token, namespace, "my-cnode-1", method)
        assert status == 403, body
        assert body.get("reason") == "Forbidden"
        assert f"system:serviceaccount:{namespace}:no-rbac" in body.get("message", "")
    sa_kubeconfig = cluster.token_kubeconfig(token, namespace)
    denied = cluster.kubectl(
        "exec", "my-cnode-1", "--", "true", check=False, kubeconfig=sa_kubeconfig
    )
    # kubectl looks the pod up first, which this account may not do either.
    assert denied.returncode != 0
    assert b"Error from server (Forbidden)" in denied.stderr, denied.stderr


def exec_request(
    cluster: Cluster, token: str, namespace: str, pod: str, method: str
) -> tuple[int, dict[str, Any]]:
    """One raw pods/exec request with a bearer token; returns the HTTP status and Status body."""
    server = cluster.state["server"]
    query = urllib.parse.urlencode({"command": "true", "stdout": "true"})
    url = f"{server}/api/v1/namespaces/{namespace}/pods/{pod}/exec?{query}"
    req = urllib.request.Request(  # noqa: S310 - https to our own apiserver
        url, method=method, headers={"Authorization": f"Bearer {token}"}
    )
    ctx = ssl.create_default_context(cafile=cluster.state["ca"])
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as resp:  # noqa: S310
            return resp.status, {}
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def _running(pid: int) -> bool:
    """Alive and not a zombie (an init that does not reap would leave those behind)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.restarts_cluster
def test_down_leaves_no_process_and_up_restarts(cluster: Cluster) -> None:
    if cluster.root is None:
        pytest.fail("this test needs the devcluster, not an external KUBECONFIG", pytrace=False)
    pids = cluster.state["pids"]
    assert pids and all(pids.values()), f"not every component was running: {pids}"
    assert devcluster("down", timeout=120).returncode == 0
    alive = [name for name, pid in pids.items() if _running(pid)]
    assert alive == [], f"still running after down: {alive}"
    # Anything still running from this devcluster's folder (its components' cwd), by any pid.
    leftovers = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = (proc / "cwd").readlink()
            except OSError:
                continue
            if cwd == cluster.root and _running(int(proc.name)):
                leftovers.append(f"{proc.name}:{(proc / 'comm').read_text().strip()}")
    assert leftovers == [], f"devcluster processes still running: {leftovers}"
    assert devcluster("up", timeout=300).returncode == 0
