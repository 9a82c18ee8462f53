"""All checks of one pod, run where the tool runs (in the pod: the node's facts as it sees them)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from k8smpi_runtime.preflight import gpu, image, limits, mpi, native, rdma, ucx
from k8smpi_runtime.preflight.model import Report

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from k8smpi_runtime.preflight.host import Host
    from k8smpi_runtime.preflight.native import CudaProbe, VerbsProbe
    from k8smpi_runtime.selection import Pod


@dataclass(frozen=True)
class Expect:
    """What this pod asked for (None: unknown) and how it will be used."""

    gpus: int | None = None
    gpu_source: str = "--gpus"
    hcas: int | None = None
    #: Ranks in this pod (for /dev/shm and pids); default: its GPUs, at least 1.
    ranks: int | None = None
    tls: str | None = None

    def rank_count(self) -> int:
        return self.ranks or max(self.gpus or 0, 1)


@dataclass(frozen=True)
class Live:
    """The live calls; all None under ``--root`` (a fixture tree has no driver to call)."""

    cuda: Callable[[], CudaProbe] | None = native.probe_cuda
    verbs: Callable[[], VerbsProbe] | None = native.probe_verbs
    ucx_info: Callable[[], str | None] | None = ucx.run_ucx_info


OFF = Live(None, None, None)


def node_checks(host: Host, expect: Expect, live: Live, name: str = "") -> Report:
    """The node's side: GPUs, CUDA, RDMA, UCX, limits."""
    report = Report(name)
    img = image.load(host)
    report.extend(
        gpu.checks(
            host, img, requested=expect.gpus, request_source=expect.gpu_source, probe=live.cuda
        )
    )
    hca = rdma.facts(host)
    gpus = len(gpu.facts(host).devices)
    report.extend(rdma.check_devices(hca, expect.hcas))
    report.extend(rdma.check_stack(hca, img, live.verbs if hca.given else None))
    report.extend(rdma.check_gpudirect(host, hca, img, gpus=gpus))
    report.extend(ucx.check(live.ucx_info, tls=expect.tls, hcas=len(hca.given), gpus=gpus))
    ranks = expect.rank_count()
    report.add(limits.check_memlock(host, rdma=bool(hca.given)))
    report.add(limits.check_shm(host, ranks=ranks))
    report.add(limits.check_nofile(host))
    report.add(limits.check_pids(host, ranks=ranks))
    return report


def launcher_checks(
    host: Host,
    report: Report,
    *,
    hostfile: str | None,
    pods: Sequence[Pod] | None = None,
    namespace: str | None = None,
) -> None:
    """The launcher's side that needs no API: the agent variables and the hostfile."""
    img = image.load(host)
    report.launcher = True
    report.add(mpi.check_env(host, img))
    report.add(mpi.check_hostfile(host, hostfile, pods, namespace))
