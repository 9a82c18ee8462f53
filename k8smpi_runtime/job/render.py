"""One job's manifests in the shape the spec asks for, as objects or as YAML text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from k8smpi_runtime.job import jobset, seed, yamlout

if TYPE_CHECKING:
    from k8smpi_runtime.job.spec import JobSpec

JSON = dict[str, Any]


def manifests(spec: JobSpec) -> list[JSON]:
    """The objects, in an order ``kubectl apply`` and ``submit`` create them in."""
    return jobset.manifests(spec) if spec.shape == "jobset" else seed.manifests(spec)


def summary(spec: JobSpec) -> str:
    """``4 workers x 4 nvidia.com/gpu + 1 rdma/hca, Open MPI 5 (PRRTE)``."""
    per = " + ".join(f"{n} {r}" for r, n in spec.resources)
    if spec.cpu:
        per = f"{per}, {spec.cpu} cpu" if per else f"{spec.cpu} cpu"
    what = f"{spec.workers} worker{'s' if spec.workers != 1 else ''}"
    return f"{what}{' x ' + per if per else ''}, {spec.flavour.title}"


def text(spec: JobSpec) -> str:
    """YAML for ``kubectl apply -f -``, with a header saying what it is."""
    queue = f", Kueue queue {spec.queue}" if spec.queue else ""
    header = (
        f"# k8smpi-job: job {spec.name} in namespace {spec.namespace}: {summary(spec)}; "
        f"{spec.shape} shape{queue}.\n"
        f"# Apply with kubectl apply -f -; remove with k8smpi-job delete {spec.name} -n "
        f"{spec.namespace}.\n"
    )
    return header + yamlout.dump_all(manifests(spec))
