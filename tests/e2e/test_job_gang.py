"""Two jobs that each need more than half of the GPUs, submitted at once.

The devcluster's 4 kwok nodes have 4 GPUs each (16); each job has 3 workers x 4 GPUs (12).

- Without gang admission the scheduler places pods one by one: 4 of the 6 workers get a node,
  at least one job is left partly placed (the seed's "Deadlock is possible!"), and its waiter
  -- the rendered command, run in its launcher pod -- gives up with the reason
  (``Unschedulable: ... Insufficient nvidia.com/gpu``); submit reports it and deletes the job.
- With Kueue (``--queue``) one job is admitted whole and runs to Complete while the other
  waits whole -- not one of its pods placed -- and runs when the first is done. Both shapes.

Nothing is left in the namespace either way.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devcluster import kueue
from devcluster.client import Cluster, wait_for
from devcluster.jobkit import (
    KWOK,
    Running,
    assert_nothing_left,
    end_pod,
    job_args,
    job_pods,
    k8smpi_job,
    launcher_pod,
    leftovers,
    placed,
    run,
)

if TYPE_CHECKING:
    from devcluster.client import JSON

pytestmark = pytest.mark.timeout(600)

NODES = KWOK
BIN = Path(sys.executable).parent
WORKERS = 3
GPUS = 4


def gpu_job(tmp: Path, namespace: str, name: str, *extra: str, ends: bool) -> list[str]:
    folder = tmp / name
    folder.mkdir()
    # Each runs 10 s once started: time to see that the other one waits meanwhile.
    args = job_args(NODES, folder, namespace, name, workers=WORKERS, ends=ends, delay="10s")
    # The image's user: on kwok nodes podexec then runs the waiter as this machine's root,
    # who can run this checkout's Python (under /root).
    args[args.index("--user") + 1] = "image"
    return [*args, "--gpus", str(GPUS), *extra]


def _scheduled(pod: JSON) -> JSON | None:
    """The pod's PodScheduled condition, once the scheduler has set it."""
    conds = pod["status"].get("conditions") or []
    return next((c for c in conds if c["type"] == "PodScheduled"), None)


def waiter_in_launcher(
    cluster: Cluster, namespace: str, job: str, pod: str, hostfile: Path
) -> subprocess.Popen[str]:
    """The launcher's waiter command, exactly as rendered, run in the launcher pod (podexec
    runs it on this machine in the pod's view: its token, namespace, DNS, user)."""
    spec = cluster.get("job", f"{job}-launcher", "-n", namespace)["spec"]["template"]["spec"]
    (waiter,) = [c for c in spec["initContainers"] if c["name"] == "waiter"]
    argv = [
        f"--hostfile-out={hostfile}" if a.startswith("--hostfile-out=") else a
        for a in waiter["command"]
    ]
    return subprocess.Popen(
        [
            cluster.kubectl_path,
            f"--kubeconfig={cluster.kubeconfig}",
            "exec",
            "-n",
            namespace,
            pod,
            "-c",
            "launcher",
            "--",
            "env",
            f"K8SMPI_POD_NAME={pod}",
            str(BIN / argv[0]),
            *argv[1:],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_without_gang_admission_a_job_is_stuck_half_placed(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    names = ("left", "right")
    subs = {
        n: k8smpi_job(
            cluster, "submit", *gpu_job(tmp_path, namespace, n, "--wait-timeout", "20s", ends=False)
        )
        for n in names
    }

    def settled() -> dict[str, list[JSON]] | None:
        pods = {n: job_pods(cluster, namespace, n) for n in names}
        workers = [
            p
            for n in names
            for p in pods[n]
            if p["metadata"]["labels"]["k8smpi.dev/role"] == "worker"
        ]
        if len(workers) < 2 * WORKERS or len(placed(workers)) < 4:
            return None
        # The scheduler has tried (and said why not) for every worker it did not place.
        unplaced = [p for p in workers if not p["spec"].get("nodeName")]
        if not all(_scheduled(p) for p in unplaced):
            return None
        if any(len(placed(pods[n], "launcher")) != 1 for n in names):
            return None
        return pods

    pods = wait_for(settled, timeout=120, what="6 workers created, 4 placed, 2 launchers placed")
    counts = {n: len(placed(pods[n], "worker")) for n in names}
    # The GPUs are all taken, by two jobs that cannot both run: a partial placement.
    assert sum(counts.values()) == 4, counts
    stuck = [n for n in names if counts[n] < WORKERS]
    assert stuck, counts
    for n in stuck:
        pending = [p for p in pods[n] if not p["spec"].get("nodeName")]
        for p in pending:
            cond = _scheduled(p)
            assert cond is not None
            assert cond["reason"] == "Unschedulable"
            assert "Insufficient nvidia.com/gpu" in cond["message"]
        subs[n].wait_for(r"placing: \d/3 workers placed; pending: .*Insufficient nvidia.com/gpu")

    # Each launcher's waiter, as rendered: the stuck job's gives up with the reason.
    launchers = {n: launcher_pod(cluster, namespace, n)["metadata"]["name"] for n in names}
    waiters = {
        n: waiter_in_launcher(cluster, namespace, n, launchers[n], tmp_path / f"{n}.hostfile")
        for n in names
    }
    results = {n: (waiters[n].communicate(timeout=120)[1], waiters[n].returncode) for n in names}
    for n in names:
        err, code = results[n]
        if n in stuck:
            assert code == 6, err  # timed out: the table says why for each pod
            assert "Unschedulable" in err and "Insufficient nvidia.com/gpu" in err, err
        else:
            assert code == 0, err
    # What the kubelet does with the init container's exit: the pod ends (failed: the Job too).
    for n in names:
        err, code = results[n]
        # The waiter's log, as the kubelet would keep it (without kubectl's own last line).
        err = "".join(ln for ln in err.splitlines(keepends=True) if "command terminated" not in ln)
        extra = {"container": "waiter", "message": err} if code else {}
        end_pod(cluster, namespace, launchers[n], code, **extra)

    for n in names:
        code = subs[n].wait(120)
        if n in stuck:
            assert code == 125, subs[n].err
            assert (
                "the waiter exited 6 before the script ran: k8s-waitfor: timed out" in subs[n].err
            )
            assert "Insufficient nvidia.com/gpu" in subs[n].err
            # The waiter's own table of the pods it gave up on, under the verdict.
            assert "PHASE" in subs[n].err and "WHY" in subs[n].err
        else:
            assert code == 0, subs[n].err
        assert f"deleted job {n}" in subs[n].err
    assert_nothing_left(cluster, namespace)


@pytest.mark.parametrize("shape", ["statefulset", "jobset"])
def test_with_kueue_one_runs_while_the_other_waits_whole(
    gang: Cluster, queued_namespace: str, tmp_path: Path, shape: str
) -> None:
    ns = queued_namespace
    names = ("first", "second")
    extra = ("--queue", "hpc", "--shape", shape)
    subs: dict[str, Running] = {
        n: k8smpi_job(gang, "submit", *gpu_job(tmp_path, ns, n, *extra, ends=True)) for n in names
    }

    def running_one() -> str | None:
        for n in names:
            if len(placed(job_pods(gang, ns, n), "worker")) == WORKERS:
                return n
        return None

    try:
        first = wait_for(running_one, timeout=120, what="one job admitted and placed")
    except AssertionError as e:
        raise AssertionError(f"{e}\n{subs['first'].err}\n{subs['second'].err}") from None
    (other,) = [n for n in names if n != first]
    subs[other].wait_for(r"queued: ")
    # While the first runs, the other waits whole: not one of its pods is placed (one list
    # per sample: a consistent snapshot of both jobs).
    samples = 0
    while True:
        pods = gang.get("pods", "-n", ns, "-l", "k8smpi.dev/job")["items"]
        mine = [p for p in pods if p["metadata"]["labels"]["k8smpi.dev/job"] == first]
        theirs = [p for p in pods if p["metadata"]["labels"]["k8smpi.dev/job"] == other]
        launchers = [p for p in mine if p["metadata"]["labels"]["k8smpi.dev/role"] == "launcher"]
        if not launchers or launchers[0]["status"].get("phase") != "Running":
            break
        assert placed(theirs) == [], f"{other} got a pod while {first} ran"
        samples += 1
        time.sleep(0.3)
    assert samples > 3
    assert subs[first].wait(60) == 0, subs[first].err
    assert "succeeded: the batch script exited 0" in subs[first].err
    # Then it runs.
    assert subs[other].wait(180) == 0, subs[other].err
    assert "running: the batch script runs" in subs[other].err
    assert_nothing_left(gang, ns)


def test_kueue_gates_every_pod_of_a_waiting_seed_job(
    gang: Cluster, queued_namespace: str, tmp_path: Path
) -> None:
    """A seed-shape job that cannot fit: all its pods exist, each held by Kueue's gate."""
    ns = queued_namespace
    args = gpu_job(tmp_path, ns, "toolarge", "--queue", "hpc", ends=False)
    args[args.index("-N") + 1] = "5"  # 20 GPUs: more than the queue holds
    r = k8smpi_job(gang, "submit", *args)
    r.wait_for(r"queued: Kueue holds all 6 pods in queue hpc")
    pods = job_pods(gang, ns, "toolarge")
    assert len(pods) == 6
    for p in pods:
        assert "kueue.x-k8s.io/admission" in [g["name"] for g in p["spec"]["schedulingGates"]]
        assert not p["spec"].get("nodeName")
    r.interrupt()
    assert r.wait(120) == 130, r.err
    assert_nothing_left(gang, ns)


def test_seed_shape_refuses_a_namespace_with_a_default_local_queue(
    gang: Cluster, queued_namespace: str, tmp_path: Path
) -> None:
    """Kueue queues every job of such a namespace on its own: no pod group, so no gang."""
    ns = queued_namespace
    (_, local_queue) = kueue.namespace_objects(ns, queue="default")
    gang.apply([local_queue], ns)
    code, _, err = run(
        gang, "submit", *gpu_job(tmp_path, ns, "refused", "--queue", "hpc", ends=True)
    )
    assert code == 2, err
    assert err == (
        f"k8smpi-job: namespace {ns} has a LocalQueue named default: Kueue would queue the "
        "launcher Job and the workers apart, not as one group; use --shape jobset\n"
    )
    assert leftovers(gang, ns) == []
