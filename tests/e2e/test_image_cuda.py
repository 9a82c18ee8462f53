"""The GPU base with CUDA from PyPI (``python -m images.build base-pypi``) builds here and is
what it says (issue 12): CUDA 12.8.1's runtime and headers from NVIDIA's PyPI wheels on Debian,
the driver stubs generated from the headers for the link steps only, UCX and Open MPI built
CUDA-aware from Debian's sources (the build's own checks: ompi_info and ucx_info report CUDA),
an MPI program over UCX in the example image built FROM it, and k8smpi-preflight inside it:
the image's CUDA read from the image, no driver on this machine, and the message a user sees --
in a container here, and in pods on the devcluster's real node (a job of it included).

No GPU here: the CUDA transports cannot load without the host's libcuda.so.1, so UCX's CUDA
support is checked as built (configure line, libuct_cuda.so), not used.
"""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING

import pytest

from devcluster.jobkit import job_args, real_nodes
from devcluster.jobkit import run as job_run
from devcluster.workloads import real_node_extra_image, real_node_pod, running_pods
from tests.e2e.test_images_build import ANY_UID, NP, UCX, Built, _ranks, building, run, sh
from tests.e2e.test_preflight import PREFLIGHT

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from devcluster.client import Cluster

# A cold build compiles UCX and Open MPI (about 9 min on 2 cores); part of `make test`, and
# `make test-cuda` runs this module alone.
pytestmark = [pytest.mark.e2e, pytest.mark.cuda_image, pytest.mark.timeout(5400)]


@pytest.fixture(scope="module")
def cuda(request: pytest.FixtureRequest) -> Iterator[Built]:
    with building(request, ["base-pypi", "example"], example_from="base-pypi") as done:
        yield done


def test_versions_record_cuda_from_pypi_and_cuda_aware_mpi(cuda: Built) -> None:
    status, text = sh(cuda, cuda.tag("base-pypi"), "cat /etc/k8smpi/versions.json")
    assert status == 0, text
    record = json.loads(text)
    assert record["build_args"]["CUDA_SOURCE"] == "pypi"
    detected = record["detected"]
    assert detected["cuda"] == record["build_args"]["CUDA_VERSION"] == "12.8.1"
    assert (detected["openmpi"], detected["openmpi.cuda"], detected["openmpi.pml_ucx"]) == (
        "4.1.4",
        True,
        True,
    )
    assert (detected["ucx"], detected["ucx.cuda"], detected["ucx.gdrcopy"]) == (
        "1.13.1",
        True,
        False,
    )
    labels = cuda.client.images.get(cuda.tag("base-pypi")).labels
    assert labels["dev.k8smpi.cuda.source"] == "pypi"
    assert labels["org.opencontainers.image.base.name"] == "debian:bookworm"


def test_ompi_info_and_ucx_info_report_cuda(cuda: Built) -> None:
    script = (
        "ompi_info --parsable --all 2>/dev/null | grep -c mpi_built_with_cuda_support:value:true; "
        "ucx_info -v | grep -o -- '--with-cuda=/usr/local/cuda'; "
        "ls /opt/ucx/lib/ucx/libuct_cuda.so"
    )
    status, out = sh(cuda, cuda.tag("base-pypi"), script)
    assert status == 0, out
    assert out.split() == ["1", "--with-cuda=/usr/local/cuda", "/opt/ucx/lib/ucx/libuct_cuda.so"]


def test_runtime_has_cudart_and_no_stub_or_compiler(cuda: Built) -> None:
    """The stubs are for link steps: at run time libcuda.so.1 must be the host driver's."""
    probe = (
        "ldconfig -p | grep -o 'libcudart.so.12 '; ldconfig -p | grep -c 'libcuda.so.1 ' || true; "
        "ls /usr/local/cuda/lib64/stubs 2>&1 | grep -c 'No such file'; "
        "for c in gcc cc nvcc; do command -v $c; done; "
        "dpkg-query -W -f='${Package}\\n' | grep -E -- '-dev$' || true"
    )
    status, out = sh(cuda, cuda.tag("base-pypi"), probe)
    assert status == 0, out
    assert out.split() == ["libcudart.so.12", "0", "1"]
    status, out = sh(cuda, cuda.devel_tag("base-pypi"), "ls /usr/local/cuda/lib64/stubs")
    assert out.split() == ["libcuda.so", "libnvidia-ml.so"]


@pytest.mark.parametrize("user", [None, ANY_UID], ids=["image-user", "arbitrary-uid"])
def test_mpirun_np4_over_ucx_in_the_cuda_image(cuda: Built, user: str | None) -> None:
    argv = ["mpirun", "--oversubscribe", "-np", str(NP), *UCX, "app"]
    status, out = run(cuda, cuda.tag("example"), argv, user=user)
    assert status == 0, out
    assert _ranks(out) == [(r, NP, NP * (NP + 1) // 2) for r in range(NP)], out


def test_preflight_in_the_cuda_image_without_a_driver(cuda: Built) -> None:
    """The image's CUDA read from the image; no driver here: absent for a pod that asked for
    no GPU, fatal for one that asked for a GPU, with the versions and the rule."""
    tag = cuda.tag("base-pypi")
    status, text = sh(cuda, tag, "k8smpi-preflight --gpus 0 --json 2>/dev/null")
    assert status == 0, text
    checks = {f["check"]: f for f in json.loads(text)["pods"][0]["findings"]}
    assert checks["cuda"]["status"] == "absent"
    assert "CUDA 12.8 (12.8.1 from /etc/k8smpi/versions.json" in checks["cuda"]["found"]
    assert checks["cuda"]["expected"] == "driver >= 570.26"
    status, text = sh(cuda, tag, "k8smpi-preflight --gpus 1 2>&1 >/dev/null")
    assert status == 1, text
    fatal = text.splitlines()
    assert any(
        line.startswith("k8smpi-preflight: FATAL (here): cuda: found no NVIDIA driver")
        and "expected driver >= 570.26" in line
        for line in fatal
    ), text
    assert any("gpu: found 0 GPUs, expected 1 (--gpus)" in line for line in fatal), text


# -- the same image in pods on the real node ---------------------------------------------------


def test_preflight_on_the_real_node_in_the_cuda_image(
    cuda: Built, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The image in containerd on the devcluster's real node, which advertises nvidia.com/gpu
    but has neither a GPU nor an NVIDIA driver. What a user sees: the preflight's table across
    two pods (one asked for no GPU: absent; one asked for a GPU: fatal, with the image's CUDA
    read from the image and the driver it needs), then a job of this image with a GPU per
    worker, failed by its waiter before mpirun, in one line."""
    started = time.monotonic()
    tag = real_node_extra_image(cluster, "base-pypi")
    assert tag == cuda.tag("base-pypi")
    imported = time.monotonic() - started
    pods = [
        real_node_pod(cluster, "cu-0", labels={"app": "cu"}),
        real_node_pod(cluster, "cu-1", labels={"app": "cu"}, limits={"nvidia.com/gpu": 1}),
    ]
    for pod in pods:
        pod["spec"]["containers"][0]["image"] = tag
    cluster.apply(pods, namespace)
    running_pods(cluster, namespace, "app=cu", 2)
    argv = [str(PREFLIGHT), "-l", "app=cu", "--count", "2", "-n", namespace]
    shown = cluster.run_with_pod_dns(namespace, argv, timeout=180)
    sys.stderr.write(
        f"\nbase-pypi imported into the real node in {imported:.0f} s; the preflight:\n"
        f"{shown.stdout}{shown.stderr}"
    )
    assert shown.returncode == 1, shown.stdout + shown.stderr
    fatal = [ln for ln in shown.stderr.splitlines() if " FATAL " in ln]
    assert any(
        ln.startswith("k8smpi-preflight: FATAL cu-1: cuda: found no NVIDIA driver")
        and "expected driver >= 570.26" in ln
        for ln in fatal
    ), shown.stderr
    assert any("cu-1: gpu: found 0 GPUs, expected 1 (nvidia.com/gpu limit)" in ln for ln in fatal)
    assert not [ln for ln in fatal if "FATAL cu-0:" in ln]
    doc = json.loads(cluster.run_with_pod_dns(namespace, [*argv, "--json"], timeout=180).stdout)
    reports = {p["pod"]: {f["check"]: f for f in p["findings"]} for p in doc["pods"]}
    for name in ("cu-0", "cu-1"):  # the image's CUDA, read from the image in the pod
        assert "CUDA 12.8 (12.8.1 from /etc/k8smpi/versions.json" in reports[name]["cuda"]["found"]
    assert reports["cu-0"]["cuda"]["status"] == "absent"
    assert reports["cu-1"]["cuda"]["status"] == "fail"

    # The same image as a job: the waiter's preflight fails it before mpirun.
    nodes = real_nodes(cluster)
    args = [*job_args(nodes, tmp_path, namespace, "cuda"), "--image", tag, "--gpus", "1"]
    started = time.monotonic()
    code, out, err = job_run(cluster, "submit", *args)
    took = time.monotonic() - started
    sys.stderr.write(f"\nk8smpi-job submit of it with --gpus 1 ({took:.1f} s):\n{err}")
    assert code == 125, err
    assert out == ""
    (line,) = [ln for ln in err.splitlines() if "job cuda failed" in ln]
    assert "the waiter exited 7 before the script ran: preflight: cuda-cnode-0: " in line, err
    assert "cuda-cnode-1: cuda: found no NVIDIA driver" in err
