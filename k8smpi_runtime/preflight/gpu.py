"""GPU checks: the devices the pod sees against what it asked for, the driver against the
image's CUDA, and a live cuInit.

Facts: ``/dev/nvidia<N>`` (one node per GPU the container runtime gave the pod: the NVIDIA
container toolkit creates only the allocated ones), the driver version from
``/proc/driver/nvidia/version`` (``NVRM version: NVIDIA UNIX ... Kernel Module ... <version>
...``, nv-procfs.c) or ``/sys/module/nvidia/version``, GPU models from
``/proc/driver/nvidia/gpus/<bus>/information`` (``Model: ...``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from k8smpi_runtime.preflight import cuda
from k8smpi_runtime.preflight.model import ABSENT, FAIL, OK, SKIP, Finding

if TYPE_CHECKING:
    from collections.abc import Callable

    from k8smpi_runtime.preflight.host import Host
    from k8smpi_runtime.preflight.image import Image
    from k8smpi_runtime.preflight.native import CudaProbe

PROC_VERSION = "/proc/driver/nvidia/version"
SYS_VERSION = "/sys/module/nvidia/version"


@dataclass(frozen=True)
class Gpus:
    devices: list[str] = field(default_factory=list)
    driver: str | None = None
    driver_source: str = PROC_VERSION
    models: list[str] = field(default_factory=list)


def driver_version(text: str) -> str | None:
    """The version in /proc/driver/nvidia/version's ``NVRM version:`` line."""
    for line in text.splitlines():
        if line.startswith("NVRM version:"):
            m = re.search(r"\s(\d+\.\d+(?:\.\d+)?)\s", line + " ")
            return m.group(1) if m else None
    return None


def facts(host: Host) -> Gpus:
    devices = [n for n in host.glob("/dev", "nvidia*") if re.fullmatch(r"nvidia\d+", n)]
    driver, source = None, PROC_VERSION
    text = host.read(PROC_VERSION)
    if text:
        driver = driver_version(text)
    if driver is None and (sys_text := host.read(SYS_VERSION)):
        driver, source = sys_text.strip() or None, SYS_VERSION
    models = []
    for bus in host.listdir("/proc/driver/nvidia/gpus"):
        info = host.read(f"/proc/driver/nvidia/gpus/{bus}/information") or ""
        m = re.search(r"^Model:\s*(.+)$", info, re.M)
        if m:
            models.append(m.group(1).strip())
    return Gpus(devices, driver, source, models)


def _listing(devices: list[str]) -> str:
    if not devices:
        return "0 GPUs"
    return f"{len(devices)} GPU{'s' if len(devices) != 1 else ''} (/dev/{', /dev/'.join(devices)})"


def check_count(gpus: Gpus, requested: int | None, request_source: str) -> Finding:
    n = len(gpus.devices)
    found = _listing(gpus.devices)
    if requested is None:
        if n == 0:
            return Finding("gpu", ABSENT, found, message="no GPU here; the request is unknown")
        return Finding(
            "gpu", OK, found, message="the pod's request is unknown (pass --gpus N to compare)"
        )
    expected = f"{requested} ({request_source})"
    if n == requested:
        return Finding("gpu", ABSENT if n == 0 else OK, found, expected)
    if requested == 0:
        why = (
            "the pod asked for no GPU but sees the node's GPUs (a runtime that injects all GPUs, "
            "e.g. NVIDIA_VISIBLE_DEVICES=all with the nvidia runtime as default): set "
            "NVIDIA_VISIBLE_DEVICES=void in the pod, or request nvidia.com/gpu"
        )
    elif n < requested:
        why = (
            "fewer GPU devices than the pod asked for: the device plugin did not pass them in, "
            "or the driver is not loaded on this node"
        )
    else:
        why = "more GPUs than the pod asked for: it can use other pods' GPUs"
    return Finding("gpu", FAIL, found, expected, why)


def check_cuda(gpus: Gpus, image: Image, *, wanted: bool) -> Finding:
    return cuda.judge(
        image.cuda,
        gpus.driver,
        compat=image.compat,
        wanted=wanted,
        cuda_source=image.cuda_source or "the image",
        driver_source=gpus.driver_source,
    )


def check_cuinit(  # noqa: PLR0911 - one return per rule
    gpus: Gpus, probe: Callable[[], CudaProbe] | None, *, wanted: bool, env_visible: str | None
) -> Finding:
    """cuInit(0) and cuDeviceGetCount against the device nodes."""
    n = len(gpus.devices)
    if n == 0:
        # Nothing to initialise; a pod that asked for GPUs already fails the gpu check.
        return Finding("cuinit", SKIP if wanted else ABSENT, "no GPU device")
    if probe is None:
        return Finding("cuinit", SKIP, "not called", message="live calls are off (--root)")
    result = probe()
    if not result.loaded:
        return Finding(
            "cuinit",
            FAIL,
            "libcuda.so.1 cannot be loaded",
            "the host driver's libcuda.so.1",
            "the container runtime did not mount the driver library (NVIDIA container toolkit: "
            "NVIDIA_DRIVER_CAPABILITIES must include compute)",
        )
    if result.error:
        return Finding("cuinit", FAIL, f"libcuda.so.1: {result.error}", "cuInit() == 0")
    if result.init != 0:
        hints = {
            34: "libcuda.so.1 is the build stub, not the driver: the runtime did not mount it",
            35: "the driver is older than this CUDA needs (see the cuda check)",
            100: "no usable GPU (device nodes without the devices, or all of them busy)",
            803: "libcuda.so.1 and the kernel module are of different driver versions",
            804: "forward compatibility is not supported on this GPU (data-center GPUs only)",
        }
        return Finding(
            "cuinit",
            FAIL,
            f"cuInit: {result.init_name()} ({result.init})",
            "CUDA_SUCCESS",
            hints.get(result.init or 0, "CUDA cannot start on this node"),
        )
    expected = n
    why = "one CUDA device per /dev/nvidia<N>"
    if env_visible and env_visible.strip() and env_visible not in ("all", "none", "void"):
        expected = len([v for v in env_visible.split(",") if v.strip()])
        why = "CUDA_VISIBLE_DEVICES"
    supports = ""
    if result.driver_cuda:
        supports = (
            f"; driver supports CUDA {result.driver_cuda // 1000}.{result.driver_cuda % 1000 // 10}"
        )
    found = f"cuInit ok, {result.devices} device(s){supports}"
    if result.devices != expected:
        return Finding(
            "cuinit",
            FAIL,
            found,
            f"{expected} ({why})",
            "CUDA sees other GPUs than the device nodes",
        )
    return Finding("cuinit", OK, found, f"{expected} ({why})")


def checks(
    host: Host,
    image: Image,
    *,
    requested: int | None,
    request_source: str,
    probe: Callable[[], CudaProbe] | None,
) -> list[Finding]:
    gpus = facts(host)
    wanted = bool(requested)
    out = [
        check_count(gpus, requested, request_source),
        check_cuda(gpus, image, wanted=wanted),
        check_cuinit(gpus, probe, wanted=wanted, env_visible=host.env.get("CUDA_VISIBLE_DEVICES")),
    ]
    if gpus.models and out[0].status == OK:
        out[0] = Finding(
            "gpu",
            OK,
            out[0].found + f": {', '.join(sorted(set(gpus.models)))}",
            out[0].expected,
            out[0].message,
        )
    return out
