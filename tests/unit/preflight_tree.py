"""Fixture trees of /proc, /sys, /dev and the image's files, for k8smpi-preflight's unit tests.

Each method writes what a real system shows, in that system's format; where each format comes
from (read in the public source or documentation; no file is copied from anywhere):

| file (under the tree) | format | source |
|---|---|---|
| proc/driver/nvidia/version | ``NVRM version: NVIDIA UNIX [Open ]Kernel Module ... <ver> ...`` + ``GCC version:`` | NVIDIA open-gpu-kernel-modules, kernel-open/nvidia/nv-procfs.c (nv_procfs_read_version) |
| proc/driver/nvidia/gpus/<bus>/information | ``Model: \\t\\t <name>``, ``Bus Location:``, ``Device Minor:`` ... | same file, nv_procfs_read_gpu_info |
| sys/module/nvidia/version | ``<ver>\\n`` | Linux MODULE_VERSION sysfs attribute (kernel/params.c) |
| dev/nvidia<N>, dev/nvidiactl, dev/nvidia-uvm | one node per allocated GPU | NVIDIA container toolkit (libnvidia-container: only the visible devices are created) |
| usr/local/cuda/version.json | ``{"cuda": {"name": "CUDA SDK", "version": "12.8.1"}, ...}`` | the CUDA toolkit's version.json (nvidia/cuda images; read by images/common/record-versions.py) |
| usr/local/cuda/compat/libcuda.so.<driver> | the cuda-compat-<major>-<minor> package's libraries | NVIDIA CUDA Compatibility guide; nvidia-container-toolkit cudacompat hook globs ``libcuda.so.*.*`` |
| etc/k8smpi/versions.json | ``{"schema": 1, "build_args": {...}, "detected": {...}}`` | this project's images/common/record-versions.py |
| sys/class/infiniband/<hca>/ports/<n>/state, phys_state, link_layer, rate | ``4: ACTIVE``, ``5: LinkUp``, ``InfiniBand``/``Ethernet``, ``200 Gb/sec (4X HDR)`` | Linux drivers/infiniband/core/sysfs.c (state_show, phys_state_show, link_layer_show, rate_show) |
| sys/class/infiniband_verbs/abi_version, uverbs<N>/ibdev, uverbs<N>/abi_version | ``6``, ``mlx5_0``, ``1`` | Linux drivers/infiniband/core/uverbs_main.c; rdma-core libibverbs/init.c reads them (accepts 3..6) |
| dev/infiniband/uverbs<N>, rdma_cm | verbs devices given to the pod | rdma-core (RDMA_CDEV_DIR /dev/infiniband); k8s-rdma-shared-dev-plugin |
| sys/module/mlx5_core/version | ``24.10-1.1.4`` (MLNX_OFED / DOCA only) | hpccm's osu_benchmarks entrypoint reads it to tell MOFED from inbox |
| sys/module/nvidia_peermem, dev/gdrdrv | present when loaded | NVIDIA GPUDirect RDMA docs; gdrcopy's gdrdrv |
| proc/self/limits | ``Limit  Soft Limit  Hard Limit  Units`` rows, ``%-25s %-20s %-20s %-10s`` | Linux fs/proc/base.c (proc_pid_limits); proc(5) |
| proc/self/status | ``Uid:\\t<r>\\t<e>\\t<s>\\t<fs>``, ``CapEff:\\t<16 hex digits>`` | Linux fs/proc/array.c (task_cap, render_cap_t); proc(5) |
| proc/self/mountinfo | ``id parent maj:min root point opts - tmpfs shm rw,size=65536k`` | proc(5); mm/shmem.c shmem_show_options prints ``size=%luk`` |
| sys/fs/cgroup/pids.max | ``max`` or a number | Linux Documentation/admin-guide/cgroup-v2.rst (PID controller) |
"""  # noqa: E501 - a table reads best unwrapped

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

LIMITS_HEADER = f"{'Limit':<25} {'Soft Limit':<20} {'Hard Limit':<20} {'Units':<10}\n"
LIMIT_ROWS = (
    ("Max cpu time", "unlimited", "unlimited", "seconds"),
    ("Max file size", "unlimited", "unlimited", "bytes"),
    ("Max data size", "unlimited", "unlimited", "bytes"),
    ("Max stack size", "8388608", "unlimited", "bytes"),
    ("Max core file size", "unlimited", "unlimited", "bytes"),
    ("Max resident set", "unlimited", "unlimited", "bytes"),
    ("Max processes", "unlimited", "unlimited", "processes"),
    ("Max open files", "1048576", "1048576", "files"),
    ("Max locked memory", "unlimited", "unlimited", "bytes"),
    ("Max address space", "unlimited", "unlimited", "bytes"),
    ("Max file locks", "unlimited", "unlimited", "locks"),
    ("Max pending signals", "95603", "95603", "signals"),
    ("Max msgqueue size", "819200", "819200", "bytes"),
    ("Max nice priority", "0", "0", ""),
    ("Max realtime priority", "0", "0", ""),
    ("Max realtime timeout", "unlimited", "unlimited", "us"),
)


class Tree:
    """A fake root: ``Tree(tmp_path).nvidia(...).hca(...)``; ``root`` is what ``--root`` takes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._limits = {row[0]: list(row) for row in LIMIT_ROWS}
        self.limits()  # a container's ordinary view: unlimited memlock unless a test says not
        self.status()
        self.shm(65536 * 1024)

    def write(self, path: str, text: str) -> Tree:
        target = self.root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        return self

    def mkdir(self, path: str) -> Tree:
        (self.root / path).mkdir(parents=True, exist_ok=True)
        return self

    # -- NVIDIA --------------------------------------------------------------------------------

    def nvidia(
        self,
        driver: str = "570.124.06",
        gpus: int = 4,
        *,
        open_module: bool = True,
        model: str = "NVIDIA H100 80GB HBM3",
    ) -> Tree:
        if open_module:
            nvrm = (
                f"NVIDIA UNIX Open Kernel Module for x86_64  {driver}  Release Build  "
                "(dvs-builder@U16-I3-B13-1-1)  Wed Feb 26 01:54:50 UTC 2025"
            )
        else:
            nvrm = f"NVIDIA UNIX x86_64 Kernel Module  {driver}  Wed Feb 26 01:40:47 UTC 2025"
        self.write(
            "proc/driver/nvidia/version",
            f"NVRM version: {nvrm}\nGCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n",
        )
        self.write("sys/module/nvidia/version", f"{driver}\n")
        self.write("dev/nvidiactl", "").write("dev/nvidia-uvm", "").write(
            "dev/nvidia-uvm-tools", ""
        )
        for n in range(gpus):
            bus = f"0000:{0x18 + 0x20 * n:02x}:00.0"
            self.write(f"dev/nvidia{n}", "")
            self.write(
                f"proc/driver/nvidia/gpus/{bus}/information",
                f"Model: \t\t {model}\nIRQ:   \t\t 0\n"
                f"GPU UUID: \t GPU-{n:08x}-0000-0000-0000-000000000000\n"
                f"Video BIOS: \t 96.00.89.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\n"
                f"DMA Mask: \t 0xfffffffffffff\nBus Location: \t {bus}\nDevice Minor: \t {n}\n"
                f"GPU Firmware: \t {driver}\nGPU Excluded:\t No\n",
            )
        return self

    def cuda_toolkit(self, version: str = "12.8.1", compat: str | None = None) -> Tree:
        self.write(
            "usr/local/cuda/version.json",
            json.dumps(
                {
                    "cuda": {"name": "CUDA SDK", "version": version},
                    "cuda_cudart": {"name": "CUDA Runtime (cudart)", "version": "12.8.90"},
                },
                indent=3,
            ),
        )
        if compat:
            self.write(f"usr/local/cuda/compat/libcuda.so.{compat}", "")
            self.write("usr/local/cuda/compat/libcuda.so.1", "")
        return self

    def versions(self, detected: dict[str, Any], build_args: dict[str, str] | None = None) -> Tree:
        record = {
            "schema": 1,
            "variant": "base",
            "build_args": build_args or {},
            "detected": detected,
            "console_scripts": ["k8smpi-preflight", "kubexec"],
        }
        return self.write("etc/k8smpi/versions.json", json.dumps(record, indent=2))

    # -- RDMA ----------------------------------------------------------------------------------

    def hca(
        self,
        name: str = "mlx5_0",
        *,
        uverbs: int = 0,
        state: str = "4: ACTIVE",
        phys_state: str = "5: LinkUp",
        link_layer: str = "InfiniBand",
        rate: str = "200 Gb/sec (4X HDR)",
        given: bool = True,
        driver_abi: int = 1,
        kernel_abi: int = 6,
    ) -> Tree:
        port = f"sys/class/infiniband/{name}/ports/1"
        self.write(f"{port}/state", f"{state}\n").write(f"{port}/phys_state", f"{phys_state}\n")
        self.write(f"{port}/link_layer", f"{link_layer}\n").write(f"{port}/rate", f"{rate}\n")
        self.write(f"sys/class/infiniband/{name}/node_type", "1: CA\n")
        self.write("sys/class/infiniband_verbs/abi_version", f"{kernel_abi}\n")
        self.write(f"sys/class/infiniband_verbs/uverbs{uverbs}/ibdev", f"{name}\n")
        self.write(f"sys/class/infiniband_verbs/uverbs{uverbs}/abi_version", f"{driver_abi}\n")
        self.mkdir("sys/module/mlx5_core")
        if given:
            self.write(f"dev/infiniband/uverbs{uverbs}", "").write("dev/infiniband/rdma_cm", "")
        return self

    def mofed(self, version: str = "24.10-1.1.4") -> Tree:
        return self.write("sys/module/mlx5_core/version", f"{version}\n")

    def peermem(self) -> Tree:
        return self.mkdir("sys/module/nvidia_peermem").write("dev/gdrdrv", "")

    # -- limits --------------------------------------------------------------------------------

    def limits(self, *, memlock: str | None = None, nofile: str | None = None) -> Tree:
        if memlock is not None:
            self._limits["Max locked memory"][1:3] = [memlock, memlock]
        if nofile is not None:
            self._limits["Max open files"][1] = nofile
        rows = "".join(f"{n:<25} {s:<20} {h:<20} {u:<10}\n" for n, s, h, u in self._limits.values())
        return self.write("proc/self/limits", LIMITS_HEADER + rows)

    def status(self, *, uid: int = 1000, cap_eff: int = 0) -> Tree:
        return self.write(
            "proc/self/status",
            f"Name:\tk8smpi-preflight\nUmask:\t0022\nState:\tR (running)\nPid:\t42\n"
            f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t0\t0\t0\t0\n"
            f"CapInh:\t0000000000000000\nCapPrm:\t{cap_eff:016x}\nCapEff:\t{cap_eff:016x}\n"
            f"CapBnd:\t00000000a80425fb\nCapAmb:\t0000000000000000\n",
        )

    def shm(self, size_bytes: int) -> Tree:
        return self.write(
            "proc/self/mountinfo",
            "1180 1100 0:78 / / rw,relatime master:1 - overlay overlay rw,lowerdir=/l,upperdir=/u\n"
            "1181 1180 0:80 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw\n"
            "1186 1180 0:82 / /dev rw,nosuid - tmpfs tmpfs rw,size=65536k,mode=755,inode64\n"
            f"1190 1186 0:79 / /dev/shm rw,nosuid,nodev,noexec,relatime - tmpfs shm "
            f"rw,size={size_bytes // 1024}k,inode64\n",
        ).mkdir("dev/shm")

    def pids(self, value: str = "max") -> Tree:
        return self.write("sys/fs/cgroup/pids.max", f"{value}\n")
