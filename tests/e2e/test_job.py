"""k8smpi-job on the cluster: submit's exit status, Ctrl-C, cleanup, status/logs/delete, the
kubectl-apply path with its sidecar, and the JobSet shape.

On kwok nodes no container runs: the kwok stage ``pod-complete-on-request`` ends a launcher
pod with the exit status its annotation gives (``devcluster.jobkit.Nodes``); the workers stay
Running until the job is deleted, as real ones do until mpirun is done with them.
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
    assert_nothing_left,
    job_args,
    job_pods,
    k8smpi_job,
    launcher_pod,
    leftovers,
    placed,
    rendered,
    run,
    to_json,
)

pytestmark = pytest.mark.timeout(600)

NODES = KWOK


@pytest.mark.parametrize("exit_code", [0, 3])
def test_submit_exits_with_the_scripts_status(
    cluster: Cluster, namespace: str, tmp_path: Path, exit_code: int
) -> None:
    code, _out, err = run(
        cluster, "submit", *job_args(NODES, tmp_path, namespace, "exits", exit_code=exit_code)
    )
    assert code == exit_code, err
    assert "k8smpi-job: submitted job exits to namespace" in err
    assert "running: the batch script runs in exits-launcher-" in err
    verdict = "succeeded" if exit_code == 0 else "failed"
    assert f"job exits {verdict}: the batch script exited {exit_code}" in err
    assert "k8smpi-job: deleted job exits" in err
    assert leftovers(cluster, namespace) == []


def test_ctrl_c_cancels_and_leaves_nothing(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    r = k8smpi_job(cluster, "submit", *job_args(NODES, tmp_path, namespace, "forever", ends=False))
    r.wait_for(r"running: the batch script runs")
    assert len(placed(job_pods(cluster, namespace, "forever"), "worker")) == 2
    r.interrupt()
    assert r.wait(120) == 130, r.err
    assert "cancelled; nothing of job forever is left" in r.err
    assert leftovers(cluster, namespace) == []


def test_status_logs_delete(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    code, _, err = run(
        cluster, "submit", "--keep", *job_args(NODES, tmp_path, namespace, "kept", exit_code=0)
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
    if NODES.real:
        assert code == 0 and "hello from the batch script" in out
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
    wait_for(
        lambda: (
            not [
                p
                for p in job_pods(cluster, namespace, "applied")
                if p["metadata"]["labels"]["k8smpi.dev/role"] == "worker"
            ]
        ),
        timeout=60,
        what="the workers gone",
    )


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
def test_jobset_shape(gang: Cluster, namespace: str, tmp_path: Path, exit_code: int) -> None:
    args = job_args(NODES, tmp_path, namespace, "js", exit_code=exit_code)
    code, _, err = run(gang, "submit", "--shape", "jobset", *args)
    assert code == exit_code, err
    assert "(jobset: 2 workers x 1 cpu" in err
    verdict = "succeeded" if exit_code == 0 else "failed"
    assert f"job js {verdict}: the batch script exited {exit_code}" in err
    assert_nothing_left(gang, namespace)
