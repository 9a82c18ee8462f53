"""k8smpi-preflight across a job of 4 pods, through the real API server and pods/exec.

On the devcluster the workers are kwok pods: pods/exec runs ``k8smpi-preflight`` on this machine
in the pod's view (podexec), so the node checks see this machine -- no GPU, no HCA, its real
memlock and /dev/shm -- as a container on a CPU node would. Everything between the launcher and
the workers is real: pod selection, the pods' own requests read from the API, one exec per pod
(counted in the audit log), SelfSubjectAccessReviews and DNS through CoreDNS.

On the real node (CPU image) the same tests apply with ``REMOTE`` = the image's
``/opt/k8smpi/bin/k8smpi-preflight`` and the workers placed on that node: the GPU and IB checks
say "absent" for a job that asked for none and fail one that asked for GPUs it cannot see, and
memlock and /dev/shm are the container's (containerd's defaults). The fixture ``workers`` is
what changes there.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from devcluster.workloads import run_kubexec, running_pods, statefulset
from k8smpi_runtime.preflight.model import size_text
from tests.e2e.test_waitfor import grant

if TYPE_CHECKING:
    from devcluster.client import JSON, Cluster

PREFLIGHT = Path(sys.executable).parent / "k8smpi-preflight"
"""The console script in the venv; also what runs in the (kwok) pods."""
REMOTE = str(PREFLIGHT)
WORKERS = ["w-0", "w-1", "w-2", "w-3"]


def workers(cluster: Cluster, namespace: str, *, gpus: int = 0) -> list[JSON]:
    """A headless Service and 4 worker pods, each asking for ``gpus`` nvidia.com/gpu."""
    objects = statefulset("w", service="hpc", replicas=4)
    if gpus:
        container = objects[1]["spec"]["template"]["spec"]["containers"][0]
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    cluster.apply(objects, namespace)
    pods = running_pods(cluster, namespace, "app=w", 4)
    # As in the job's flow: the waiter first (Ready and in DNS), then the preflight.
    waiter = [str(PREFLIGHT.parent / "k8s-waitfor"), "--statefulset", "w", "-n", namespace, "-q"]
    waited = cluster.run_with_pod_dns(namespace, [*waiter, "--timeout", "60s"], timeout=90)
    assert waited.returncode == 0, waited.stderr
    return pods


def preflight(
    cluster: Cluster, namespace: str, *args: str, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """k8smpi-preflight across the StatefulSet, as the launcher pod would run it (its DNS)."""
    argv = [str(PREFLIGHT), "--statefulset", "w", "-n", namespace, "--remote-command", REMOTE]
    if kubeconfig is not None:
        argv += ["--kubeconfig", str(kubeconfig)]
    return cluster.run_with_pod_dns(namespace, [*argv, *args], timeout=180)


def test_cpu_job_of_4_pods_passes_with_gpu_and_ib_absent(cluster: Cluster, namespace: str) -> None:
    workers(cluster, namespace)
    shown = preflight(cluster, namespace)
    sys.stderr.write(f"\nthe table for 4 pods:\n{shown.stdout}")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    rows = shown.stdout.splitlines()
    header = rows[0].split()
    assert header[:2] == ["pod", "gpu"]
    assert {r.split()[0] for r in rows[1:]} == {*WORKERS, "(here)"}
    assert len(exec_names(cluster, namespace)) == 4  # one exec per worker, nothing else

    doc = json.loads(preflight(cluster, namespace, "--json").stdout)
    reports = {p["pod"]: {f["check"]: f for f in p["findings"]} for p in doc["pods"]}
    assert doc["fatal"] == 0
    for pod in WORKERS:
        checks = reports[pod]
        assert checks["gpu"]["status"] == "absent"
        assert checks["gpu"]["expected"] == "0 (nvidia.com/gpu limit)"  # read from its spec
        assert checks["rdma"]["status"] == "absent"
        assert checks["memlock"]["status"] == "ok"
        assert "mpi-env" not in checks  # workers get the node checks only
    launcher = reports["(here)"]
    assert launcher["exec-rbac"]["status"] == "ok"
    assert launcher["exec-rbac"]["found"] == "create pods/exec allowed on 4 workers"
    assert launcher["dns"] == {
        "check": "dns",
        "status": "ok",
        "found": "4 names resolve to their pods",
        "expected": "",
        "message": "",
    }


def test_workers_read_their_own_memlock_and_shm(cluster: Cluster, namespace: str) -> None:
    """What the checks report is what a process in the pod gets (ulimit -l, df /dev/shm)."""
    workers(cluster, namespace)
    doc = json.loads(preflight(cluster, namespace, "--json").stdout)
    w0 = {f["check"]: f for p in doc["pods"] if p["pod"] == "w-0" for f in p["findings"]}
    probe = run_kubexec(
        cluster, "--namespace", namespace, "w-0", "ulimit -l; df -k /dev/shm | tail -1"
    )
    assert probe.returncode == 0, probe.stderr
    memlock_kib, shm_line = probe.stdout.decode().splitlines()
    soft = "unlimited" if memlock_kib == "unlimited" else size_text(int(memlock_kib) * 1024)
    assert w0["memlock"]["found"].startswith(f"{soft} (soft)"), (w0["memlock"], memlock_kib)
    shm_kib = int(shm_line.split()[1])  # df -k: 1K-blocks of the tmpfs
    assert "for 1 rank" in w0["shm"]["found"]
    assert f"size={shm_kib}k" in w0["shm"]["found"], (w0["shm"], shm_line)


def test_job_that_asked_for_gpus_it_cannot_see_fails(cluster: Cluster, namespace: str) -> None:
    workers(cluster, namespace, gpus=1)
    proc = preflight(cluster, namespace)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fatal = [line for line in proc.stderr.splitlines() if " FATAL " in line]
    assert sorted(line.split("FATAL ", 1)[1].split(":", 1)[0] for line in fatal) == WORKERS
    for line in fatal:
        assert "gpu: found 0 GPUs, expected 1 (nvidia.com/gpu limit)" in line
    assert proc.stdout.splitlines()[1].split()[1] == "FAIL"  # worst first: a worker's gpu cell


def test_a_launcher_without_pods_exec_on_one_worker(cluster: Cluster, namespace: str) -> None:
    workers(cluster, namespace)
    kubeconfig = grant(
        cluster,
        namespace,
        [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"]},
            {
                "apiGroups": [""],
                "resources": ["pods/exec"],
                "verbs": ["create", "get"],
                "resourceNames": WORKERS[:3],
            },
        ],
    )
    proc = preflight(cluster, namespace, "--json", kubeconfig=kubeconfig)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    reports = {p["pod"]: {f["check"]: f for f in p["findings"]} for p in doc["pods"]}
    assert reports["(here)"]["exec-rbac"]["found"] == "may not create pods/exec on w-3"
    assert reports["w-3"]["preflight"]["status"] == "fail"
    assert "exec failed" in reports["w-3"]["preflight"]["found"]
    assert reports["w-0"]["gpu"]["status"] == "absent"


def exec_names(cluster: Cluster, namespace: str) -> list[str]:
    return [e["objectRef"]["name"] for e in cluster.exec_events(namespace)]


def test_the_waiter_runs_the_preflight_once_ready(cluster: Cluster, namespace: str) -> None:
    """``k8s-waitfor --preflight``: a job whose pods cannot see their GPUs fails before mpirun."""
    waiter = [str(PREFLIGHT.parent / "k8s-waitfor"), "--statefulset", "w", "-n", namespace]
    waiter += ["--preflight", "--preflight-command", REMOTE, "--timeout", "60s"]
    workers(cluster, namespace)
    passed = cluster.run_with_pod_dns(namespace, waiter, timeout=120)
    assert passed.returncode == 0, passed.stderr
    assert "preflight passed in 4 pods" in passed.stderr
    cluster.kubectl("delete", "statefulset", "w", "-n", namespace, "--wait=true")
    workers(cluster, namespace, gpus=1)
    failed = cluster.run_with_pod_dns(namespace, waiter, timeout=120)
    assert failed.returncode == 7, failed.stderr
    fatal = [line for line in failed.stderr.splitlines() if " FATAL " in line]
    assert len(fatal) == 4
    assert all("gpu: found 0 GPUs, expected 1 (nvidia.com/gpu limit)" in line for line in fatal)
