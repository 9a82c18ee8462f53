"""Running ``k8smpi-job`` against the cluster under test, and finding what a job left behind.

Where the jobs run is a :class:`Nodes` value: :data:`KWOK` -- the devcluster's simulated nodes,
where nothing runs in a container, so a job's launcher ends when the kwok stage
``pod-complete-on-request`` ends it (devcluster/kwokstages.py: an annotation gives the delay
and the exit status) -- or :func:`real_nodes`: the devcluster's real node, where the batch
script runs in ``make images``' example image and calls mpirun on the MPI test program; the
exit status is mpirun's.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from devcluster.client import JSON, Cluster, wait_for
from devcluster.workloads import real_node_image

if TYPE_CHECKING:
    from collections.abc import Sequence

K8SMPI_JOB = str(Path(sys.executable).parent / "k8smpi-job")
"""The console script in the venv (``pip install -e .``)."""
EXIT_CODE = "kwok.k8smpi.dev/exit-code"
DELAY = "kwok.k8smpi.dev/delay"
CONTAINER = "kwok.k8smpi.dev/container"
MESSAGE = "kwok.k8smpi.dev/message"
PROGRAM = "app"
"""The example image's MPI test program (devcluster/mpi/allreduce.c, on its PATH)."""


@dataclass(frozen=True)
class Nodes:
    """Where a test's jobs run, and how their batch script's exit status comes about."""

    name: str
    image: str
    #: Placement and what else these nodes need (the devcluster's own nodes; other tests add
    #: and remove extra ones).
    options: tuple[str, ...]
    #: Each worker's size (with the launcher's, it must fit the nodes).
    sizes: tuple[str, ...] = ("--cpu", "1")
    real: bool = False

    def script(self, tmp: Path, exit_code: int, *, ends: bool = True) -> Path:
        """The batch script. On real nodes it runs mpirun: the MPI test program (exit 0), a
        program that exits ``exit_code``, or one that sleeps until the job is deleted."""
        path = tmp / "batch.sh"
        lines = ["#!/bin/sh", "echo 'hello from the batch script'"]
        if self.real:
            lines.append('echo "kubexec scope: $KUBEXEC_SELECTOR"')
            if not ends:
                lines.append("exec mpirun sleep 3600")
            elif exit_code == 0:
                lines.append(f"exec mpirun {PROGRAM}")
            else:
                lines.append(f"exec mpirun sh -c 'exit {exit_code}'")
        else:
            lines.append(f"exit {exit_code}")
        path.write_text("\n".join(lines) + "\n")
        return path

    def ending(self, exit_code: int, delay: str = "3s") -> list[str]:
        """Options that make the launcher end with ``exit_code`` (kwok: the stage does it)."""
        if self.real:
            return []
        return [
            "--launcher-annotation",
            f"{EXIT_CODE}={exit_code}",
            "--launcher-annotation",
            f"{DELAY}={delay}",
        ]


KWOK = Nodes(
    name="kwok",
    image="k8smpi/cpu:dev",
    # kwok's GPUs are numbers on a node object: a preflight in the pods would find none (the
    # preflight in a job is tested on the real node).
    options=("--node-selector", "k8smpi.dev/devcluster=true", "--no-preflight"),
)


def real_nodes(cluster: Cluster) -> Nodes:
    """The devcluster's real node(s): ``make images``' example image (never pulled), the real
    node's label and taint, workers small enough that a job fits this machine's cores."""
    info = cluster.state["real_nodes"]
    ((label, value),) = info["label"].items()
    taint = info["taint"]
    return Nodes(
        name="real",
        image=real_node_image(cluster, "example"),
        options=(
            "--node-selector",
            f"{label}={value}",
            "--toleration",
            f"{taint['key']}={taint['value']}:{taint['effect']}",
            "--image-pull-policy",
            "Never",
        ),
        sizes=(
            "--cpu",
            "250m",
            "--slots",
            "1",
            "--launcher-cpu",
            "100m",
            "--launcher-memory",
            "256Mi",
        ),
        real=True,
    )


def job_args(
    nodes: Nodes,
    tmp: Path,
    namespace: str,
    name: str,
    *,
    exit_code: int = 0,
    workers: int = 2,
    ends: bool = True,
    delay: str = "3s",
) -> list[str]:
    """Inputs of a small CPU job (uid 4242, as every e2e tool runs) ending with ``exit_code``
    (``ends=False``: a launcher that runs until the job is deleted)."""
    return [
        str(nodes.script(tmp, exit_code, ends=ends)),
        "--name",
        name,
        "--image",
        nodes.image,
        "-N",
        str(workers),
        *nodes.sizes,
        "--user",
        "4242",
        "-n",
        namespace,
        *nodes.options,
        *(nodes.ending(exit_code, delay) if ends else []),
    ]


@dataclass
class Running:
    """A ``k8smpi-job`` process, its output collected as it comes."""

    proc: subprocess.Popen[str]
    stdout: list[str] = field(default_factory=list)
    stderr: list[str] = field(default_factory=list)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _pump(self, stream: object, into: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            into.append(line)

    def start(self) -> Running:
        for stream, into in ((self.proc.stdout, self.stdout), (self.proc.stderr, self.stderr)):
            t = threading.Thread(target=self._pump, args=(stream, into), daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def wait(self, timeout: float = 240) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"k8smpi-job did not end within {timeout:.0f}s:\n{self.err}"
            ) from None
        for t in self._threads:
            t.join(5)
        return code

    def wait_for(self, pattern: str, timeout: float = 120) -> str:
        """The first stderr line matching ``pattern``."""
        rx = re.compile(pattern)

        def seen() -> str | None:
            if self.proc.poll() is not None and not any(rx.search(ln) for ln in self.stderr):
                raise AssertionError(f"k8smpi-job ended before {pattern!r}:\n{self.err}")
            return next((ln for ln in self.stderr if rx.search(ln)), None)

        return str(wait_for(seen, timeout=timeout, what=f"{pattern!r} from k8smpi-job"))

    def interrupt(self) -> None:
        self.proc.send_signal(signal.SIGINT)

    @property
    def err(self) -> str:
        return "".join(self.stderr)

    @property
    def out(self) -> str:
        return "".join(self.stdout)


def k8smpi_job(cluster: Cluster, *args: str) -> Running:
    env = {**os.environ, "KUBECONFIG": str(cluster.kubeconfig)}
    proc = subprocess.Popen(
        [K8SMPI_JOB, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    return Running(proc).start()


def run(cluster: Cluster, *args: str, timeout: float = 240) -> tuple[int, str, str]:
    r = k8smpi_job(cluster, *args)
    code = r.wait(timeout)
    return code, r.out, r.err


# -- leftovers ---------------------------------------------------------------------------------

#: What every namespace has by itself (and a Kueue test's LocalQueue, which it made).
_EXPECTED = {("serviceaccount", "default"), ("configmap", "kube-root-ca.crt")}


def served(cluster: Cluster, resource: str) -> bool:
    proc = cluster.kubectl("get", resource, "-A", "--no-headers", "-o", "name", check=False)
    return proc.returncode == 0


def leftovers(cluster: Cluster, namespace: str) -> list[str]:
    """Everything in ``namespace`` but what a new namespace has (and its LocalQueues)."""
    kinds = ["pods", "statefulsets", "jobs", "services", "configmaps", "serviceaccounts"]
    kinds += ["roles", "rolebindings"]
    kinds += [
        k for k in ("jobsets.jobset.x-k8s.io", "workloads.kueue.x-k8s.io") if served(cluster, k)
    ]
    items = cluster.get(",".join(kinds), "-n", namespace)["items"]
    found = []
    for item in items:
        kind = str(item["kind"]).lower()
        name = item["metadata"]["name"]
        if (kind, name) not in _EXPECTED:
            found.append(f"{kind}/{name}")
    return sorted(found)


def assert_nothing_left(cluster: Cluster, namespace: str, timeout: float = 30) -> None:
    wait_for(
        lambda: not leftovers(cluster, namespace),
        timeout=timeout,
        what=f"nothing left in {namespace} (still: {leftovers(cluster, namespace)})",
    )


# -- pods --------------------------------------------------------------------------------------


def job_pods(cluster: Cluster, namespace: str, job: str) -> list[JSON]:
    items: list[JSON] = cluster.get("pods", "-n", namespace, "-l", f"k8smpi.dev/job={job}")["items"]
    return items


def placed(pods: Sequence[JSON], role: str | None = None) -> list[JSON]:
    return [
        p
        for p in pods
        if p["spec"].get("nodeName")
        and (role is None or p["metadata"]["labels"].get("k8smpi.dev/role") == role)
    ]


def launcher_pod(cluster: Cluster, namespace: str, job: str, timeout: float = 60) -> JSON:
    def found() -> JSON | None:
        pods = [
            p
            for p in job_pods(cluster, namespace, job)
            if p["metadata"]["labels"].get("k8smpi.dev/role") == "launcher"
        ]
        return pods[0] if pods else None

    pod: JSON = wait_for(found, timeout=timeout, what=f"the launcher pod of {job}")
    return pod


def end_pod(cluster: Cluster, namespace: str, pod: str, code: int, **extra: str) -> None:
    """Ask the kwok stage to end ``pod`` now with ``code`` (and a container and a message)."""
    args = [f"{EXIT_CODE}={code}", f"{DELAY}=0s"]
    for key, value in extra.items():
        args.append(f"kwok.k8smpi.dev/{key}={value}")
    cluster.kubectl("annotate", "--overwrite", "-n", namespace, f"pod/{pod}", *args)


def rendered(cluster: Cluster, *args: str) -> list[JSON]:
    """``k8smpi-job render ARGS``, parsed."""
    code, out, err = run(cluster, "render", *args)
    if code != 0:
        raise AssertionError(f"k8smpi-job render exited {code}: {err}")
    return [d for d in yaml.safe_load_all(out) if d]


def to_json(objects: list[JSON]) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
