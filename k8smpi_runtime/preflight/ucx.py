"""UCX's transports (``ucx_info -d``) against what the job will use (``UCX_TLS``).

``ucx_info -d`` prints each transport as ``#      Transport: rc_mlx5`` followed by
``#         Device: mlx5_0:1`` (UCX src/tools/info/tl_info.c). ``UCX_TLS`` is a comma list of
transport names and aliases, ``^`` in front excludes them, ``all`` (the default) takes what
there is. A UCX that sees the HCA but offers no verbs transport silently falls back to TCP
(openucx/ucx#6442): that is a finding even when UCX_TLS is unset.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import TYPE_CHECKING

from k8smpi_runtime.preflight.model import ABSENT, FAIL, OK, SKIP, WARN, Finding

if TYPE_CHECKING:
    from collections.abc import Callable

#: UCX_TLS aliases (UCX's documentation of UCX_TLS) -> the transports any of which satisfies it.
ALIASES: dict[str, frozenset[str]] = {
    "sm": frozenset({"posix", "sysv", "xpmem", "cma", "knem"}),
    "shm": frozenset({"posix", "sysv", "xpmem", "cma", "knem"}),
    "mm": frozenset({"posix", "sysv", "xpmem"}),
    "rc": frozenset({"rc_verbs", "rc_mlx5"}),
    "rc_v": frozenset({"rc_verbs"}),
    "rc_x": frozenset({"rc_mlx5"}),
    "ud": frozenset({"ud_verbs", "ud_mlx5"}),
    "ud_v": frozenset({"ud_verbs"}),
    "ud_x": frozenset({"ud_mlx5"}),
    "dc": frozenset({"dc_mlx5"}),
    "dc_x": frozenset({"dc_mlx5"}),
    "ib": frozenset({"rc_verbs", "rc_mlx5", "ud_verbs", "ud_mlx5", "dc_mlx5"}),
    "cuda": frozenset({"cuda_copy", "cuda_ipc", "gdr_copy"}),
    "rocm": frozenset({"rocm_copy", "rocm_ipc", "rocm_gdr"}),
}
IB_TRANSPORTS = ALIASES["ib"]


def transports(text: str) -> set[str]:
    return set(re.findall(r"^#\s+Transport:\s*(\S+)", text, re.M))


def run_ucx_info() -> str | None:
    """``ucx_info -d`` output, or None when there is no ucx_info."""
    exe = shutil.which("ucx_info")
    if exe is None:
        return None
    try:
        done = subprocess.run([exe, "-d"], capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout


def requested(tls: str | None) -> list[str]:
    """The transports UCX_TLS insists on (none for unset, ``all`` or an exclusion list)."""
    if not tls or tls.strip().startswith("^"):
        return []
    return [t.strip() for t in tls.split(",") if t.strip() and t.strip() != "all"]


def check(
    run: Callable[[], str | None] | None, *, tls: str | None, hcas: int, gpus: int
) -> list[Finding]:
    if run is None:
        return [Finding("ucx", SKIP, "ucx_info not run", message="live calls are off (--root)")]
    text = run()
    if text is None:
        return [Finding("ucx", ABSENT, "no ucx_info in the image")]
    have = transports(text)
    listing = ", ".join(sorted(have)) or "none"
    out: list[Finding] = []
    for name in requested(tls):
        wanted = ALIASES.get(name, frozenset({name}))
        if not wanted & have:
            out.append(
                Finding(
                    "ucx",
                    FAIL,
                    f"ucx_info -d: {listing}",
                    f"{name} (UCX_TLS={tls})",
                    f"UCX_TLS asks for {name} but UCX offers no such transport here",
                )
            )
    if hcas and not have & IB_TRANSPORTS:
        out.append(
            Finding(
                "ucx",
                WARN,
                f"ucx_info -d: {listing}",
                "an InfiniBand transport (rc/ud/dc)",
                "UCX sees no verbs transport although the pod has an RDMA device: it falls back "
                "to TCP (openucx/ucx#6442: OFED of image and node differ, or no verbs support)",
            )
        )
    if gpus and not have & ALIASES["cuda"]:
        out.append(
            Finding(
                "ucx",
                WARN,
                f"ucx_info -d: {listing}",
                "cuda_copy (CUDA-aware UCX)",
                "UCX offers no CUDA transport: GPU buffers will not move through UCX",
            )
        )
    return out or [Finding("ucx", OK, f"ucx_info -d: {listing}", tls or "")]
