"""The GPU base with CUDA from PyPI (``python -m images.build base-pypi``) builds here and is
what it says (issue 12): CUDA 12.8.1's runtime and headers from NVIDIA's PyPI wheels on Debian,
the driver stubs generated from the headers for the link steps only, UCX and Open MPI built
CUDA-aware from Debian's sources (the build's own checks: ompi_info and ucx_info report CUDA),
an MPI program over UCX in the example image built FROM it, and k8smpi-preflight inside it:
the image's CUDA read from the image, no driver on this machine, and the message a user sees.

No GPU here: the CUDA transports cannot load without the host's libcuda.so.1, so UCX's CUDA
support is checked as built (configure line, libuct_cuda.so), not used.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from tests.e2e.test_images_build import ANY_UID, NP, UCX, Built, _ranks, building, run, sh

if TYPE_CHECKING:
    from collections.abc import Iterator

# A cold build compiles UCX and Open MPI on 2 cores (about 30 min): `make test-cuda`, not
# `make test`, which builds and checks the CUDA layer alone (test_image_cuda_layer.py).
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
    argv = ["mpirun", "--oversubscribe", "-np", str(NP), *UCX, "allreduce"]
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
