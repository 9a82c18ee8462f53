"""k8smpi-job on the cluster: submit's exit status, Ctrl-C, cleanup, status/logs/delete, the
kubectl-apply path with its sidecar, the JobSet shape, and the preflight before mpirun.

Where a job's pods run (``devcluster.jobkit.Nodes``), the tests that follow a job to its end
run twice:

- on kwok nodes no container runs: the kwok stage ``pod-complete-on-request`` ends a launcher
  pod with the exit status its annotation gives; the workers stay Running until the job is
  deleted, as real ones do until mpirun is done with them;
- on the real node (kubelet, containerd, runc) the batch script runs in ``make images``'
  example image and calls mpirun, which starts its daemons in the workers through kubexec; the
  exit status is mpirun's, the output is the launcher's log, the sidecar that owns and releases
  the workers runs in the launcher pod, the waiter's preflight runs in the workers.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devcluster.client import Cluster, wait_for
from devcluster.jobkit import (
    KWOK,
    Nodes,
    assert_nothing_left,
    job_args,
    job_pods,
    k8smpi_job,
    launcher_pod,
    leftovers,
    placed,
    real_nodes,
    rendered,
    run,
    to_json,
)

pytestmark = pytest.mark.timeout(600)

NODES = KWOK
"""Where the tests that are about rendering and the API server (not about a run) place pods."""


@pytest.fixture(params=["kwok", "real"])
def nodes(request: pytest.FixtureRequest, cluster: Cluster) -> Nodes:
    return KWOK if request.param == "kwok" else real_nodes(cluster)


def wait_workers_gone(cluster: Cluster, namespace: str, job: str) -> None:
    def gone() -> bool:
        pods = job_pods(cluster, namespace, job)
        return not [p for p in pods if p["metadata"]["labels"]["k8smpi.dev/role"] == "worker"]

    wait_for(gone, timeout=60, what="the workers gone")


@pytest.mark.parametrize("exit_code", [0, 3])
def test_submit_exits_with_the_scripts_status(
    cluster: Cluster, namespace: str, tmp_path: Path, nodes: Nodes, exit_code: int
) -> None:
    code, out, err = run(
        cluster, "submit", *job_args(nodes, tmp_path, namespace, "exits", exit_code=exit_code)
    )
    assert code == exit_code, err
    assert "k8smpi-job: submitted job exits to namespace" in err
    assert "running: the batch script runs in exits-launcher-" in err
    verdict = "succeeded" if exit_code == 0 else "failed"
    assert f"job exits {verdict}: the batch script exited {exit_code}" in err
    assert "k8smpi-job: deleted job exits" in err
    assert leftovers(cluster, namespace) == []
    if nodes.real:
        # The launcher's output, streamed: mpirun ran the program in both workers (kubexec,
        # limited to this job's pods by the launcher pod's own label).
        assert "hello from the batch script" in out
        assert "kubexec scope: k8smpi.dev/job=exits" in out
        if exit_code == 0:
            ranks = sorted(ln for ln in out.splitlines() if ln.startswith("rank="))
            assert [r.split(" host=")[0] for r in ranks] == [
                "rank=0 size=2 sum=3",
                "rank=1 size=2 sum=3",
            ], out
            assert {r.split(" host=")[1] for r in ranks} == {"exits-cnode-0", "exits-cnode-1"}
        # Once a job's pods were placed, none said "placing" again (the released workers).
        assert "placing:" not in err.split("running: ")[-1], err


def test_ctrl_c_cancels_and_leaves_nothing(
    cluster: Cluster, namespace: str, tmp_path: Path, nodes: Nodes
) -> None:
    r = k8smpi_job(cluster, "submit", *job_args(nodes, tmp_path, namespace, "forever", ends=False))
    r.wait_for(r"running: the batch script runs")
    assert len(placed(job_pods(cluster, namespace, "forever"), "worker")) == 2
    if nodes.real:  # mpirun's ranks run in the workers when Ctrl-C comes
        wait_for(lambda: "hello from the batch script" in r.out, timeout=60, what="output")
    r.interrupt()
    assert r.wait(120) == 130, r.err
    assert "cancelled; nothing of job forever is left" in r.err
    assert leftovers(cluster, namespace) == []


def test_status_logs_delete(cluster: Cluster, namespace: str, tmp_path: Path, nodes: Nodes) -> None:
    code, _, err = run(
        cluster, "submit", "--keep", *job_args(nodes, tmp_path, namespace, "kept", exit_code=0)
    )
    assert code == 0, err
    assert "kept for 1h: k8smpi-job logs kept" in err
    # The finished launcher stays; the workers are gone (their GPUs are back).
    wait_for(
        lambda: not placed(job_pods(cluster, namespace, "kept"), "worker"),
        timeout=60,
        what="the workers gone",
    )
    code, out, err = run(cluster, "status", "kept", "-n", namespace)
    assert code == 0, err
    assert f"job kept (statefulset) in namespace {namespace}: Succeeded" in out
    assert "the batch script exited 0" in out
    assert "kept-launcher-" in out
    code, out, _ = run(cluster, "status", "-n", namespace)
    assert code == 0
    assert out.splitlines()[1].split()[:3] == ["kept", "statefulset", "Succeeded"]
    code, out, err = run(cluster, "logs", "kept", "-n", namespace)
    if nodes.real:
        assert code == 0 and "hello from the batch script" in out
        assert "rank=1 size=2 sum=3" in out, out
        code, out, err = run(cluster, "logs", "kept", "-n", namespace, "--waiter")
        assert code == 0, err
        assert "exec probe passed" in out and "preflight passed in 2 pods" in out, out
        # The sidecar, in the real pod: the workers were the Job's, released at the end.
        pod = launcher_pod(cluster, namespace, "kept")["metadata"]["name"]
        sidecar = cluster.kubectl("logs", "-n", namespace, pod, "-c", "own-workers")
        assert sidecar.stdout.decode().splitlines()[-1] == (
            "k8smpi-job own-workers: deleted StatefulSet kept-cnode: the workers are released"
        )
    else:
        # kwok nodes keep no container logs: one line saying so, the documented status.
        assert code == 8, err
        assert len(err.splitlines()) == 1 and err.startswith("k8smpi-job: ")
    code, _, err = run(cluster, "delete", "kept", "-n", namespace)
    assert code == 0, err
    assert "nothing of it is left" in err
    assert leftovers(cluster, namespace) == []
    code, _, err = run(cluster, "delete", "kept", "-n", namespace)
    assert code == 8
    assert err == f"k8smpi-job: no job kept in namespace {namespace}\n"


def test_a_taken_name_is_refused(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    args = job_args(NODES, tmp_path, namespace, "twice")
    (service_account,) = [o for o in rendered(cluster, *args) if o["kind"] == "ServiceAccount"]
    cluster.apply([service_account], namespace)  # as if a job of that name existed
    code, _, err = run(cluster, "submit", *args)
    assert code == 5, err
    assert "job twice already exists" in err
    # Nothing of the refused submit was created; the other "job" is untouched.
    assert leftovers(cluster, namespace) == ["serviceaccount/twice-launcher"]


def test_what_the_job_needs_is_checked_first(cluster: Cluster, tmp_path: Path) -> None:
    args = job_args(NODES, tmp_path, "no-such-namespace", "x")
    code, _, err = run(cluster, "submit", *args)
    assert code == 2
    assert err == "k8smpi-job: no namespace no-such-namespace (kubectl create namespace ...)\n"
    code, _, err = run(
        cluster, "submit", *job_args(NODES, tmp_path, "default", "x"), "--queue", "q"
    )
    assert code == 2
    assert err.startswith("k8smpi-job: --queue q: ")


# -- kubectl apply -f - of render's output, and the launcher's sidecar ------------------------


def test_render_applies_and_the_sidecar_owns_and_releases_the_workers(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The path without submit: kubectl apply; the sidecar's own program, with the launcher's
    token, ties the workers to the Job and deletes them at SIGTERM (as the kubelet sends it
    when the script has ended); the Job's deletion would take them too (garbage collector)."""
    objects = rendered(cluster, *job_args(NODES, tmp_path, namespace, "applied"))
    cluster.kubectl("apply", "-f", "-", input=to_json(objects))
    pod = launcher_pod(cluster, namespace, "applied")["metadata"]["name"]
    wait_for(
        lambda: len(placed(job_pods(cluster, namespace, "applied"), "worker")) == 2,
        timeout=60,
        what="2 workers placed",
    )
    token = cluster.kubectl("create", "token", "applied-launcher", "-n", namespace)
    kubeconfig = cluster.token_kubeconfig(token.stdout.decode().strip(), namespace)
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "K8SMPI_POD_NAME": pod}
    sidecar = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "k8smpi-job"),
            "own-workers",
            "--statefulset=applied-cnode",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        job_uid = cluster.get("job", "applied-launcher", "-n", namespace)["metadata"]["uid"]

        def owned() -> bool:
            sts = cluster.get("statefulset", "applied-cnode", "-n", namespace)
            refs = sts["metadata"].get("ownerReferences") or []
            return [r["uid"] for r in refs] == [job_uid]

        wait_for(owned, timeout=60, what="the StatefulSet owned by the launcher Job")
        time.sleep(0.5)
        sidecar.send_signal(signal.SIGTERM)
        _, err = sidecar.communicate(timeout=60)
        assert sidecar.returncode == 0, err
        assert "deleted StatefulSet applied-cnode: the workers are released" in err
    finally:
        if sidecar.poll() is None:
            sidecar.kill()
    wait_workers_gone(cluster, namespace, "applied")


def test_deleting_the_job_takes_the_adopted_workers(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The backstop: an adopted StatefulSet goes with its Job (the TTL, or a manual delete)."""
    objects = rendered(cluster, *job_args(NODES, tmp_path, namespace, "backstop"))
    cluster.kubectl("apply", "-f", "-", input=to_json(objects))
    job = cluster.get("job", "backstop-launcher", "-n", namespace)
    ref = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "name": "backstop-launcher",
        "uid": job["metadata"]["uid"],
    }
    patch = json.dumps({"metadata": {"ownerReferences": [ref]}})
    cluster.kubectl(
        "patch", "statefulset", "backstop-cnode", "-n", namespace, "--type=merge", "-p", patch
    )
    cluster.kubectl("delete", "job", "backstop-launcher", "-n", namespace, "--wait=true")
    wait_for(
        lambda: (
            cluster.kubectl(
                "get", "statefulset", "backstop-cnode", "-n", namespace, check=False
            ).returncode
            != 0
        ),
        timeout=60,
        what="the garbage collector deleting the StatefulSet",
    )


def test_server_accepts_every_shape(gang: Cluster, queued_namespace: str, tmp_path: Path) -> None:
    """Server-side dry run of render's output, both shapes, with and without a queue, in a
    namespace that enforces Pod Security ``restricted``: accepted without a warning."""
    ns = queued_namespace
    for mode in ("enforce", "warn"):
        gang.kubectl("label", "namespace", ns, f"pod-security.kubernetes.io/{mode}=restricted")
    for shape in ("statefulset", "jobset"):
        for queue in ((), ("--queue", "hpc")):
            args = [*job_args(NODES, tmp_path, ns, "dry"), "--shape", shape, *queue]
            objects = rendered(gang, *args)
            proc = gang.kubectl(
                "apply", "--dry-run=server", "-f", "-", "-o", "name", input=to_json(objects)
            )
            assert len(proc.stdout.decode().split()) == len(objects), (shape, queue)
            assert "Warning" not in proc.stderr.decode(), proc.stderr.decode()
    assert leftovers(gang, ns) == []


# -- the JobSet shape --------------------------------------------------------------------------


@pytest.mark.parametrize("exit_code", [0, 4])
def test_jobset_shape(
    gang: Cluster, namespace: str, tmp_path: Path, nodes: Nodes, exit_code: int
) -> None:
    args = job_args(nodes, tmp_path, namespace, "js", exit_code=exit_code)
    code, out, err = run(gang, "submit", "--shape", "jobset", *args)
    assert code == exit_code, err
    assert "(jobset: 2 workers x " in err
    verdict = "succeeded" if exit_code == 0 else "failed"
    assert f"job js {verdict}: the batch script exited {exit_code}" in err
    assert_nothing_left(gang, namespace)
    if nodes.real and exit_code == 0:
        hosts = {ln.split(" host=")[1] for ln in out.splitlines() if ln.startswith("rank=")}
        assert hosts == {"js-cnode-0-0", "js-cnode-0-1"}, out  # JobSet's worker host names


# -- the real node: the sidecar on its own, the preflight before mpirun -----------------------


def test_real_node_render_applies_and_the_sidecar_owns_then_releases(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """kubectl apply of render's output, no submit: the launcher pod's own sidecar gives the
    workers to the Job, the script runs, the kubelet stops the sidecar, which deletes them."""
    nodes = real_nodes(cluster)
    objects = rendered(cluster, *job_args(nodes, tmp_path, namespace, "applied"))
    cluster.kubectl("apply", "-f", "-", input=to_json(objects))
    done = ("--for=condition=Complete", "job/applied-launcher", "--timeout=120s")
    cluster.kubectl("wait", *done, "-n", namespace, timeout=180)
    wait_workers_gone(cluster, namespace, "applied")
    pod = launcher_pod(cluster, namespace, "applied")["metadata"]["name"]
    sidecar = cluster.kubectl("logs", "-n", namespace, pod, "-c", "own-workers")
    assert sidecar.stdout.decode().splitlines() == [
        "k8smpi-job own-workers: StatefulSet applied-cnode now belongs to Job applied-launcher",
        "k8smpi-job own-workers: deleted StatefulSet applied-cnode: the workers are released",
    ]
    log = cluster.kubectl("logs", "-n", namespace, pod, "-c", "launcher").stdout.decode()
    assert "rank=1 size=2 sum=3" in log, log


def test_real_node_time_limit_stops_mpirun(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """--time: the kubelet stops the launcher pod at its deadline (mpirun and its ranks with
    it), the sidecar releases the workers; 124 and nothing left."""
    args = job_args(real_nodes(cluster), tmp_path, namespace, "late", ends=False)
    code, _, err = run(cluster, "submit", *args, "--time", "20s")
    assert code == 124, err
    assert "job late failed: the job ran past its time limit (20s) and was stopped" in err
    assert leftovers(cluster, namespace) == []


def test_real_node_gpu_the_worker_cannot_see_fails_before_mpirun(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The real node advertises nvidia.com/gpu but has no GPU: the waiter's preflight fails
    the job, with the reason, before the script runs; submit says so in one line."""
    nodes = real_nodes(cluster)
    args = [*job_args(nodes, tmp_path, namespace, "nogpu", exit_code=0), "--gpus", "1"]
    started = time.monotonic()
    code, out, err = run(cluster, "submit", *args)
    took = time.monotonic() - started
    assert code == 125, err
    assert out == ""  # the script never ran
    (line,) = [ln for ln in err.splitlines() if "job nogpu failed" in ln]
    assert line.startswith(
        "k8smpi-job: job nogpu failed: the waiter exited 7 before the script ran: preflight: "
        "nogpu-cnode-0: gpu: found 0 GPUs, expected 1 (nvidia.com/gpu limit) -- "
    ), err
    assert line.endswith("(and 1 more)"), err
    # The preflight's table follows the line, then the other worker's finding.
    assert "k8s-waitfor: FATAL nogpu-cnode-1: gpu: found 0 GPUs, expected 1" in err
    assert leftovers(cluster, namespace) == []
    sys.stderr.write(f"\nsubmit of a job whose workers lack their GPU: {took:.1f} s\n{err}")
    # Without the preflight the same job gets as far as the script (mpirun, no GPU needed).
    code, out, err = run(cluster, "submit", *args, "--name", "nocheck", "--no-preflight")
    assert code == 0, err
    assert "rank=1 size=2 sum=3" in out
