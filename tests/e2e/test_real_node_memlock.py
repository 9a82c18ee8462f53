"""Locked memory for RDMA, measured on the real node: why deploy/ adds no IPC_LOCK, and what
the node must set instead (issue 10, item 3).

- ``capabilities.add: [IPC_LOCK]`` reaches the effective set of a root container only: for a
  non-root uid (deploy/'s workers run as uid 1000) the kernel clears it at exec, so it raises
  nothing and only costs Pod Security ``restricted`` and ``baseline``.
- A container's RLIMIT_MEMLOCK is the container runtime's own: containerd's CRI sets none in the
  OCI spec, so runc leaves the limit the shim inherited from containerd. Shown by lowering the
  running containerd's soft limit (``prlimit``) and starting a pod: the pod has the new limit.
  On a real node the limit therefore comes from containerd's service (``LimitMEMLOCK=infinity``
  in its systemd unit) or a CRI ``base_runtime_spec`` with an RLIMIT_MEMLOCK; raising it above
  the host's hard limit cannot be shown here (this machine's hard limit is 8 MiB and nothing
  here has CAP_SYS_RESOURCE).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devcluster.client import JSON, Cluster, wait_for
from devcluster.workloads import real_node_pod

pytestmark = pytest.mark.timeout(300)

CAP_IPC_LOCK = 14


def caps(cluster: Cluster, namespace: str, pod: str) -> dict[str, int]:
    proc = cluster.kubectl("exec", "-n", namespace, pod, "--", "cat", "/proc/self/status")
    fields = dict(
        line.split(":", 1) for line in proc.stdout.decode().splitlines() if line.startswith("Cap")
    )
    return {k: int(v.strip(), 16) for k, v in fields.items()}


def ready(cluster: Cluster, namespace: str, name: str) -> JSON:
    def check() -> JSON | None:
        pod = cluster.get("pod", name, "-n", namespace)
        ok = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in pod["status"].get("conditions", [])
        )
        return pod if ok else None

    return wait_for(check, timeout=90, what=f"pod {name} Ready")


def with_ipc_lock(pod: JSON) -> JSON:
    pod["spec"]["containers"][0]["securityContext"] = {"capabilities": {"add": ["IPC_LOCK"]}}
    return pod


def test_ipc_lock_reaches_only_a_root_container(cluster: Cluster, namespace: str) -> None:
    root = {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}
    cluster.apply(
        [
            with_ipc_lock(real_node_pod(cluster, "uid1000", run_as=1000)),
            with_ipc_lock(real_node_pod(cluster, "root", run_as=None, securityContext=root)),
        ],
        namespace,
    )
    for name in ("uid1000", "root"):
        ready(cluster, namespace, name)
    user, superuser = caps(cluster, namespace, "uid1000"), caps(cluster, namespace, "root")
    bit = 1 << CAP_IPC_LOCK
    # Granted to both containers (bounding set) ...
    assert user["CapBnd"] & bit and superuser["CapBnd"] & bit
    # ... effective only for root: uid 1000's process cannot lock memory with it.
    assert superuser["CapEff"] & bit
    assert not user["CapEff"] & bit
    assert user["CapEff"] == 0


def containerd_pid(cluster: Cluster) -> int:
    assert cluster.root is not None
    node = cluster.state["real_nodes"]["nodes"][0]["name"]
    return int((cluster.root / "run" / f"containerd.{node}.pid").read_text())


def memlock(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_MEMLOCK of a process, in bytes."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max locked memory"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no memlock line in /proc/{pid}/limits")


def pod_memlock_kib(cluster: Cluster, namespace: str, name: str) -> str:
    cluster.apply([real_node_pod(cluster, name, run_as=1000)], namespace)
    ready(cluster, namespace, name)
    proc = cluster.kubectl("exec", "-n", namespace, name, "--", "sh", "-c", "ulimit -l")
    return proc.stdout.decode().strip()


def test_a_containers_memlock_limit_is_containerds(cluster: Cluster, namespace: str) -> None:
    pid = containerd_pid(cluster)
    soft, hard = memlock(pid)
    assert soft > 4 * 1024 * 1024, "containerd's own limit is already small"
    before = pod_memlock_kib(cluster, namespace, "before")
    assert before == str(soft // 1024)
    lowered = 4 * 1024 * 1024
    subprocess.run(["prlimit", f"--pid={pid}", f"--memlock={lowered}:{hard}"], check=True)
    try:
        assert pod_memlock_kib(cluster, namespace, "lowered") == str(lowered // 1024)
    finally:
        subprocess.run(["prlimit", f"--pid={pid}", f"--memlock={soft}:{hard}"], check=True)
    assert memlock(pid) == (soft, hard)
    # A pod started before keeps what it had.
    proc = cluster.kubectl("exec", "-n", namespace, "before", "--", "sh", "-c", "ulimit -l")
    assert proc.stdout.decode().strip() == before
