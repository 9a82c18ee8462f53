"""Across the job: run ``k8smpi-preflight --json --worker`` in every selected pod through
pods/exec (kubexec's exec stream) and collect one :class:`Report` per pod.

Each pod is told what it asked for (its ``nvidia.com/gpu`` and ``rdma/*`` resources, read here
from its spec), so workers need no API access of their own. A pod where the command cannot run
gets a fatal ``preflight`` finding that says why (not found in the image, exec refused, ...).
"""

from __future__ import annotations

import json
import logging
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from k8smpi_runtime.errors import K8smpiError
from k8smpi_runtime.kube.exec import STDOUT, ExecStream, ExecTarget
from k8smpi_runtime.kubexec.resolve import container_of
from k8smpi_runtime.preflight.kube import gpus_of, rdma_of
from k8smpi_runtime.preflight.model import FAIL, Finding, Report
from k8smpi_runtime.selection import pod_name

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from k8smpi_runtime.kube.config import ClientConfig
    from k8smpi_runtime.selection import Pod

logger = logging.getLogger(__name__)

OUTPUT_LIMIT = 4 << 20


@dataclass(frozen=True)
class Ran:
    code: int
    stdout: bytes
    stderr: bytes


def exec_capture(
    config: ClientConfig, target: ExecTarget, command: Sequence[str], timeout: float
) -> Ran:
    """Run ``command`` in the pod; its exit code and output (errors raise K8smpiError)."""
    stream = ExecStream(config, target, list(command), stdin=False, connect_timeout=timeout)
    out, err = bytearray(), bytearray()
    try:
        for channel, payload in stream.frames():
            buf = out if channel == STDOUT else err
            if len(buf) < OUTPUT_LIMIT:
                buf += payload
        return Ran(stream.exit_code(), bytes(out), bytes(err))
    finally:
        stream.close()


@dataclass(frozen=True)
class Plan:
    """What to run in each pod."""

    command: tuple[str, ...] = ("k8smpi-preflight",)
    ranks: int | None = None
    tls: str | None = None
    container: str | None = None
    timeout: float = 60.0

    def argv(self, pod: Pod) -> list[str]:
        gpus = gpus_of(pod)
        argv = [
            *self.command,
            "--json",
            "--worker",
            "--gpus",
            str(gpus),
            "--gpu-source",
            "nvidia.com/gpu limit",
        ]
        hcas = rdma_of(pod)
        if hcas:
            argv += ["--hcas", str(hcas)]
        argv += ["--ranks", str(self.ranks or max(gpus, 1))]
        if self.tls:
            argv += ["--tls", self.tls]
        return argv


def check_pod(
    config: ClientConfig,
    namespace: str,
    pod: Pod,
    plan: Plan,
    run: Callable[[ClientConfig, ExecTarget, Sequence[str], float], Ran] = exec_capture,
) -> Report:
    name = pod_name(pod)
    argv = plan.argv(pod)
    target = ExecTarget(namespace, name, container_of(pod, plan.container))
    try:
        ran = run(config, target, argv, plan.timeout)
    except K8smpiError as e:
        return _broken(name, f"exec failed: {e}", "pods/exec into the pod")
    if ran.code == 127:
        return _broken(
            name,
            f"`{plan.command[0]}` not found in the pod (exit 127)",
            "the k8smpi tools in the image",
            "build the image FROM the k8smpi base, or pass --remote-command PATH",
        )
    try:
        doc = json.loads(ran.stdout.decode(errors="replace"))
        reports = [Report.from_json(p, pod=name) for p in doc.get("pods") or []]
    except (ValueError, AttributeError, TypeError):
        reports = []
    if len(reports) != 1:
        tail = ran.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        return _broken(
            name,
            f"`{shlex.join(argv[:2])} ...` exited {ran.code} without a report: {tail[0][:200]}",
            "a JSON report",
        )
    return reports[0]


def _broken(name: str, found: str, expected: str, message: str = "") -> Report:
    return Report(name, [Finding("preflight", FAIL, found, expected, message)])


def check_pods(
    config: ClientConfig,
    namespace: str,
    pods: Sequence[Pod],
    plan: Plan,
    *,
    parallelism: int = 16,
    run: Callable[[ClientConfig, ExecTarget, Sequence[str], float], Ran] = exec_capture,
) -> list[Report]:
    """One report per pod, in the pods' order; pods run concurrently (bounded)."""
    with ThreadPoolExecutor(max(1, parallelism), thread_name_prefix="preflight") as pool:
        return list(pool.map(lambda p: check_pod(config, namespace, p, plan, run), pods))
