"""deploy/ run by Kubernetes on the devcluster's real node (issue 10, items 2-4).

``deploy/base`` is applied as shipped through an overlay that changes only what this machine
needs (:func:`devcluster.flow.write_overlay`: namespace, images from ``make images``, the real
node's placement), and nothing is exec'd by the test: the StatefulSet's workers start from the
example image (the CPU image with one MPI, and the program at /opt/app/bin/app) as uid 1000;
the launcher Job's sidecar owns the workers, its waiter init container waits with the launcher's
own service-account token (through the ``kubernetes`` Service address) and writes the
hostfiles, its main container runs the batch script, whose plain ``mpirun`` starts its daemons
through kubexec over the real exec path (apiserver -> kubelet -> containerd -> runc); ranks in
different pods talk over the pod network. The Job ends Complete or Failed by itself; the test
reads what a user would: the Job's conditions, the launcher's container states and logs, and
the apiserver's audit log (which pod's token made each pods/exec).

- Every MPI: Open MPI 4.1 and 5.0, MPICH and Intel MPI, 16 ranks on 4 workers; for Open MPI 4.1
  its TCP transport's log shows the peers it connected to are the worker pods' IPs. MPICH's and
  Intel MPI's proxies dial back to the launcher by its DNS name (``launcher``, through the
  search path): they could not start a rank otherwise.
- Trees (what the kwok nodes could not run): Open MPI 4.1 and 5.0 with tree spawn (a chain:
  daemons started by daemons, through kubexec inside the worker pods with the pods' token),
  Intel MPI's default launch and a branching tree whose proxies dial their parent.
- Failure: a program that fails makes the Job Failed once (no second pod), mpirun's exit status
  in the launcher container's terminated state; a waiter that gives up does the same with its
  own exit status and explanation.
- Afterwards no worker pod is left: the own-workers sidecar deleted the StatefulSet.

Every job runs in a namespace where Pod Security ``restricted`` is enforced.
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from typing import TYPE_CHECKING

import pytest

from devcluster import flow
from devcluster.manifests import Job, render
from devcluster.workloads import real_node_image, real_node_pod, run_kubexec, running_pods
from tests.e2e.podexec_idle import short_stream_idle_timeout

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from devcluster.client import JSON, Cluster

pytestmark = pytest.mark.timeout(600)

WORKERS = 4
SLOTS = 4  # deploy/base: 4 GPUs per worker, one slot per GPU
NP = WORKERS * SLOTS
JOB_TIMEOUT_S = 300.0
GONE_TIMEOUT_S = 60.0
TREE = {
    "serviceAccountName": "launcher",
    "automountServiceAccountToken": True,
}
"""Tree spawn runs kubexec inside the workers: they need a token with the launcher's rules."""


def run(
    cluster: Cluster,
    namespace: str,
    tmp_path: Path,
    flavour: str,
    *,
    env: dict[str, str | None] | None = None,
    workers: JSON | None = None,
    waiter_env: dict[str, str] | None = None,
    preflight: bool = False,
) -> tuple[Job, flow.Outcome]:
    """deploy/base with ``flavour``'s image on the real node, run to its end."""
    patches = []
    if workers:
        patches.append(flow.pod_patch("apps/v1", "StatefulSet", "cnode", workers))
    if waiter_env:
        waiter = {
            "name": "waiter",
            "env": [{"name": k, "value": v} for k, v in waiter_env.items()],
        }
        # Every init container named, in order: a strategic merge patch reorders them otherwise.
        patches.append(
            flow.pod_patch(
                "batch/v1",
                "Job",
                "launcher",
                {"initContainers": [{"name": "own-workers"}, waiter, {"name": "hydra-hostfile"}]},
            )
        )
    # Pod Security "restricted" is enforced: every pod of the job must pass it to exist.
    labels = "pod-security.kubernetes.io/enforce=restricted"
    cluster.kubectl("label", "namespace", namespace, labels)
    overlay = flow.write_overlay(
        tmp_path,
        cluster,
        namespace,
        flavour=flavour,
        launcher_env=env,
        patches=patches,
        preflight=preflight,
    )
    job = Job(render(str(overlay)))
    flow.launch(cluster, overlay, namespace)
    return job, flow.wait_job(cluster, namespace, JOB_TIMEOUT_S)


def exec_callers(cluster: Cluster, namespace: str) -> list[tuple[str, str]]:
    """(calling pod, target pod) of every pods/exec into ``namespace``: the caller from the
    pod-bound service-account token the request carried."""
    found = []
    for event in cluster.exec_events(namespace):
        extra = event["user"].get("extra", {})
        (caller,) = extra.get("authentication.kubernetes.io/pod-name", ["(not a pod)"])
        found.append((caller, event["objectRef"]["name"]))
    return found


def assert_complete(job: Job, out: flow.Outcome, np: int = NP) -> None:
    assert out.condition == "Complete", out.describe()
    assert len(out.launcher_pods) == 1, out.describe()
    assert out.terminated("waiter").get("exitCode") == 0, out.describe()
    assert out.terminated("launcher").get("exitCode") == 0, out.describe()
    ranks = out.ranks()
    assert [r[0] for r in ranks] == list(range(np)), out.describe()
    assert {(size, total) for _, size, total, _ in ranks} == {(np, np * (np + 1) // 2)}
    hosts = sorted(host.split(".")[0] for *_, host in ranks)
    per_host = np // WORKERS
    assert hosts == sorted(h for h in job.worker_hostnames for _ in range(per_host))


def assert_nothing_left(cluster: Cluster, namespace: str) -> None:
    """The sidecar deleted the StatefulSet: no worker pod, no StatefulSet; the Job stays."""
    assert flow.wait_workers_gone(cluster, namespace, GONE_TIMEOUT_S) == []
    assert cluster.get("statefulsets", "-n", namespace)["items"] == []
    assert flow.launcher_job(cluster, namespace) is not None


@pytest.mark.parametrize("flavour", list(flow.FLAVOURS))
def test_the_batch_script_runs_to_complete(
    cluster: Cluster, namespace: str, flavour: str, tmp_path: Path
) -> None:
    # Open MPI 4.1's TCP transport names each peer address it connects to.
    env: dict[str, str | None] = (
        {"OMPI_MCA_btl_base_verbose": "30"} if flavour == "openmpi4" else {}
    )
    job, out = run(cluster, namespace, tmp_path, flavour, env=env)
    assert_complete(job, out)
    launcher = out.pod
    pod_name = launcher["metadata"]["name"]
    # The batch script is the container's command, unchanged; the launcher asks for no GPU.
    (main,) = launcher["spec"]["containers"]
    assert main["command"] == ["/opt/batch/batch.sh"]
    assert "nvidia.com/gpu" not in json.dumps(main.get("resources", {}))
    assert launcher["spec"]["hostname"] == "launcher"
    # The workers: the example image with this MPI, uid 1000, on the real node's pod network.
    assert sorted(out.workers) == job.worker_pod_names
    subnet = ipaddress.ip_network(cluster.state["real_nodes"]["subnet"])
    worker_ips = set()
    for pod in out.workers.values():
        assert pod["spec"]["securityContext"]["runAsUser"] == 1000
        assert pod["spec"]["containers"][0]["image"].endswith(
            real_node_image(cluster, flow.image_key(flavour)).split("/", 1)[1]
        )
        worker_ips.add(pod["status"]["podIP"])
    assert all(ipaddress.ip_address(ip) in subnet for ip in worker_ips)
    # Every pods/exec (the waiter's probes, mpirun's daemons) came from the launcher pod, with
    # its own token, into exactly this job's workers.
    callers = exec_callers(cluster, namespace)
    assert {caller for caller, _ in callers} == {pod_name}
    assert {target for _, target in callers} == set(job.worker_pod_names or [])
    if flavour == "openmpi4":
        peers = set(re.findall(r"btl:tcp: now connected to ([\d.]+)", out.logs["launcher"]))
        assert len(peers) >= 2, out.logs["launcher"]
        assert peers <= worker_ips, (peers, worker_ips)
    assert_nothing_left(cluster, namespace)


TREES: dict[str, tuple[str, dict[str, str | None]]] = {
    # A chain (radix 1): 3 of the 4 daemons are started by daemons, from inside the workers.
    "openmpi4-tree-spawn": (
        "openmpi4",
        {"OMPI_MCA_plm_rsh_no_tree_spawn": None, "OMPI_MCA_routed_radix": "1"},
    ),
    "openmpi5-tree-spawn": (
        "openmpi5",
        {"PRTE_MCA_plm_ssh_no_tree_spawn": None, "PRTE_MCA_routed_radix": "1"},
    ),
    # Two levels: proxies on 2 workers start the other 2 and those dial their parent's name.
    "impi-branch-count-2": ("impi", {"I_MPI_HYDRA_BRANCH_COUNT": "2"}),
}


@pytest.mark.parametrize("case", list(TREES))
def test_tree_spawn_from_inside_the_workers(
    cluster: Cluster, namespace: str, case: str, tmp_path: Path
) -> None:
    flavour, env = TREES[case]
    job, out = run(cluster, namespace, tmp_path, flavour, env=env, workers=TREE)
    assert_complete(job, out)
    callers = exec_callers(cluster, namespace)
    workers = set(job.worker_pod_names or [])
    from_workers = [(c, t) for c, t in callers if c in workers]
    assert from_workers, f"no daemon was started from inside a worker: {callers}"
    assert {t for _, t in callers} == workers
    assert all(c != t for c, t in from_workers)
    assert_nothing_left(cluster, namespace)


def test_intel_mpi_default_launch(cluster: Cluster, namespace: str, tmp_path: Path) -> None:
    """I_MPI_HYDRA_BRANCH_COUNT unset: Intel's default tree, flat below 16 hosts."""
    job, out = run(cluster, namespace, tmp_path, "impi", env={"I_MPI_HYDRA_BRANCH_COUNT": None})
    assert_complete(job, out)
    (pod_name,) = {c for c, _ in exec_callers(cluster, namespace)}
    assert pod_name == out.pod["metadata"]["name"]
    assert_nothing_left(cluster, namespace)


def test_a_failing_program_fails_the_job_once(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    # Every rank exits 3; mpirun reports the first and exits with its status, and so does the
    # batch script (set -e).
    env: dict[str, str | None] = {"MPI_TEST_PROGRAM": "python3 -c exit(3)"}
    _, out = run(cluster, namespace, tmp_path, "openmpi4", env=env)
    assert out.condition == "Failed", out.describe()
    assert out.reason.startswith("PodFailurePolicy"), out.reason
    assert len(out.launcher_pods) == 1, "the Job started a second launcher pod"
    assert out.job["status"].get("failed") == 1
    assert not out.job["status"].get("active")
    launcher = out.terminated("launcher")
    reported = re.search(r"Exit code:\s+(\d+)", out.logs["launcher"])
    assert reported, out.logs["launcher"]
    assert launcher["exitCode"] == int(reported.group(1)) == 3
    # Its last lines are the container's termination message (kubectl describe shows them).
    assert "Exit code:    3" in launcher["message"]
    assert_nothing_left(cluster, namespace)


def test_a_waiter_that_gives_up_fails_the_job_and_frees_the_workers(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Workers that can never all be placed (17 GPUs each; the node has 16): the waiter gives
    up, the Job fails once with the waiter's status and explanation, and the workers that did
    get placed are deleted -- nothing keeps holding GPUs ("Deadlock is possible!")."""
    too_many = {"containers": [{"name": "worker", "resources": {"limits": {"nvidia.com/gpu": 17}}}]}
    _, out = run(
        cluster,
        namespace,
        tmp_path,
        "openmpi4",
        workers=too_many,
        waiter_env={"K8SMPI_WAIT_TIMEOUT": "15s"},
    )
    assert out.condition == "Failed", out.describe()
    assert len(out.launcher_pods) == 1
    waiter = out.terminated("waiter")
    assert waiter["exitCode"] == 6, out.describe()  # k8s-waitfor: timed out
    assert "Insufficient nvidia.com/gpu" in waiter["message"]
    assert f"exit code {waiter['exitCode']}" in out.reason
    assert out.terminated("launcher") == {}  # the batch script never started
    assert_nothing_left(cluster, namespace)


def test_the_preflight_fails_a_job_whose_gpus_are_not_there(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """deploy/ as shipped runs k8smpi-preflight in every worker before mpirun. The real node
    advertises nvidia.com/gpu without having a GPU -- a broken node as a user meets one: the
    Job fails once, in the waiter, with the finding; the script never starts; nothing is left."""
    _, out = run(cluster, namespace, tmp_path, "openmpi4", preflight=True)
    assert out.condition == "Failed", out.describe()
    assert len(out.launcher_pods) == 1
    waiter = out.terminated("waiter")
    assert waiter["exitCode"] == 7, out.describe()  # k8s-waitfor: a fatal preflight finding
    assert "k8s-waitfor: FATAL cnode-0: gpu: found 0 GPUs, expected 4" in waiter["message"]
    assert f"exit code {waiter['exitCode']}" in out.reason
    assert out.terminated("launcher") == {}  # the batch script never started
    assert_nothing_left(cluster, namespace)
    sys.stderr.write(f"\ndeploy/ job failed by its preflight in {out.seconds:.0f} s:\n")
    sys.stderr.write(waiter["message"] + "\n")


# -- silent daemons against containerd's stream idle timeout (issue 10 item 5) -----------------

IDLE_TIMEOUT_S = 3
QUIET_S = 10 * IDLE_TIMEOUT_S
SILENT: dict[str, tuple[str, dict[str, str | None]]] = {
    # Hydra's proxies stay connected through kubexec for the job's life.
    "mpich": (
        "mpich",
        {"HYDRA_LAUNCHER_EXTRA_ARGS": "--no-forward-stdin -o ServerAliveInterval=1"},
    ),
    # Tree spawn: the daemons are not --daemonize'd, their agents stay connected.
    "openmpi4-tree-spawn": (
        "openmpi4",
        {
            **TREES["openmpi4-tree-spawn"][1],
            "OMPI_MCA_plm_rsh_agent": "/opt/mpi/bin/kubexec -o ServerAliveInterval=1",
        },
    ),
}


@pytest.fixture
def short_idle(cluster: Cluster) -> Iterator[None]:
    """The real node's containerd with ``stream_idle_timeout`` at 3 s (default 4 h; hardened
    sites set minutes)."""
    (node,) = cluster.state["real_nodes"]["nodes"][:1]
    with short_stream_idle_timeout(cluster, IDLE_TIMEOUT_S, f"containerd.{node['name']}"):
        yield


@pytest.mark.restarts_cluster
def test_containerd_cuts_a_silent_stream_and_kubexec_says_so(
    cluster: Cluster, namespace: str, short_idle: None
) -> None:
    """The timeout is real: a command silent for longer is cut after 3 s. kubectl exec then
    exits 0 as if the command had succeeded; kubexec without keepalives in time and without a
    re-attach window exits 255 and names the likely cause; with its default window it re-attaches
    after each cut, and with keepalives the stream is never cut: both run the command to its
    end."""
    cluster.apply([real_node_pod(cluster, "quiet", labels={"app": "quiet"})], namespace)
    running_pods(cluster, namespace, "app=quiet", 1)
    command = "sleep 12; echo done"
    kubectl = cluster.kubectl(
        "exec", "-n", namespace, "quiet", "--", "sh", "-c", command, check=False
    )
    assert kubectl.returncode == 0 and b"done" not in kubectl.stdout, kubectl
    # --reattach 0: the cut itself (with a window kubexec re-attaches after each cut, below).
    cut = run_kubexec(cluster, "--reattach", "0", "--namespace", namespace, "quiet", command)
    assert cut.returncode == 255 and cut.stdout == b"", cut
    assert b"the wrapper's exit record never came" in cut.stderr, cut.stderr
    assert b"stream idle timeout? see -o ServerAliveInterval" in cut.stderr, cut.stderr
    # The default re-attach window: every cut stream is re-attached, the command runs to its end.
    healed = run_kubexec(cluster, "--namespace", namespace, "quiet", command)
    assert (healed.returncode, healed.stdout) == (0, b"done\n"), healed
    kept = run_kubexec(
        cluster, "-o", "ServerAliveInterval=1", "--namespace", namespace, "quiet", command
    )
    assert (kept.returncode, kept.stdout) == (0, b"done\n"), kept


@pytest.mark.restarts_cluster
@pytest.mark.parametrize("case", list(SILENT))
def test_a_job_whose_daemons_are_silent_for_10x_the_idle_timeout_completes(
    cluster: Cluster, namespace: str, case: str, short_idle: None, tmp_path: Path
) -> None:
    """Every rank sleeps 30 s without a word, under containerd's 3 s idle timeout: the daemons'
    exec streams live on kubexec's keepalives, and the Job completes."""
    flavour, env = SILENT[case]
    program = {"MPI_TEST_PROGRAM": f"sleep {QUIET_S}"}
    workers = TREE if "tree" in case else None
    _, out = run(cluster, namespace, tmp_path, flavour, env={**env, **program}, workers=workers)
    assert out.condition == "Complete", out.describe()
    assert out.terminated("launcher").get("exitCode") == 0, out.describe()
    assert out.seconds >= QUIET_S
    assert_nothing_left(cluster, namespace)
