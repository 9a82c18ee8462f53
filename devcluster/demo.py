"""``make demo``: a traditional batch script that calls plain ``mpirun``, run on Kubernetes.

On the devcluster, for Open MPI 4.1 and then Open MPI 5: apply ``deploy/base`` (4 workers x 4
GPUs in a StatefulSet, a headless Service, the launcher's least-privilege RBAC and its Job),
then do what the launcher pod's containers do, inside that pod (kwok runs no containers, so the
steps are exec'd into it; podexec gives them the pod's view: the launcher's service-account
token, namespace, DNS and container env -- the in-cluster code paths):

1. the waiter init container: ``k8s-waitfor`` until every worker is Ready and resolvable, then
   the hostfile (slots from each worker's GPUs) into a file and the ConfigMap;
2. the batch script ``deploy/base/batch.sh``, unchanged: plain ``mpirun``; the environment
   carries the agent (kubexec) and the hostfile.

Then it checks the allreduce over all ranks, that nothing of the job is left running, and
deletes the namespace. The plumbing is the one the e2e test ``tests/e2e/test_deploy_flow.py``
uses, so the demo shows exactly what CI proves. Exit 0 when every step held.
"""

from __future__ import annotations

import re
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from devcluster.client import REPO, Cluster, devcluster
from devcluster.flow import flow_overlay, run_script, waiter_argv
from devcluster.manifests import DEPLOY, Job, kubectl_path, render
from devcluster.mpijobs import RANK_LINE
from devcluster.workloads import running_pods, wait_gone

FLAVOURS = {"openmpi4": "Open MPI 4.1", "openmpi5": "Open MPI 5.0"}


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"   {line}", flush=True)


def fail(text: str) -> int:
    print(f"demo: {text}", file=sys.stderr, flush=True)
    return 1


def run_flavour(cluster: Cluster, flavour: str) -> int:
    ns = f"demo-{flavour}-{secrets.token_hex(2)}"
    cluster.kubectl("create", "namespace", ns)
    with tempfile.TemporaryDirectory(prefix="k8smpi-demo-") as tmp:
        tmp_path = Path(tmp)
        tmp_path.chmod(0o755)
        hostfile = tmp_path / "hostfile"
        try:
            return _run(cluster, flavour, ns, tmp_path, hostfile)
        finally:
            say(f"Cleaning up namespace {ns}")
            cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=180s", timeout=200)
            show("deleted")


def _run(cluster: Cluster, flavour: str, ns: str, tmp: Path, hostfile: Path) -> int:
    say(f"{FLAVOURS[flavour]}: applying deploy/base in namespace {ns}")
    overlay = flow_overlay(tmp, flavour, hostfile)
    job = Job(render(str(overlay)))
    show(cluster.kubectl("apply", "-k", str(overlay), "-n", ns).stdout.decode())
    running_pods(cluster, ns, "k8smpi.dev/role=worker", job.worker_count)
    (launcher,) = running_pods(cluster, ns, "job-name=launcher", 1)
    pod = launcher["metadata"]["name"]
    show(cluster.kubectl("get", "pods", "-n", ns, "-o", "wide").stdout.decode())
    exec_ = [kubectl_path(), f"--kubeconfig={cluster.kubeconfig}", "exec", "-n", ns]

    say(f"Launcher pod {pod}, init container 'waiter': k8s-waitfor, then the hostfile")
    argv = waiter_argv(job, hostfile)
    show("$ " + " ".join(Path(argv[0]).name if i == 0 else a for i, a in enumerate(argv)))
    waited = subprocess.run(
        [*exec_, pod, "-c", "launcher", "--", *argv],
        capture_output=True,
        text=True,
        check=False,
        timeout=200,
    )
    show(waited.stderr)
    if waited.returncode != 0:
        return fail(f"k8s-waitfor exited {waited.returncode}")
    show(f"$ cat {hostfile.name}  (also in ConfigMap 'hostfile')")
    show(hostfile.read_text())

    (script_cm,) = [c for c in job.of_kind("ConfigMap") if "batch.sh" in c.get("data", {})]
    script = script_cm["data"]["batch.sh"]
    say(f"Launcher pod {pod}, container 'launcher': the batch script, unchanged")
    show(script)
    ran = run_script([*exec_, "-i", pod, "-c", "launcher", "--", "sh", "-s"], script)
    lines = ran.stdout.splitlines()
    ranks = sorted((m for m in map(RANK_LINE.fullmatch, lines) if m), key=lambda m: int(m.group(1)))
    show("\n".join(m.group(0) for m in ranks) or ran.stdout)
    if ran.returncode != 0:
        show(ran.stderr)
        return fail(f"the batch script exited {ran.returncode}")
    np = 4 * job.worker_count
    sums = {(m.group(2), m.group(3)) for m in ranks}
    if [int(m.group(1)) for m in ranks] != list(range(np)) or sums != {
        (str(np), str(np * (np + 1) // 2))
    }:
        return fail(f"expected {np} ranks agreeing on sum={np * (np + 1) // 2}")
    per_pod: dict[str, int] = {}
    for m in ranks:
        host = re.sub(r"\..*", "", m.group(4))
        per_pod[host] = per_pod.get(host, 0) + 1
    say(
        f"Result: {np} ranks, allreduce sum={np * (np + 1) // 2} on every rank; ranks per pod: "
        + ", ".join(f"{h}={n}" for h, n in sorted(per_pod.items()))
    )
    left = wait_gone(str(hostfile), 30)
    if left:
        return fail(f"processes of the job still running: {left}")
    show("no daemon or rank of the job is left running")
    return 0


def main() -> int:
    say("Starting the devcluster: etcd, apiserver, controller-manager, scheduler, kwok, CoreDNS")
    up = devcluster("up")
    if up.returncode != 0:
        return up.returncode
    cluster = Cluster.from_devcluster(REPO / ".devcluster")
    show(
        cluster.kubectl(
            "get",
            "nodes",
            "-o",
            "custom-columns=NODE:.metadata.name,GPUS:.status.allocatable.nvidia\\.com/gpu,"
            "HCA:.status.allocatable.rdma/hca,CPU:.status.allocatable.cpu,"
            "READY:.status.conditions[?(@.type=='Ready')].status",
        ).stdout.decode()
    )
    base = (DEPLOY / "base").relative_to(REPO)
    say(f"The job: {base}/ (kubectl apply -k), batch script {base}/batch.sh")
    for flavour in FLAVOURS:
        rc = run_flavour(cluster, flavour)
        if rc != 0:
            return rc
    say("Done: the same batch script ran unchanged with Open MPI 4.1 and Open MPI 5.0")
    return 0


if __name__ == "__main__":
    sys.exit(main())
