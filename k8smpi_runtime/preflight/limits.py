"""Limits the node sets and the image cannot: memlock, /dev/shm, open files, pids.

- memlock (``Max locked memory`` of /proc/self/limits, proc(5)): RDMA registers (pins) memory,
  so with an RDMA device it must be unlimited, or the process must hold CAP_IPC_LOCK
  (``CapEff`` bit 14 of /proc/self/status). Kubernetes has no ulimit field: containers inherit
  the container runtime's own limit (containerd under systemd: ``LimitMEMLOCK``), and
  ``IPC_LOCK`` added to a non-root container is not effective (NVIDIA/nvidia-container-toolkit
  #2037). libibverbs itself warns below 32 KiB; UCX fails "ibv_create_cq: Cannot allocate
  memory" (open-mpi/ompi#6468).
- /dev/shm (the tmpfs ``size=`` in /proc/self/mountinfo, mm/shmem.c prints it in KiB; else
  statvfs): every local rank maps shared-memory segments there (Open MPI's sm/vader BTL, UCX
  posix, NCCL: "posix_fallocate failed: No space left on device", NVIDIA/nccl#342). Container
  runtimes give 64 MiB; an ``emptyDir: {medium: Memory, sizeLimit: ...}`` mounted at /dev/shm
  is the Kubernetes way to more.
- open files and pids (``pids.max`` of the pod's cgroup, v2 or v1).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from k8smpi_runtime.preflight.host import CAP_IPC_LOCK, MEMLOCK, NOFILE, parse_size
from k8smpi_runtime.preflight.model import ABSENT, FAIL, OK, SKIP, WARN, Finding, size_text

if TYPE_CHECKING:
    from k8smpi_runtime.preflight.host import Host

#: Below this per local rank /dev/shm is fatal; below the second it is a warning. Open MPI's
#: shared-memory BTL maps a segment of a few MiB per local process; NCCL wants far more (NGC
#: runs 8 GPUs with --shm-size=1g: 128 MiB per rank).
SHM_MIN_PER_RANK = 16 << 20
SHM_GOOD_PER_RANK = 128 << 20
#: With an RDMA device, a finite memlock below this is fatal (containerd under systemd gives
#: 8 MiB; queue pairs and registered buffers exceed it at once); above it, a warning.
MEMLOCK_WORKABLE = 64 << 20
NOFILE_GOOD = 4096
#: The path every MPI and NCCL maps its shared memory under (not a temporary file of ours).
SHM = "/dev/shm"  # noqa: S108
#: Threads per rank to leave room for (MPI progress, UCX async, CUDA's own threads), plus some.
PIDS_PER_RANK = 64

MEMLOCK_FIX = (
    "the node must raise it: LimitMEMLOCK=infinity for the container runtime's systemd unit "
    '(containerd or CRI-O; CRI-O also: default_ulimits = ["memlock=-1:-1"]), then restart it; '
    "Kubernetes has no ulimit field and IPC_LOCK only helps root"
)


def check_memlock(host: Host, *, rdma: bool) -> Finding:
    limit = host.limits().get(MEMLOCK)
    if limit is None:
        return Finding("memlock", SKIP, "no /proc/self/limits")
    found = f"{size_text(limit.soft)} (soft), {size_text(limit.hard)} (hard)"
    if limit.soft is None:
        return Finding("memlock", OK, found)
    caps = host.effective_caps()
    if caps is not None and caps >> CAP_IPC_LOCK & 1:
        return Finding(
            "memlock", OK, found + ", CAP_IPC_LOCK effective", message="pinning is not limited"
        )
    if not rdma:
        return Finding(
            "memlock", OK, found, message="no RDMA device here; RDMA would need it unlimited"
        )
    if limit.soft >= MEMLOCK_WORKABLE:
        return Finding("memlock", WARN, found, "unlimited (RDMA pins memory)", MEMLOCK_FIX)
    return Finding("memlock", FAIL, found, "unlimited (RDMA pins memory)", MEMLOCK_FIX)


def shm_size(host: Host) -> tuple[int | None, str]:
    """The size of SHM in bytes, and where that came from."""
    mount = host.mount_at(SHM)
    if mount is not None and "size" in mount.options:
        size = parse_size(mount.options["size"])
        if size is not None:
            return size, f"{mount.fstype} size={mount.options['size']}"
    if host.live and Path(SHM).is_dir():
        st = os.statvfs(SHM)
        return st.f_blocks * st.f_frsize, "statvfs"
    return None, ""


def check_shm(host: Host, *, ranks: int) -> Finding:
    size, how = shm_size(host)
    if size is None:
        return Finding("shm", ABSENT if not host.exists(SHM) else SKIP, "size unknown")
    per_rank = size // max(ranks, 1)
    plural = "s" if ranks != 1 else ""
    found = f"{size_text(size)} ({how}) for {ranks} rank{plural}: {size_text(per_rank)} each"
    fix = (
        "mount an emptyDir {medium: Memory, sizeLimit: <ranks x 128Mi or more>} at /dev/shm "
        "(Kubernetes has no shm-size)"
    )
    if per_rank < SHM_MIN_PER_RANK:
        return Finding(
            "shm",
            FAIL,
            found,
            f">= {size_text(SHM_MIN_PER_RANK * ranks)} ({size_text(SHM_MIN_PER_RANK)} per rank)",
            "ranks' shared-memory segments will not fit (SIGBUS or 'No space left on device'): "
            + fix,
        )
    if per_rank < SHM_GOOD_PER_RANK:
        return Finding(
            "shm",
            WARN,
            found,
            f">= {size_text(SHM_GOOD_PER_RANK * ranks)} ({size_text(SHM_GOOD_PER_RANK)} per rank)",
            "enough for MPI's shared memory, tight for NCCL: " + fix,
        )
    return Finding("shm", OK, found)


def check_nofile(host: Host) -> Finding:
    limit = host.limits().get(NOFILE)
    if limit is None:
        return Finding("nofile", SKIP, "no /proc/self/limits")
    found = f"{limit.soft if limit.soft is not None else 'unlimited'} (soft)"
    if limit.soft is not None and limit.soft < NOFILE_GOOD:
        return Finding(
            "nofile",
            WARN,
            found,
            f">= {NOFILE_GOOD}",
            "MPI and UCX open sockets and shared-memory files per peer; large jobs run out",
        )
    return Finding("nofile", OK, found)


def pids_max(host: Host) -> tuple[int | None, str] | None:
    """The pods' cgroup pids.max (None = max), or None when no pids controller is visible."""
    for path in ("/sys/fs/cgroup/pids.max", "/sys/fs/cgroup/pids/pids.max"):
        text = host.read(path)
        if text is not None:
            value = text.strip()
            return (None if value == "max" else int(value) if value.isdigit() else None), path
    return None


def check_pids(host: Host, *, ranks: int) -> Finding:
    found_max = pids_max(host)
    if found_max is None:
        return Finding("pids", SKIP, "no pids cgroup visible")
    value, path = found_max
    if value is None:
        return Finding("pids", OK, f"max ({path})")
    need = PIDS_PER_RANK * (ranks + 1)
    found = f"{value} ({path})"
    if value < need:
        return Finding(
            "pids",
            WARN,
            found,
            f">= {need} ({PIDS_PER_RANK} per rank, {ranks} ranks + the launcher's share)",
            "threads count against pids.max (MPI progress, UCX, CUDA): raise the kubelet's "
            "podPidsLimit",
        )
    return Finding("pids", OK, found)
