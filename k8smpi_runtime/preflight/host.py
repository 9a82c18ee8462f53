"""The machine as a process in a pod sees it: files under /proc, /sys, /dev and the image's own.

Every path goes through :class:`Host`, whose ``root`` prefixes it (``--root``), so a test can
point the checks at a fixture tree laid out like a real system. Readers return None for what is
absent or unreadable: absence is a fact the checks judge, never an error here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

#: /proc/<pid>/limits column names (fs/proc/base.c, lnames[]).
MEMLOCK = "Max locked memory"
NOFILE = "Max open files"
NPROC = "Max processes"
#: CAP_IPC_LOCK (include/uapi/linux/capability.h): lets a process pin memory past RLIMIT_MEMLOCK.
CAP_IPC_LOCK = 14


@dataclass(frozen=True)
class Limit:
    """One row of /proc/self/limits; None means ``unlimited``."""

    soft: int | None
    hard: int | None


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo (proc(5)): where, what, and the superblock options."""

    point: str
    fstype: str
    source: str
    options: dict[str, str]


@dataclass
class Host:
    """Reads facts under ``root`` ("/" in a pod); ``env`` is the process environment."""

    root: Path = Path("/")
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def live(self) -> bool:
        """True on the real filesystem: live calls (ctypes, ucx_info) mean something."""
        return self.root == Path("/")

    def path(self, absolute: str) -> Path:
        return self.root / absolute.lstrip("/")

    def read(self, absolute: str) -> str | None:
        try:
            return self.path(absolute).read_text(errors="replace")
        except OSError:
            return None

    def exists(self, absolute: str) -> bool:
        return self.path(absolute).exists()

    def listdir(self, absolute: str) -> list[str]:
        try:
            return sorted(p.name for p in self.path(absolute).iterdir())
        except OSError:
            return []

    def glob(self, absolute_dir: str, pattern: str) -> list[str]:
        """Names in a directory matching a glob pattern, sorted naturally (nvidia2 < nvidia10)."""
        names = [p.name for p in self.path(absolute_dir).glob(pattern)]
        return sorted(
            names, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]
        )

    # -- /proc/self ---------------------------------------------------------------------------

    def limits(self) -> dict[str, Limit]:
        """/proc/self/limits: ``Limit`` by name (columns: name, soft, hard, units)."""
        text = self.read("/proc/self/limits") or ""
        out: dict[str, Limit] = {}
        for line in text.splitlines()[1:]:
            m = re.match(r"^(Max [a-z ]+?)\s{2,}(\S+)\s+(\S+)", line)
            if m:
                out[m.group(1)] = Limit(_limit(m.group(2)), _limit(m.group(3)))
        return out

    def status(self) -> dict[str, str]:
        """/proc/self/status as ``key -> value`` (Uid, CapEff, ...)."""
        out: dict[str, str] = {}
        for line in (self.read("/proc/self/status") or "").splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out[key.strip()] = value.strip()
        return out

    def effective_caps(self) -> int | None:
        value = self.status().get("CapEff")
        try:
            return int(value, 16) if value else None
        except ValueError:
            return None

    def euid(self) -> int | None:
        fields = self.status().get("Uid", "").split()
        return int(fields[1]) if len(fields) >= 2 and fields[1].isdigit() else None

    def mounts(self) -> list[Mount]:
        """/proc/self/mountinfo: ``id parent maj:min root point opts [tags] - fstype src sb``."""
        out: list[Mount] = []
        for line in (self.read("/proc/self/mountinfo") or "").splitlines():
            left, sep, right = line.partition(" - ")
            words, tail = left.split(), right.split()
            if not sep or len(words) < 5 or len(tail) < 2:
                continue
            options: dict[str, str] = {}
            for item in (tail[2] if len(tail) > 2 else "").split(","):
                key, _, value = item.partition("=")
                options[key] = value
            point = words[4].replace("\\040", " ")
            out.append(Mount(point, tail[0], tail[1], options))
        return out

    def mount_at(self, point: str) -> Mount | None:
        """The mount that covers ``point`` last (the one in effect)."""
        found = None
        for mount in self.mounts():
            if mount.point == point:
                found = mount
        return found


def _limit(text: str) -> int | None:
    return None if text == "unlimited" else int(text) if text.isdigit() else None


def parse_size(text: str) -> int | None:
    """A mount option size (``65536k``, ``1g``, ``512m``, bytes) in bytes (mm/shmem.c units)."""
    m = re.fullmatch(r"(\d+)([kKmMgGtT]?)", text.strip())
    if not m:
        return None
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2).lower()]
    return int(m.group(1)) * scale
