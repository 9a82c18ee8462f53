"""Live calls through ctypes, for what no file says: does CUDA initialise, how many devices does
libibverbs accept.

``libcuda.so.1`` is the host driver's user-space library (the container toolkit mounts it); its
``cuInit`` is the only proof that this driver, this kernel module and these device nodes work
together. ``libibverbs.so.1``'s device list is the only proof that the image's provider
libraries accept the kernel's devices (rdma-core skips a device whose driver ABI it does not
support, with a warning on stderr). Each call runs at most once per process; nothing here raises.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass

#: CUresult names for the codes a preflight meets (cuda.h, enum cudaError_enum).
CUDA_ERRORS = {
    0: "CUDA_SUCCESS",
    3: "CUDA_ERROR_NOT_INITIALIZED",
    34: "CUDA_ERROR_STUB_LIBRARY",
    35: "CUDA_ERROR_INSUFFICIENT_DRIVER",
    46: "CUDA_ERROR_DEVICES_UNAVAILABLE",
    100: "CUDA_ERROR_NO_DEVICE",
    101: "CUDA_ERROR_INVALID_DEVICE",
    221: "CUDA_ERROR_NVLINK_UNCORRECTABLE",
    801: "CUDA_ERROR_NOT_SUPPORTED",
    802: "CUDA_ERROR_SYSTEM_NOT_READY",
    803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
    804: "CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE",
    999: "CUDA_ERROR_UNKNOWN",
}


@dataclass(frozen=True)
class CudaProbe:
    """What libcuda said: ``loaded`` False when there is no libcuda.so.1 to load."""

    loaded: bool
    init: int | None = None
    devices: int | None = None
    #: cuDriverGetVersion: the CUDA version the driver (or forward-compat library) supports,
    #: e.g. 12080 for 12.8.
    driver_cuda: int | None = None
    error: str = ""

    def init_name(self) -> str:
        if self.init is None:
            return "not called"
        return CUDA_ERRORS.get(self.init, f"CUresult {self.init}")


def probe_cuda(library: str = "libcuda.so.1") -> CudaProbe:
    """cuInit(0), cuDriverGetVersion, cuDeviceGetCount."""
    try:
        lib = ctypes.CDLL(library)
    except OSError as e:
        return CudaProbe(False, error=str(e))
    version = ctypes.c_int(0)
    driver_cuda = None
    try:
        if lib.cuDriverGetVersion(ctypes.byref(version)) == 0:
            driver_cuda = version.value
        init = int(lib.cuInit(0))
        count = ctypes.c_int(0)
        devices = None
        if init == 0 and lib.cuDeviceGetCount(ctypes.byref(count)) == 0:
            devices = count.value
    except (AttributeError, OSError) as e:
        return CudaProbe(True, error=str(e))
    return CudaProbe(True, init, devices, driver_cuda)


@dataclass(frozen=True)
class VerbsProbe:
    loaded: bool
    devices: int | None = None
    error: str = ""


def probe_verbs(library: str = "libibverbs.so.1") -> VerbsProbe:
    """ibv_get_device_list: how many devices the image's providers accept."""
    try:
        lib = ctypes.CDLL(library, use_errno=True)
    except OSError as e:
        return VerbsProbe(False, error=str(e))
    try:
        lib.ibv_get_device_list.restype = ctypes.c_void_p
        lib.ibv_free_device_list.argtypes = [ctypes.c_void_p]
        count = ctypes.c_int(0)
        devices = lib.ibv_get_device_list(ctypes.byref(count))
        if not devices:
            errno = ctypes.get_errno()
            return VerbsProbe(True, 0, f"ibv_get_device_list failed (errno {errno})")
        lib.ibv_free_device_list(devices)
    except (AttributeError, OSError) as e:
        return VerbsProbe(True, error=str(e))
    return VerbsProbe(True, count.value)
