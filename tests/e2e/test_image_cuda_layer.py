"""The CUDA layer of the GPU base from PyPI, on its own (issue 12).

What can break from one day to the next is what comes from PyPI: NVIDIA's ``cuda-toolkit``
pins, the wheels' layout, the driver stubs generated from their headers. The ``pypi-devel``
stage is built alone (cached when tests/e2e/test_image_cuda.py built the whole image) and a CUDA
program is linked against it the way UCX's configure does: a failure here names the layer, not
a UCX configure log.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest

from images import build
from tests.e2e.test_images_build import _summary

if TYPE_CHECKING:
    from collections.abc import Iterator

    import docker

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

PROGRAM = r"""
#include <cuda.h>
#include <cuda_runtime.h>
#include <nvml.h>
#include <stdio.h>
int main(void) {
    int runtime = 0;
    cudaRuntimeGetVersion(&runtime);                     /* libcudart: works without a driver */
    CUresult init = cuInit(0);                           /* the stub: CUDA_ERROR_STUB_LIBRARY */
    CUuuid uuid;
    (void)cuDeviceGetUuid(&uuid, 0);                     /* what UCX's configure links */
    nvmlReturn_t nvml = nvmlInit();                      /* likewise */
    printf("cuda.h %d runtime %d cuInit %d nvmlInit %d\n", CUDA_VERSION, runtime, init, nvml);
    return 0;
}
"""


@pytest.fixture(scope="module")
def layer(request: pytest.FixtureRequest) -> Iterator[tuple[docker.DockerClient, str]]:
    (base,) = build.plan(["base-pypi"], {}, version=build.project_version(), vcs_ref="layer")
    tag = base.tag.replace("base-pypi:", "base-pypi-layer:")
    with build.engine() as (client, engine):
        build.ensure_from_images(client, base, pull=False, bootstrap=True, log=lambda _: None)
        try:
            result = build.run_build(
                client,
                base,
                build.build_context(),
                target="pypi-devel",
                tag=tag,
                log=lambda _: None,
            )
        except build.ToolError as err:
            pytest.fail(str(err))
        _summary(request, [f"images: pypi-devel with {engine}", build.format_results([result])])
        yield client, tag


def sh(client: docker.DockerClient, image: str, script: str) -> tuple[int, str]:
    container = client.containers.run(
        image, ["bash", "-c", script], detach=True, network_mode="none"
    )
    try:
        status = int(container.wait(timeout=300)["StatusCode"])
        return status, container.logs(stdout=True, stderr=True).decode(errors="replace")
    finally:
        container.remove(force=True)


def test_the_cuda_tree_is_the_pinned_release(layer: tuple[docker.DockerClient, str]) -> None:
    client, tag = layer
    status, text = sh(client, tag, "cat /usr/local/cuda/version.json")
    assert status == 0, text
    record = json.loads(text)
    assert record["cuda"]["version"] == "12.8.1"
    assert record["cuda_runtime"]["version"] == "12.8.90"  # what cuda-toolkit 12.8.1 pins


def test_a_cuda_program_links_against_the_stubs(layer: tuple[docker.DockerClient, str]) -> None:
    client, tag = layer
    script = (
        f"cat >/tmp/p.c <<'C'\n{PROGRAM}\nC\n"
        "gcc -o /tmp/p /tmp/p.c -I/usr/local/cuda/include -L/usr/local/cuda/lib64 "
        "-L/usr/local/cuda/lib64/stubs -lcudart -lcuda -lnvidia-ml "
        "-Wl,-rpath,/usr/local/cuda/lib64 && "
        "readelf -d /tmp/p | grep -o 'Shared library: \\[lib[a-z-]*\\.so\\.[0-9]*\\]' && "
        # The stubs are link-time files (libcuda.so); to run against them, give them the sonames.
        "mkdir /tmp/so && ln -s /usr/local/cuda/lib64/stubs/libcuda.so /tmp/so/libcuda.so.1 && "
        "ln -s /usr/local/cuda/lib64/stubs/libnvidia-ml.so /tmp/so/libnvidia-ml.so.1 && "
        "LD_LIBRARY_PATH=/tmp/so /tmp/p"
    )
    status, out = sh(client, tag, script)
    assert status == 0, out
    # The program needs the drivers' sonames: the host's libraries at run time, not the stubs.
    assert "Shared library: [libcuda.so.1]" in out
    assert "Shared library: [libnvidia-ml.so.1]" in out
    assert "Shared library: [libcudart.so.12]" in out
    # With only the stubs present: cudart reports 12.8, the stubs say "no driver" (34, 12).
    assert "cuda.h 12080 runtime 12080 cuInit 34 nvmlInit 12" in out
