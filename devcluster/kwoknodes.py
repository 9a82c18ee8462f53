"""The simulated nodes: kwok (node and pod status) and podexec (their kubelet exec endpoint).

kwok moves nodes to Ready and pods to Running/Ready with an IP; podexec
(``gobuild/podexec``) serves the nodes' kubelet exec endpoint and runs pods/exec commands on
this machine in the pod's view, as a container runtime would (kwok's own exec handler loses
exit codes and stdin EOF).
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Any

from devcluster import kwokstages, processes
from devcluster.controlplane import kubectl
from devcluster.layout import CLUSTER_DOMAIN, KWOK_POD_CIDR, DevclusterError, log, write_atomic

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from devcluster.layout import Layout, Ports

COMPONENTS = ("kwok", "podexec")
PODEXEC_IDLE_ENV = "DEVCLUSTER_PODEXEC_STREAM_IDLE_TIMEOUT"
"""podexec's stream idle timeout (a Go duration; default 4h), read at ``up``/``restart``."""

# The seed talk's node (`kubectl describe node`), as capacity and allocatable.
NODE_RESOURCES: dict[str, str] = {
    "cpu": "160",
    "memory": "598005824Ki",
    "ephemeral-storage": "956642692Ki",
    "hugepages-1Gi": "0",
    "hugepages-2Mi": "0",
    "nvidia.com/gpu": "4",
    "rdma/hca": "1k",
    "pods": "500",
}
NODE_PREFIX = "kwok-node-"
NODE_LABEL = "k8smpi.dev/devcluster"

# kwok's controller takes its stages from its config: these move nodes to Ready (keeping the
# capacity we create them with, pointing the kubelet endpoint at kwok's server) and pods to
# Running/Ready with an IP. Pods stay Running until deleted; nothing completes on its own, so a
# Job's pods behave like real long-running work.
KWOK_CONFIG = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  cidr: {pod_cidr}
  nodeIP: 127.0.0.1
  # What nodes advertise as their kubelet port: podexec serves exec there.
  nodePort: {kubelet_port}
  # kwok's controller binary has no defaults for these (kwokctl writes them).
  podPlayStageParallelism: 4
  nodePlayStageParallelism: 4
  nodeLeaseParallelism: 4
  podsOnNodeSyncParallelism: 4
  nodeLeaseDurationSeconds: 40
  # podexec serves exec; kwok's own handler loses exit codes and stdin EOF.
  enableDebuggingHandlers: false
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef: {{apiGroup: v1, kind: Node}}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      {{{{ range NodeConditions }}}}
      - lastHeartbeatTime: {{{{ $now | Quote }}}}
        lastTransitionTime: {{{{ $now | Quote }}}}
        message: {{{{ .message | Quote }}}}
        reason: {{{{ .reason | Quote }}}}
        status: {{{{ .status | Quote }}}}
        type: {{{{ .type | Quote }}}}
      {{{{ end }}}}
      addresses:
      - address: {{{{ NodeIP | Quote }}}}
        type: InternalIP
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{{{ NodePort }}}}
      allocatable:
      {{{{ YAML .status.allocatable 1 }}}}
      capacity:
      {{{{ YAML .status.capacity 1 }}}}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: {{{{ printf "kwok-%s" Version | Quote }}}}
        containerRuntimeVersion: {{{{ printf "kwok-%s" Version | Quote }}}}
        kernelVersion: {{{{ printf "kwok-%s" Version | Quote }}}}
        kubeProxyVersion: {{{{ printf "kwok-%s" Version | Quote }}}}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Pending']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: PodScheduled}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: Initialized}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: ContainersReady}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: Ready}}
      {{{{ range .spec.readinessGates }}}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: {{{{ .conditionType | Quote }}}}}}
      {{{{ end }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      initContainerStatuses:
      {{{{ range .spec.initContainers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{{{ $now | Quote }}}}
            finishedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      {{{{ with NodeIPsWith .spec.nodeName }}}}
      hostIP: {{{{ index . 0 | Quote }}}}
      hostIPs:
      {{{{ range . }}}}
      - ip: {{{{ . | Quote }}}}
      {{{{ end }}}}
      {{{{ end }}}}
      {{{{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}}}
      podIP: {{{{ index . 0 | Quote }}}}
      podIPs:
      {{{{ range . }}}}
      - ip: {{{{ . | Quote }}}}
      {{{{ end }}}}
      {{{{ end }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: Exists
  next:
    finalizers:
      empty: true
    delete: true
"""


def write_configs(lay: Layout, ports: Ports) -> None:
    write_atomic(
        lay.root / "kwok.yaml",
        KWOK_CONFIG.format(pod_cidr=KWOK_POD_CIDR, kubelet_port=ports.kubelet)
        + kwokstages.COMPLETE_ON_REQUEST,
    )


def command_lines(lay: Layout, bin_dir: Path, ports: Ports) -> dict[str, list[str]]:
    pki = lay.pki
    return {
        "kwok": [
            str(bin_dir / "kwok"),
            f"--kubeconfig={lay.component_kubeconfig('kwok')}",
            f"--config={lay.root / 'kwok.yaml'}",
            # Only the simulated nodes: the real nodes' status is their kubelet's.
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=127.0.0.1",
            f"--node-port={ports.kubelet}",
            f"--server-address=127.0.0.1:{ports.kwok}",
        ],
        "podexec": [
            str(bin_dir / "podexec"),
            "serve",
            f"--listen=127.0.0.1:{ports.kubelet}",
            f"--tls-cert-file={pki / 'kubelet-serving.crt'}",
            f"--tls-private-key-file={pki / 'kubelet-serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--apiserver=https://127.0.0.1:{ports.apiserver}",
            f"--api-client-cert={pki / 'podexec.crt'}",
            f"--api-client-key={pki / 'podexec.key'}",
            f"--state-dir={lay.root / 'pods'}",
            f"--dns-address={ports.dns_address}",
            f"--cluster-domain={CLUSTER_DOMAIN}",
            "--service-host=127.0.0.1",
            f"--service-port={ports.apiserver}",
            # Like the real node's DEVCLUSTER_STREAM_IDLE_TIMEOUT (containerd's
            # stream_idle_timeout): tests lower it to see quiet streams kept alive.
            *(
                [f"--stream-idle-timeout={os.environ[PODEXEC_IDLE_ENV]}"]
                if os.environ.get(PODEXEC_IDLE_ENV)
                else []
            ),
        ],
    }


def health_checks(lay: Layout, ports: Ports) -> dict[str, Callable[[], bool]]:
    return {
        "kwok": lambda: processes.tcp_open(ports.kwok),
        "podexec": lambda: processes.tcp_open(ports.kubelet),
    }


def node_manifest(i: int) -> dict[str, Any]:
    name = f"{NODE_PREFIX}{i}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                NODE_LABEL: "true",
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/worker": "",
                "nvidia.com/gpu.present": "true",
                "topology.kubernetes.io/zone": f"zone-{i % 2}",
            },
        },
        "spec": {},
        "status": {"capacity": NODE_RESOURCES, "allocatable": NODE_RESOURCES},
    }


def ensure_nodes(lay: Layout, count: int, kubelet_port: int) -> None:
    """Exactly ``count`` simulated nodes, each advertising podexec as its kubelet."""
    nodes = json.loads(kubectl(lay, "get", "nodes", "-l", NODE_LABEL, "-o", "json"))["items"]
    existing = {n["metadata"]["name"] for n in nodes}
    # A node initialised by an older configuration points the apiserver elsewhere for exec.
    stale = {
        n["metadata"]["name"]
        for n in nodes
        if n.get("status", {}).get("daemonEndpoints", {}).get("kubeletEndpoint", {}).get("Port")
        not in (None, kubelet_port)
    }
    want = {f"{NODE_PREFIX}{i}" for i in range(count)}
    extra = sorted((existing - want) | stale)
    if extra:
        kubectl(lay, "delete", "--wait=true", *(f"node/{n}" for n in extra))
    missing = sorted((want - existing) | (stale & want))
    for chunk in range(0, len(missing), 200):
        items = [node_manifest(int(n.rsplit("-", 1)[1])) for n in missing[chunk : chunk + 200]]
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        kubectl(lay, "create", "-f", "-", stdin=doc)
    if missing or extra:
        log(f"nodes: {len(missing)} created, {len(extra)} deleted, {count} wanted")


def wait_cluster_ready(lay: Layout, count: int, timeout: float) -> None:
    """Nodes Ready and the default ServiceAccount present (pods are refused without it)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            nodes = json.loads(kubectl(lay, "get", "nodes", "-l", NODE_LABEL, "-o", "json"))
            ready = sum(
                1
                for n in nodes["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            )
            kubectl(lay, "get", "serviceaccount", "default", "-n", "default")
            if ready >= count:
                return
            last = f"{ready}/{count} nodes Ready"
        except DevclusterError as e:
            last = str(e)
        time.sleep(0.5)
    raise DevclusterError(f"cluster not ready after {timeout:.0f}s: {last}")
