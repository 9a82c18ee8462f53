"""The real node: ``make images``' images run as pods under kubelet, containerd and runc (issue 10).

Beside the kwok nodes, ``python3 -m devcluster up`` starts ``real-node-0``: pods there are real
containers with their own network namespace and IP on the checkout's bridge, DNS through
CoreDNS, the API at the ``kubernetes`` Service address, exec through the real CRI. The node is
tainted (only pods that tolerate it and select it land there) and advertises the seed's
extended resources.
"""

from __future__ import annotations

import ipaddress
import json
from typing import TYPE_CHECKING

import pytest

from devcluster import realnode
from devcluster.client import JSON, Cluster, wait_for
from devcluster.workloads import real_node_pod

if TYPE_CHECKING:
    from collections.abc import Mapping


@pytest.fixture(scope="module")
def real(cluster: Cluster) -> JSON:
    """What ``up`` recorded about the real nodes; the test fails (never skips) without one."""
    info: JSON = cluster.state.get("real_nodes") or {}
    if not info.get("nodes"):
        pytest.fail("no real node in this cluster: the devcluster starts one (not with KUBECONFIG)")
    missing = {"cpu", "waiter"} - set(info["images"])
    if missing:
        pytest.fail(f"{sorted(missing)} not imported: run `make images`, then `make devcluster`")
    return info


def running(cluster: Cluster, namespace: str, name: str, timeout: float = 90) -> JSON:
    def ready() -> JSON | None:
        pod = cluster.get("pod", name, "-n", namespace)
        conditions = {c["type"]: c["status"] for c in pod["status"].get("conditions", [])}
        return pod if conditions.get("Ready") == "True" else None

    return wait_for(ready, timeout=timeout, what=f"pod {name} Ready")


def run(
    cluster: Cluster, namespace: str, pod: str, *argv: str, stdin: bytes | None = None
) -> tuple[int, bytes, bytes]:
    args = ["exec", "-n", namespace, pod, *(["-i"] if stdin is not None else []), "--", *argv]
    proc = cluster.kubectl(*args, input=stdin, check=False, timeout=60)
    return proc.returncode, proc.stdout, proc.stderr


def unschedulable_message(cluster: Cluster, namespace: str, name: str) -> str:
    def message() -> str | None:
        pod = cluster.get("pod", name, "-n", namespace)
        for c in pod["status"].get("conditions", []):
            if c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable":
                return str(c.get("message", ""))
        return None

    return wait_for(message, timeout=60, what=f"the scheduler's verdict on {name}")


def test_a_pod_runs_as_non_root_and_exec_goes_through_the_cri(
    cluster: Cluster, namespace: str, real: JSON
) -> None:
    cluster.apply([real_node_pod(cluster, "a", run_as=4242)], namespace)
    pod = running(cluster, namespace, "a")
    node = real["nodes"][0]
    assert pod["spec"]["nodeName"] == node["name"]
    first, last = (ipaddress.IPv4Address(ip) for ip in node["pod_range"])
    pod_ip = ipaddress.IPv4Address(pod["status"]["podIP"])
    assert pod_ip in ipaddress.ip_network(real["subnet"])
    assert first <= pod_ip <= last
    status = pod["status"]["containerStatuses"][0]
    assert status["containerID"].startswith("containerd://")
    assert status["image"].endswith(real["images"]["cpu"].split("/", 1)[1])
    # The node is the kubelet's own, not kwok's.
    info = cluster.get("node", node["name"])["status"]["nodeInfo"]
    assert info["kubeletVersion"].startswith("v1.")
    assert info["containerRuntimeVersion"].startswith("containerd://2.")

    assert run(cluster, namespace, "a", "id", "-u")[:2] == (0, b"4242\n")
    rc, _, err = run(cluster, namespace, "a", "sh", "-c", "echo oops >&2; exit 3")
    assert rc == 3
    assert err.startswith(b"oops\n")
    # stdin's end reaches the process: cat returns and the script goes on.
    assert run(cluster, namespace, "a", "sh", "-c", "cat; echo :eof", stdin=b"abc")[:2] == (
        0,
        b"abc:eof\n",
    )
    # A container: a PID namespace of its own, whose PID 1 is the pod's command.
    rc, out, _ = run(cluster, namespace, "a", "cat", "/proc/1/cmdline")
    assert (rc, out) == (0, b"sleep\0infinity\0")


SERVER = """
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7777))
s.listen()
while True:
    c, peer = s.accept()
    c.sendall(("pong " + socket.gethostname() + " " + peer[0] + "\\n").encode())
    c.close()
"""

CLIENT = """
import socket, sys
name, target = sys.argv[1], sys.argv[2]
ips = sorted({i[4][0] for i in socket.getaddrinfo(name, None, socket.AF_INET)})
with socket.create_connection((target, 7777), timeout=10) as c:
    reply = c.recv(200).decode().strip()
print(" ".join(ips), "|", reply)
"""


def test_pod_to_pod_tcp_and_headless_service_dns(
    cluster: Cluster, namespace: str, real: JSON
) -> None:
    service: JSON = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "grp"},
        "spec": {"clusterIP": "None", "selector": {"grp": "yes"}},
    }
    server = real_node_pod(
        cluster,
        "srv",
        command=["python3", "-c", SERVER],
        labels={"grp": "yes"},
        hostname="srv",
        subdomain="grp",
    )
    client = real_node_pod(cluster, "cli")
    cluster.apply([service, server, client], namespace)
    srv_ip = running(cluster, namespace, "srv")["status"]["podIP"]
    cli_ip = running(cluster, namespace, "cli")["status"]["podIP"]
    assert srv_ip != cli_ip

    # The pod's search path finds the headless Service's record; TCP by pod IP and by name.
    def ask(name: str, target: str) -> str | None:
        rc, out, _ = run(cluster, namespace, "cli", "python3", "-c", CLIENT, name, target)
        return out.decode().strip() if rc == 0 else None

    reply = wait_for(lambda: ask("srv.grp", srv_ip), timeout=30, what="srv.grp resolving")
    assert reply == f"{srv_ip} | pong srv {cli_ip}"
    fqdn = f"srv.grp.{namespace}.svc.{cluster.state['cluster_domain']}"
    assert ask(fqdn, fqdn) == f"{srv_ip} | pong srv {cli_ip}"


API = """
import json, os, ssl, sys, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
token = open(sa + "token").read()
ns = open(sa + "namespace").read()
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
out = {}
for key, base in (("svc", "https://kubernetes.default.svc"), ("env", f"https://{host}:{port}")):
    req = urllib.request.Request(
        f"{base}/api/v1/namespaces/{ns}/pods", headers={"Authorization": "Bearer " + token}
    )
    with urllib.request.urlopen(req, context=ssl.create_default_context(cafile=sa + "ca.crt")) as r:
        out[key] = sorted(p["metadata"]["name"] for p in json.load(r)["items"])
try:  # the apiserver's certificate is the devcluster CA's: a client without it must refuse
    urllib.request.urlopen("https://kubernetes.default.svc/version", timeout=10)
    out["without_ca"] = "accepted"
except urllib.error.URLError as e:
    out["without_ca"] = type(e.reason).__name__
print(json.dumps(out))
"""


def test_the_api_from_a_pod_with_its_service_account(
    cluster: Cluster, namespace: str, real: JSON
) -> None:
    reader: list[JSON] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "reader"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "reader"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader"}],
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "grp"},
            "spec": {"clusterIP": "None", "selector": {"grp": "yes"}},
        },
    ]
    workers = [
        real_node_pod(cluster, f"w{i}", labels={"grp": "yes"}, hostname=f"w{i}", subdomain="grp")
        for i in range(2)
    ]
    waiter = real_node_pod(cluster, "waiter", image="waiter", serviceAccountName="reader")
    cluster.apply([*reader, *workers, waiter], namespace)
    running(cluster, namespace, "waiter")

    rc, out, err = run(cluster, namespace, "waiter", "python3", "-c", API)
    assert rc == 0, err.decode()
    seen = json.loads(out)
    assert "waiter" in seen["svc"]
    assert seen["env"] == seen["svc"]
    assert seen["without_ca"] == "SSLCertVerificationError"
    # The launcher's init container as deploy/ runs it: in-cluster config, the pods' DNS names.
    rc, out, err = run(
        cluster, namespace, "waiter", "k8s-waitfor", "-l", "grp=yes", "--count", "2",
        "--timeout", "90s", "--progress", "none",
    )  # fmt: skip
    assert rc == 0, (out + err).decode()


def node_resources(cluster: Cluster, name: str) -> Mapping[str, str]:
    status = cluster.get("node", name)["status"]
    return {k: status["allocatable"].get(k, "") for k in realnode.EXTENDED_RESOURCES}


def test_extended_resources_schedule_and_stay(cluster: Cluster, namespace: str, real: JSON) -> None:
    name = real["nodes"][0]["name"]
    assert node_resources(cluster, name) == real["extended_resources"]
    # The seed's worker asks for 4 GPUs and an HCA.
    seed = {"nvidia.com/gpu": 4, "rdma/hca": 1}
    cluster.apply([real_node_pod(cluster, "gpu", limits=seed)], namespace)
    assert running(cluster, namespace, "gpu")["spec"]["nodeName"] == name
    too_many = {"nvidia.com/gpu": int(real["extended_resources"]["nvidia.com/gpu"]) + 1}
    cluster.apply([real_node_pod(cluster, "greedy", limits=too_many)], namespace)
    assert "Insufficient nvidia.com/gpu" in unschedulable_message(cluster, namespace, "greedy")

    # The kubelet's own status updates (every 30 s here) keep what the PATCH added.
    def heartbeat() -> str:
        conditions = cluster.get("node", name)["status"]["conditions"]
        return str(next(c["lastHeartbeatTime"] for c in conditions if c["type"] == "Ready"))

    before = heartbeat()
    wait_for(lambda: heartbeat() != before, timeout=90, interval=2, what="a node status update")
    assert node_resources(cluster, name) == real["extended_resources"]


def test_the_taint_keeps_pods_that_do_not_tolerate_it_off(
    cluster: Cluster, namespace: str, real: JSON
) -> None:
    pod = real_node_pod(cluster, "intruder")
    del pod["spec"]["tolerations"]
    cluster.apply([pod], namespace)
    message = unschedulable_message(cluster, namespace, "intruder")
    # The real node refused it for its taint (the kwok nodes for the selector).
    assert f"{len(real['nodes'])} node(s) had untolerated taint(s)" in message
    for node in real["nodes"]:
        assert realnode.TAINT in cluster.get("node", node["name"])["spec"]["taints"]
