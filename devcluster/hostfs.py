"""The host's cgroups and mounts as the real nodes use them: made, found by path, swept.

``down`` finds everything a node left by where it is (a cgroup subtree, a folder), never by a
process or mount name, and removes it deepest first.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from devcluster.layout import DevclusterError


def mountinfo() -> list[tuple[str, str]]:
    """(mount point, filesystem type) of every mount, octal escapes decoded."""
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        point = fields[4].encode().decode("unicode_escape")
        out.append((point, fields[sep + 1]))
    return out


def cgroup_hierarchies() -> list[Path]:
    return [Path(p) for p, fstype in mountinfo() if fstype in ("cgroup", "cgroup2")]


def ensure_cgroup(rel: str) -> None:
    """``rel`` in every cgroup v1 hierarchy (the kubelet checks its cgroupRoot exists)."""
    for hierarchy in cgroup_hierarchies():
        if (hierarchy / "cgroup.controllers").exists():
            continue  # v2 (hybrid's unified): runc manages its part itself
        path = hierarchy
        for part in rel.strip("/").split("/"):
            parent, path = path, path / part
            path.mkdir(exist_ok=True)
            # A new cpuset cgroup starts with no CPUs and no memory nodes: nothing can join.
            for knob in ("cpuset.cpus", "cpuset.mems"):
                if (path / knob).exists() and not (path / knob).read_text().strip():
                    (path / knob).write_text((parent / knob).read_text())


def cgroup_pids(rel: str) -> set[int]:
    pids: set[int] = set()
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / rel.strip("/")
        for folder, _dirs, _files in os.walk(top):
            with contextlib.suppress(OSError):
                pids.update(int(p) for p in Path(folder, "cgroup.procs").read_text().split())
    return pids


def kill_cgroup(rel: str, timeout: float = 15.0) -> int:
    """SIGKILL every process in ``rel``'s subtree until none is left; how many were killed."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids(rel):
        for pid in pids - killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed |= pids
        if time.monotonic() > deadline:
            raise DevclusterError(f"processes {sorted(pids)} in cgroup {rel} did not stop")
        time.sleep(0.1)
    return len(killed)


def remove_cgroup(rel: str) -> None:
    for hierarchy in cgroup_hierarchies():
        top = hierarchy / rel.strip("/")
        if not top.exists():
            continue
        for folder, _dirs, _files in os.walk(top, topdown=False):
            with contextlib.suppress(FileNotFoundError):
                Path(folder).rmdir()


def mounts_under(*tops: Path) -> list[str]:
    prefixes = [str(t) for t in tops]
    return [p for p, _ in mountinfo() if any(p == t or p.startswith(t + "/") for t in prefixes)]


def unmount_all(*tops: Path) -> int:
    """Unmount everything at or below ``tops``, deepest first; how many mounts."""
    count = 0
    for _round in range(10):
        points = sorted(set(mounts_under(*tops)), key=lambda p: p.count("/"), reverse=True)
        if not points:
            return count
        for point in points:
            done = subprocess.run(["umount", point], capture_output=True, check=False)
            if done.returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, check=False)
            count += 1
    left = mounts_under(*tops)
    if left:
        raise DevclusterError(f"could not unmount {left[:3]}")
    return count


def ensure_shared_mount(path: Path) -> None:
    """``path`` bind-mounted on itself and shared, unless it already is."""
    path.mkdir(parents=True, exist_ok=True)
    if str(path) not in (p for p, _ in mountinfo()):
        subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
        subprocess.run(["mount", "--make-shared", str(path)], check=True)
