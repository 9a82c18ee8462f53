"""``--exec-probe``: one harmless exec (``true``) into each pod, through kubexec's exec code.

So that missing pods/exec permissions, or a container that cannot run a command, fail the wait
with a clear line instead of failing inside mpirun. Probes run concurrently (bounded); each
needs pods/exec ``create`` (and ``get`` for clients that upgrade with GET).
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from k8smpi_runtime.errors import ForbiddenError, K8smpiError, UnauthorizedError
from k8smpi_runtime.kube.exec import ExecStream, ExecTarget
from k8smpi_runtime.kubexec.resolve import container_of
from k8smpi_runtime.selection import pod_name
from k8smpi_runtime.waitfor.denied import explain_denied
from k8smpi_runtime.waitfor.readiness import Row, one_line, phase

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from k8smpi_runtime.kube.config import ClientConfig
    from k8smpi_runtime.selection import Pod

logger = logging.getLogger(__name__)

COMMAND = ("true",)


class ProbeDenied(K8smpiError):
    """pods/exec is not allowed: every probe would fail the same way."""


@dataclass(frozen=True)
class ProbeResult:
    pod: str
    row: Row | None
    denied: K8smpiError | None = None


def exec_true(config: ClientConfig, target: ExecTarget, timeout: float) -> int:
    """Run ``true`` in the pod; its exit code (errors raise)."""
    stream = ExecStream(config, target, COMMAND, stdin=False, connect_timeout=timeout)
    try:
        for _ in stream.frames():
            pass
        return stream.exit_code()
    finally:
        stream.close()


def probe_pod(
    config: ClientConfig,
    namespace: str,
    pod: Pod,
    *,
    container: str | None,
    timeout: float,
    run: Callable[[ClientConfig, ExecTarget, float], int] = exec_true,
) -> ProbeResult:
    name = pod_name(pod)
    target = ExecTarget(namespace, name, container_of(pod, container))
    try:
        code = run(config, target, timeout)
    except (UnauthorizedError, ForbiddenError) as e:
        return ProbeResult(name, Row(name, phase(pod), f"exec probe: denied: {one_line(e)}"), e)
    except K8smpiError as e:
        return ProbeResult(name, Row(name, phase(pod), f"exec probe: {one_line(e)}", True))
    if code != 0:
        why = f"exec probe: `{' '.join(COMMAND)}` exited {code}"
        return ProbeResult(name, Row(name, phase(pod), why, True))
    return ProbeResult(name, None)


def probe_all(
    config: ClientConfig,
    namespace: str,
    pods: Sequence[Pod],
    *,
    container: str | None,
    timeout: float,
    parallelism: int = 16,
    run: Callable[[ClientConfig, ExecTarget, float], int] = exec_true,
) -> list[Row]:
    """Probe every pod; the rows of those that failed (raises ProbeDenied on a 401/403)."""
    with ThreadPoolExecutor(max(1, parallelism), thread_name_prefix="probe") as pool:
        results = list(
            pool.map(
                lambda p: probe_pod(
                    config, namespace, p, container=container, timeout=timeout, run=run
                ),
                pods,
            )
        )
    for result in results:
        if result.denied is None:
            continue
        raise ProbeDenied(
            explain_denied(
                result.denied,
                verb="exec into",
                resource=f"pod {result.pod}",
                namespace=namespace,
                needed="--exec-probe needs pods/exec: create, get",
            ).replace("API access denied: ", "--exec-probe: ")
        )
    return [r.row for r in results if r.row is not None]
