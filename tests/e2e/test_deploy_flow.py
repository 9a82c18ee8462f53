"""The whole flow of deploy/base on the devcluster, with Open MPI 4.1 and Open MPI 5.

kwok nodes run no containers, so the launcher Job's two steps are exec'd into the launcher pod
(podexec runs them on this machine in the pod's view: its service-account token, namespace,
``KUBERNETES_SERVICE_HOST/PORT``, DNS, hostname and container env; it mounts no volumes and
ignores init containers):

1. the waiter init container's command, exactly as rendered (``k8s-waitfor --statefulset=cnode
   --exec-probe --hostfile-out=... --configmap=hostfile``), its hostfile written to a file
   instead of the emptyDir;
2. the batch script from the rendered ConfigMap, unchanged (plain ``mpirun``), on ``sh -s``'s
   stdin, with the launcher container's environment: the agent and the hostfile come from it.

A test overlay (written per test) keeps the base and changes only what this machine needs: the
MPI launchers live under root's home, so pods run as root (``OMPI_ALLOW_RUN_AS_ROOT``), the
agent and the hostfile are paths on this machine, PATH finds the flavour's MPI, and Open MPI 5
does not bind ranks to cores (every pod shares this machine's 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devcluster.client import Cluster
from devcluster.flow import flow_overlay, run_script, waiter_argv
from devcluster.manifests import DEPLOY, Job, kubectl_path, render
from devcluster.mpijobs import RANK_LINE, run_job
from devcluster.workloads import running_pods, wait_gone

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("flavour", ["openmpi4", "openmpi5"])
def test_batch_script_runs_through_the_launcher_pod(
    cluster: Cluster, namespace: str, flavour: str, tmp_path: Path
) -> None:
    hostfile = tmp_path / "hostfile"
    tmp_path.chmod(0o755)
    overlay = flow_overlay(tmp_path, flavour, hostfile)
    j = Job(render(str(overlay)))
    cluster.kubectl("apply", "-k", str(overlay), "-n", namespace)
    running_pods(cluster, namespace, "k8smpi.dev/role=worker", j.worker_count)
    (launcher,) = running_pods(cluster, namespace, "job-name=launcher", 1)
    pod = launcher["metadata"]["name"]
    exec_ = [kubectl_path(), f"--kubeconfig={cluster.kubeconfig}", "exec", "-n", namespace]

    # 1. The waiter, in the launcher pod, as the launcher's service account.
    waited = run_job([*exec_, pod, "-c", "launcher", "--", *waiter_argv(j, hostfile)], {}, 150)
    assert waited.returncode == 0, waited.describe()
    slots = [ln for ln in hostfile.read_text().splitlines() if ln and not ln.startswith("#")]
    assert slots == [f"{name} slots=4" for name in j.worker_pod_names or []]
    cm = cluster.get("configmap", "hostfile", "-n", namespace)
    assert cm["data"]["hostfile"] == hostfile.read_text()

    # 2. The batch script, unchanged, with the launcher container's environment.
    (script_cm,) = [c for c in j.of_kind("ConfigMap") if "batch.sh" in c.get("data", {})]
    script = script_cm["data"]["batch.sh"]
    assert script == (DEPLOY / "base" / "batch.sh").read_text()
    ran = run_script([*exec_, "-i", pod, "-c", "launcher", "--", "sh", "-s"], script)
    if ran.returncode != 0:
        pytest.fail(f"the batch script failed: {ran!r}", pytrace=False)
    ranks = [m for m in map(RANK_LINE.fullmatch, ran.stdout.splitlines()) if m]
    np = 4 * j.worker_count
    assert sorted(int(m.group(1)) for m in ranks) == list(range(np)), ran.stdout
    assert {(m.group(2), m.group(3)) for m in ranks} == {(str(np), str(np * (np + 1) // 2))}
    hosts = sorted(m.group(4).split(".")[0] for m in ranks)
    assert hosts == sorted([h for h in j.worker_hostnames for _ in range(4)])
    # Every exec went to this job's pods, as the launcher's service account (and the admin's
    # two execs into the launcher pod).
    sa = f"system:serviceaccount:{namespace}:launcher"
    by_sa = {
        e["objectRef"]["name"]
        for e in cluster.exec_events(namespace)
        if e["user"]["username"] == sa
    }
    assert by_sa == set(j.worker_pod_names or [])
    # Nothing of the job is left running here (mpirun and its kubexec agents carry the hostfile
    # path in their environment).
    assert wait_gone(str(hostfile), 30) == []
