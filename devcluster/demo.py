"""``make demo``: a traditional batch script that calls plain ``mpirun``, run by Kubernetes.

On the devcluster's real node (kubelet + containerd + runc), for Open MPI 4.1 and then Open MPI
5.0: ``deploy/base`` is applied as shipped (4 workers x 4 GPUs in a StatefulSet, a headless
Service, the launcher's least-privilege RBAC and its Job), through an overlay that only picks
the images ``make images`` built and places the pods on the real node
(:func:`devcluster.flow.write_overlay`). Then Kubernetes runs it and the demo shows what a
user would look at:

1. the launcher pod's waiter (``k8s-waitfor``) as it waits for the workers, live;
2. the workers, placed on the node, with their pod IPs;
3. the launcher's log: the unchanged batch script's output, every rank's line;
4. the Job's status (Complete), and that no worker pod is left (the launcher's own-workers
   sidecar deleted the StatefulSet when the script ended).

Every failure ends in one line ``demo: <why>; <what to do>`` (the waiter's own explanation
when it gave up), never a traceback; exit 0 when both jobs completed.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from devcluster import flow
from devcluster.client import REPO, Cluster, devcluster
from devcluster.manifests import DEPLOY
from devcluster.workloads import real_node_image

DEMO_FLAVOURS = ("openmpi4", "openmpi5")
JOB_TIMEOUT_S = 300.0
GONE_TIMEOUT_S = 60.0


class DemoFailed(Exception):
    """A step failed; the message is the one line the user sees."""


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"   {line}", flush=True)


def waiter_explanation(message: str) -> str:
    """The waiter's own reason from its termination message: its last line that is not a
    progress line (``k8s-waitfor: 12.3s ready 2/4 ...``) or a table row."""
    lines = [ln.strip() for ln in message.splitlines() if ln.startswith("k8s-waitfor: ")]
    reasons = [ln for ln in lines if " ready " not in ln.split(";")[0]]
    return flow.short((reasons or lines or ["(no explanation in its log)"])[-1], 300)


def stream_waiter(cluster: Cluster, namespace: str) -> str:
    """Follow the launcher pod's waiter log until it ends; the pod's name."""
    deadline = time.monotonic() + 120

    def waiter_started() -> str | None:
        for pod in flow.pods(cluster, namespace, flow.LAUNCHER):
            for status in pod.get("status", {}).get("initContainerStatuses", []):
                state = status.get("state", {})
                if status["name"] == "waiter" and ("running" in state or "terminated" in state):
                    return str(pod["metadata"]["name"])
        return None

    while (pod := waiter_started()) is None:
        if time.monotonic() > deadline:
            raise DemoFailed(
                f"the launcher pod's waiter did not start within 120 s; see `kubectl get pods "
                f"-n {namespace}` and `kubectl describe pod -n {namespace}`"
            )
        time.sleep(0.5)
    follow = subprocess.Popen(
        [
            cluster.kubectl_path,
            f"--kubeconfig={cluster.kubeconfig}",
            "logs", "-f", "-n", namespace, pod, "-c", "waiter",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    for line in follow.stdout or ():
        show(line)
    follow.wait(timeout=30)
    return pod


def run_flavour(cluster: Cluster, flavour: str) -> float:
    """One job with ``flavour``'s image, from apply to nothing left; its wall time."""
    started = time.monotonic()
    namespace = cluster.create_namespace(f"demo-{flavour}")
    try:
        with tempfile.TemporaryDirectory(prefix="k8smpi-demo-") as tmp:
            _run(cluster, flavour, namespace, Path(tmp))
    finally:
        say(f"Deleting namespace {namespace}")
        cluster.delete_namespace(namespace)
    return time.monotonic() - started


def _run(cluster: Cluster, flavour: str, namespace: str, tmp: Path) -> None:
    title = flow.FLAVOURS[flavour]
    image = real_node_image(cluster, flow.image_key(flavour))
    say(f"{title}: deploy/base in namespace {namespace}, workers and launcher from {image}")
    overlay = flow.write_overlay(tmp, cluster, namespace, flavour=flavour)
    show(cluster.kubectl("apply", "-k", str(overlay)).stdout.decode())

    say("The launcher pod's init containers: own-workers (sidecar), then the waiter, live")
    pod = stream_waiter(cluster, namespace)

    say(f"The workers, placed (and the launcher pod {pod})")
    show(cluster.kubectl("get", "pods", "-n", namespace, "-o", "wide").stdout.decode())

    outcome = flow.wait_job(cluster, namespace, JOB_TIMEOUT_S)
    if not outcome.condition:
        raise DemoFailed(
            f"the Job did not end within {JOB_TIMEOUT_S:.0f} s; see `kubectl describe job -n "
            f"{namespace} launcher` and `kubectl logs -n {namespace} job/launcher`"
        )
    say(f"The launcher's log: kubectl logs -n {namespace} job/launcher -c launcher")
    show(outcome.logs.get("launcher", ""))
    say(f"The Job: kubectl get job -n {namespace} launcher")
    show(cluster.kubectl("get", "job", "-n", namespace, "launcher").stdout.decode())
    if outcome.condition == "Failed":
        raise DemoFailed(failure(outcome, namespace))
    check_ranks(outcome)

    left = flow.wait_workers_gone(cluster, namespace, GONE_TIMEOUT_S)
    if left:
        raise DemoFailed(
            f"worker pods still there {GONE_TIMEOUT_S:.0f} s after the Job ended: {left}; see "
            f"`kubectl logs -n {namespace} {pod} -c own-workers`"
        )
    say(f"Nothing of the job left running: kubectl logs -n {namespace} {pod} -c own-workers")
    show(flow.logs(cluster, namespace, pod, "own-workers"))
    show(cluster.kubectl("get", "statefulsets,pods", "-n", namespace).stdout.decode())


def failure(outcome: flow.Outcome, namespace: str) -> str:
    """The one line for a failed Job: the waiter's explanation or mpirun's exit status."""
    pod = outcome.pod["metadata"]["name"] if outcome.launcher_pods else "?"
    waiter = outcome.terminated("waiter")
    if waiter.get("exitCode"):
        return (
            f"the waiter gave up (k8s-waitfor exit {waiter['exitCode']}): "
            f"{waiter_explanation(waiter.get('message', ''))}; its table: `kubectl logs -n "
            f"{namespace} {pod} -c waiter`"
        )
    launcher = outcome.terminated("launcher")
    if launcher.get("exitCode"):
        return (
            f"the batch script failed (exit {launcher['exitCode']}, mpirun's status); see "
            f"`kubectl logs -n {namespace} {pod} -c launcher`"
        )
    why = flow.short(outcome.reason)
    return f"the Job failed ({why}); see `kubectl describe job -n {namespace} launcher`"


def check_ranks(outcome: flow.Outcome) -> None:
    ranks = outcome.ranks()
    np = len(ranks)
    want = (np, np * (np + 1) // 2)
    if np == 0 or [r[0] for r in ranks] != list(range(np)) or any(r[1:3] != want for r in ranks):
        raise DemoFailed(
            "the launcher's log does not show one rank line per rank agreeing on the allreduce;"
            " see the log above"
        )
    per_pod: dict[str, int] = {}
    for *_, host in ranks:
        per_pod[host.split(".")[0]] = per_pod.get(host.split(".")[0], 0) + 1
    print(
        f"\n   Result: {np} ranks, allreduce sum={want[1]} on every rank; ranks per pod: "
        + ", ".join(f"{h}={n}" for h, n in sorted(per_pod.items())),
        flush=True,
    )


def nodes_table(cluster: Cluster) -> str:
    columns = (
        "NODE:.metadata.name,GPUS:.status.allocatable.nvidia\\.com/gpu,"
        "CPU:.status.allocatable.cpu,RUNTIME:.status.nodeInfo.containerRuntimeVersion,"
        "READY:.status.conditions[?(@.type=='Ready')].status"
    )
    return cluster.kubectl("get", "nodes", "-o", f"custom-columns={columns}").stdout.decode()


def demo() -> int:
    say("Starting the devcluster: control plane, kwok nodes, the real node (kubelet + containerd)")
    up = devcluster("up")
    if up.returncode != 0:
        raise DemoFailed(
            "the devcluster did not start (its message is above); fix that, then `make demo` again"
        )
    cluster = Cluster.from_devcluster(REPO / ".devcluster")
    if not (cluster.state.get("real_nodes") or {}).get("nodes"):
        raise DemoFailed(
            "the devcluster runs no real node (DEVCLUSTER_REAL_NODES=0?); unset it and run"
            " `make demo` again"
        )
    show(nodes_table(cluster))
    base = (DEPLOY / "base").relative_to(REPO)
    say(f"The job: {base}/ (kubectl apply -k); the batch script {base}/batch.sh, unchanged:")
    show((DEPLOY / "base" / "batch.sh").read_text())
    times = {}
    for flavour in DEMO_FLAVOURS:
        times[flavour] = run_flavour(cluster, flavour)
    say(
        "Done: the same batch script ran unchanged with "
        + " and ".join(f"{flow.FLAVOURS[f]} ({t:.0f} s)" for f, t in times.items())
    )
    return 0


def main() -> int:
    started = time.monotonic()
    try:
        code = demo()
    except DemoFailed as e:
        print(f"demo: {e}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted", file=sys.stderr, flush=True)
        return 130
    except (AssertionError, OSError, subprocess.SubprocessError) as e:
        # The cluster helpers say what failed in their message (kubectl's error, a missing
        # image and how to get it).
        text = " ".join(str(e).split()) or type(e).__name__
        print(f"demo: {flow.short(text, 400)}", file=sys.stderr, flush=True)
        return 1
    print(f"   (demo wall time {time.monotonic() - started:.0f} s)", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
