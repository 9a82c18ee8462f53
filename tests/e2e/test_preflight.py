"""k8smpi-preflight across a job of 4 pods, through the real API server and pods/exec.

Two kinds of workers:

- kwok pods: pods/exec runs ``k8smpi-preflight`` on this machine in the pod's view (podexec), so
  the node checks see this machine (no GPU, no HCA, its memlock and /dev/shm). Everything
  between the launcher and the workers is real: pod selection, the pods' own requests read from
  the API, one exec per pod (counted in the audit log), SelfSubjectAccessReviews, DNS through
  CoreDNS, and ``k8s-waitfor --preflight``.
- pods on the real node (kubelet, containerd, runc; ``make images``' CPU image): the image's own
  ``k8smpi-preflight``, the container's own memlock and /dev/shm (containerd's 64 MiB), the
  GPU and IB checks "absent" for a job that asked for none and fatal for one that asked for a GPU
  the node advertises but cannot give.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from devcluster.workloads import real_node_pod, run_kubexec, running_pods, statefulset
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
    shm_kib = int(shm_line.split()[1])  # df -k: 1K-blocks of the file system
    found = w0["shm"]["found"]
    assert "for 1 rank" in found
    # A sized tmpfs says its size= option; any other /dev/shm (a machine whose /dev/shm is a
    # disk, as some CI runners have) is measured with statvfs, which df reads too.
    if "(statvfs)" in found:
        assert found.startswith(f"{size_text(shm_kib * 1024)} (statvfs)"), (found, shm_line)
    else:
        assert f"size={shm_kib}k" in found, (found, shm_line)


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


# -- the real node -------------------------------------------------------------------------------


def real_workers(cluster: Cluster, namespace: str, *, gpus: int = 0) -> list[JSON]:
    """4 pods of the CPU image on the real node, a headless Service, as a StatefulSet has them."""
    limits = {"nvidia.com/gpu": str(gpus)} if gpus else None
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "rhpc"},
        "spec": {"clusterIP": "None", "selector": {"app": "rw"}},
    }
    pods = [
        real_node_pod(
            cluster, name, labels={"app": "rw"}, limits=limits, hostname=name, subdomain="rhpc"
        )
        for name in WORKERS
    ]
    cluster.apply([service, *pods], namespace)
    return running_pods(cluster, namespace, "app=rw", 4)


def real_preflight(
    cluster: Cluster, namespace: str, *args: str
) -> subprocess.CompletedProcess[str]:
    """Across the real node's pods; in them runs the image's own k8smpi-preflight."""
    argv = [str(PREFLIGHT), "-l", "app=rw", "--count", "4", "-n", namespace, *args]
    return cluster.run_with_pod_dns(namespace, argv, timeout=180)


def test_real_node_cpu_job_passes_with_gpu_and_ib_absent(cluster: Cluster, namespace: str) -> None:
    workers = real_workers(cluster, namespace)
    assert {p["spec"]["nodeName"] for p in workers} == {"real-node-0"}
    shown = real_preflight(cluster, namespace)
    sys.stderr.write(f"\nthe table for 4 pods on the real node:\n{shown.stdout}")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert {r.split()[0] for r in shown.stdout.splitlines()[1:]} == {*WORKERS, "(here)"}

    doc = json.loads(real_preflight(cluster, namespace, "--json").stdout)
    reports = {p["pod"]: {f["check"]: f for f in p["findings"]} for p in doc["pods"]}
    for pod in WORKERS:
        checks = reports[pod]
        for check in ("gpu", "cuda", "cuinit", "rdma", "rdma-stack", "gpudirect"):
            assert checks[check]["status"] == "absent", checks[check]
        assert checks["ucx"]["status"] == "ok"  # the image's own ucx_info
        # What the container has, compared with what a shell in it gets.
        code, out, err = exec_in(cluster, namespace, pod, "ulimit -l; df -k /dev/shm | tail -1")
        assert code == 0, err
        memlock_kib, shm_line = out.decode().splitlines()
        soft = "unlimited" if memlock_kib == "unlimited" else size_text(int(memlock_kib) * 1024)
        assert checks["memlock"]["found"].startswith(f"{soft} (soft)"), checks["memlock"]
        assert f"size={shm_line.split()[1]}k" in checks["shm"]["found"], checks["shm"]
    assert reports["(here)"]["dns"]["status"] == "ok"


def test_real_node_job_that_asked_for_a_gpu_it_cannot_see(cluster: Cluster, namespace: str) -> None:
    """The real node advertises nvidia.com/gpu (the seed's resources) but has no GPU."""
    real_workers(cluster, namespace, gpus=1)
    proc = real_preflight(cluster, namespace)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    fatal = [line for line in proc.stderr.splitlines() if " FATAL " in line]
    assert sorted(line.split("FATAL ", 1)[1].split(":", 1)[0] for line in fatal) == WORKERS
    for line in fatal:
        assert "gpu: found 0 GPUs, expected 1 (nvidia.com/gpu limit)" in line


def exec_in(cluster: Cluster, namespace: str, pod: str, script: str) -> tuple[int, bytes, bytes]:
    proc = cluster.kubectl("exec", "-n", namespace, pod, "--", "sh", "-c", script, check=False)
    return proc.returncode, proc.stdout, proc.stderr
