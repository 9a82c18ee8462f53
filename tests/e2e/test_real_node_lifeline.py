"""kubexec against a real container runtime: its lifeline and its user switch (issue 10, item 6).

On the devcluster's real node (kubelet -> containerd -> runc), kubexec runs inside a launcher
pod with that pod's service-account token, as deploy/'s launcher does, and starts commands in a
worker pod of the CPU image:

- ``kill -9`` of kubexec in the launcher pod: the exec stream breaks, containerd closes the
  command's stdin, kubexec's wrapper in the worker container ends the command's whole session.
  20 trials; a watcher inside the worker container timestamps the moment no process of the
  session is left (both clocks are the node's). Median and maximum are printed.
- A daemon the command detached on purpose (``orted --daemonize``) outlives kubexec's normal
  exit, 40 times in a row (a race with containerd's closing of the exec's stdin killed a few
  percent of them before the wrapper waited for its own exit).
- The user switch in the real CPU image: a root worker container runs the command as kubexec's
  own uid through ``setpriv`` (``-l`` picks another uid, without a passwd entry); a worker with
  ``runAsUser`` runs it as that uid directly, and a different uid is refused with one line that
  names ``securityContext.runAsUser``.
"""

from __future__ import annotations

import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pytest

from devcluster.client import Cluster, wait_for
from devcluster.workloads import kubexec_rbac, real_node_pod

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(600)

TRIALS = 20
BOUND_S = 5.0
"""kubexec's grace period: TERM, then KILL after it; a sleep ends at the TERM."""
KUBEXEC = "/opt/mpi/bin/kubexec"

# In the worker: wait until a process carries the marker, say so, then poll every 20 ms until
# none does and print the time. The marker comes in two pieces ($1$2), so this shell's own
# command line (its arguments separated by NULs) never holds it.
WATCH = r"""
m="$1$2"
present() { grep -qs -- "$m" /proc/[0-9]*/cmdline; }
n=0
while ! present; do
    n=$((n + 1)); [ "$n" -gt 600 ] && { echo never; exit 1; }
    sleep 0.05
done
echo up
while present; do sleep 0.02; done
date +%s.%N
"""


@dataclass(frozen=True)
class Pods:
    cluster: Cluster
    namespace: str

    def exec(self, pod: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[bytes]:
        return self.cluster.kubectl(
            "exec", "-n", self.namespace, pod, "--", *argv, check=False, timeout=timeout
        )

    def kubexec(self, launcher: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        """kubexec inside ``launcher`` (stdin /dev/null: the MPI mode)."""
        return self.exec(launcher, "sh", "-c", f'exec {KUBEXEC} "$@" </dev/null', "sh", *args)


def ready(cluster: Cluster, namespace: str, names: list[str]) -> None:
    def all_ready() -> bool:
        pods = cluster.get("pods", "-n", namespace)["items"]
        up = {
            p["metadata"]["name"]
            for p in pods
            if any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        }
        return set(names) <= up

    wait_for(all_ready, timeout=120, what=f"pods {names} Ready")


@pytest.fixture(scope="module")
def pods(cluster: Cluster) -> Iterator[Pods]:
    namespace = cluster.create_namespace("lifeline")
    root = {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}
    try:
        objects = [
            *kubexec_rbac("launcher"),
            real_node_pod(cluster, "launcher", run_as=1000, serviceAccountName="launcher"),
            # deploy/'s worker shape: no token, the pause container as PID 1.
            real_node_pod(
                cluster,
                "worker",
                run_as=1000,
                automountServiceAccountToken=False,
                shareProcessNamespace=True,
            ),
            real_node_pod(cluster, "worker-root", run_as=None, securityContext=root),
            real_node_pod(cluster, "worker-4242", run_as=4242),
        ]
        cluster.apply(objects, namespace)
        ready(cluster, namespace, ["launcher", "worker", "worker-root", "worker-4242"])
        yield Pods(cluster, namespace)
    finally:
        cluster.delete_namespace(namespace)


def one_trial(p: Pods, marker: str) -> float:
    """Start ``sleep <marker>`` in the worker through kubexec in the launcher pod, kill -9
    kubexec, and return the seconds until no process of the session is left in the worker."""
    watcher = subprocess.Popen(
        [
            p.cluster.kubectl_path,
            f"--kubeconfig={p.cluster.kubeconfig}",
            "exec", "-n", p.namespace, "worker", "--",
            "sh", "-c", WATCH, "sh", marker[:2], marker[2:],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        # kubexec in the background of a launcher-pod shell that prints its pid and leaves.
        # KUBEXEC_REATTACH=0: the lifeline at once (with a window the pod first waits for a
        # re-attach: tests/e2e/test_real_node_reattach.py).
        start = (
            f'KUBEXEC_REATTACH=0 {KUBEXEC} worker "sleep {marker}" </dev/null >/dev/null 2>&1 &'
            " echo $!"
        )
        started = p.exec("launcher", "sh", "-c", start)
        assert started.returncode == 0, started.stderr
        pid = started.stdout.decode().strip()
        assert watcher.stdout is not None
        line = watcher.stdout.readline().strip()
        assert line == "up", f"{line!r} {watcher.stderr.read() if watcher.stderr else ''}"
        killed = p.exec("launcher", "sh", "-c", 'date +%s.%N && kill -9 "$0"', pid)
        assert killed.returncode == 0, killed.stderr
        kill_time = float(killed.stdout.decode().split()[0])
        gone = watcher.stdout.readline().strip()
        assert watcher.wait(timeout=BOUND_S + 30) == 0
        return float(gone) - kill_time
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()


def test_kill_9_of_kubexec_in_the_launcher_pod_ends_the_session(pods: Pods) -> None:
    times = [one_trial(pods, f"77{i:03d}{i:02d}") for i in range(TRIALS)]
    summary = (
        f"lifeline: {TRIALS} trials, session gone {statistics.median(times):.2f} s (median), "
        f"{max(times):.2f} s (max) after kill -9 of kubexec"
    )
    print(summary)
    assert max(times) < BOUND_S, summary


DETACHED = 40


def test_a_daemon_detached_on_purpose_survives_a_normal_exit(pods: Pods) -> None:
    """``orted --daemonize``'s way (Open MPI without tree spawn): the command starts a process
    in a session of its own and exits at once. That process must outlive kubexec's normal exit,
    every time: the wrapper's exit closes the exec's output, and containerd then closes the
    exec's stdin while the wrapper is still exiting -- which must not read as "kubexec is
    gone". 40 calls from the launcher pod; every daemon is still there afterwards."""
    loop = (
        f"for i in $(seq 1 {DETACHED}); do {KUBEXEC} worker "
        '"(setsid sleep 55$i </dev/null >/dev/null 2>&1 &); exit 0" </dev/null || exit 1; done'
    )
    ran = pods.exec("launcher", "sh", "-c", loop, timeout=300)
    assert ran.returncode == 0, ran.stderr
    find = 'for d in /proc/[0-9]*; do tr "\\0" " " <"$d/cmdline"; echo; done | grep -c "^sleep 55"'
    try:
        # A teardown keeps looking for late processes for at least 1 s: wait past that.
        time.sleep(2)
        alive = pods.exec("worker", "sh", "-c", find)
        assert alive.stdout.decode().strip() == str(DETACHED)
    finally:
        kill = (
            'for d in /proc/[0-9]*; do case "$(tr "\\0" " " <"$d/cmdline")" in'
            ' "sleep 55"*) kill "${d#/proc/}";; esac; done'
        )
        pods.exec("worker", "sh", "-c", kill)


def test_root_container_runs_the_command_as_kubexecs_uid(pods: Pods) -> None:
    """kubexec runs as uid 1000; the worker container as root: setpriv switches."""
    ran = pods.kubexec("launcher", "worker-root", "id -u; id -g; id -G; echo $HOME")
    assert ran.returncode == 0, ran.stderr
    # uid 1000 is the image's user "mpi" (home /home/mpi, group 0).
    assert ran.stdout.decode().split() == ["1000", "0", "0", "/home/mpi"]
    other = pods.kubexec("launcher", "-l", "4242", "worker-root", "id -u; id -g")
    assert other.returncode == 0, other.stderr
    assert other.stdout.decode().split() == ["4242", "4242"]  # no passwd entry: gid = uid
    # The command really is no longer root: it cannot write where only root can.
    denied = pods.kubexec("launcher", "worker-root", "touch /etc/k8smpi-probe")
    assert denied.returncode != 0


def test_run_as_user_container(pods: Pods) -> None:
    """The worker runs as uid 4242 (runAsUser): the same uid needs nothing, another is refused
    with one line that names what to set."""
    same = pods.kubexec("launcher", "-l", "4242", "worker-4242", "id -u")
    assert (same.returncode, same.stdout) == (0, b"4242\n"), same.stderr
    refused = pods.kubexec("launcher", "worker-4242", "id -u")
    assert refused.returncode == 255
    # (kubectl exec adds its own "command terminated with exit code 255" line.)
    message = [
        line
        for line in refused.stderr.decode().strip().splitlines()
        if not line.startswith("command terminated with exit code")
    ]
    assert len(message) == 1, message
    assert message[0].startswith("kubexec: ")
    assert "securityContext.runAsUser=1000" in message[0]
    assert refused.stdout == b""
