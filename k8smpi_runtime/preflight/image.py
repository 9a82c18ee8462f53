"""What the image says about itself: /etc/k8smpi/versions.json, else CUDA's own files.

``versions.json`` is written at build time by ``images/common/record-versions.py``: the build
ARGs (``build_args``: CUDA_VERSION, OFED_FLAVOR, ...) and what the software reported
(``detected``: ``cuda``, ``cuda.compat``, ``ucx``, ``ucx.cuda``, ``ucx.gdrcopy``, ``openmpi``,
``rdma-core.deb``, ``ofed``...). Images not built by this project fall back to
``/usr/local/cuda/version.json`` (the CUDA toolkit's, ``{"cuda": {"version": ...}}``), the
``CUDA_VERSION`` variable of NVIDIA's images, and the forward-compatibility libraries of
``cuda-compat-<major>-<minor>`` in ``/usr/local/cuda/compat`` (``libcuda.so.<driver version>``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from k8smpi_runtime.preflight.host import Host

VERSIONS_FILE = "/etc/k8smpi/versions.json"
CUDA_VERSION_FILE = "/usr/local/cuda/version.json"
COMPAT_DIR = "/usr/local/cuda/compat"


@dataclass(frozen=True)
class Image:
    """The facts the checks compare with the host; every field may be unknown."""

    detected: dict[str, Any] = field(default_factory=dict)
    build_args: dict[str, str] = field(default_factory=dict)
    #: Where the facts came from, for messages (``/etc/k8smpi/versions.json``).
    source: str = ""
    cuda: str | None = None
    cuda_source: str = ""
    #: The forward-compatibility driver the image carries (``570.124.06``), if any.
    compat: str | None = None

    @property
    def ofed_flavor(self) -> str | None:
        """rdma-core / doca / mlnx as built; ``rdma-core`` for images with the OS's packages."""
        flavor = self.build_args.get("OFED_FLAVOR")
        if flavor:
            return flavor
        return "rdma-core" if "rdma-core.deb" in self.detected else None

    @property
    def rdma_core(self) -> str | None:
        """The rdma-core (libibverbs) package version, e.g. ``44.0-2``."""
        value = self.detected.get("rdma-core.deb")
        return str(value) if value else None

    @property
    def ofed_version(self) -> str | None:
        value = self.detected.get("ofed") or self.build_args.get("OFED_VERSION")
        return str(value) if value else None

    def flag(self, key: str) -> bool | None:
        value = self.detected.get(key)
        return value if isinstance(value, bool) else None


def load(host: Host) -> Image:
    """The image facts from versions.json, completed from CUDA's own files."""
    detected: dict[str, Any] = {}
    build_args: dict[str, str] = {}
    source = ""
    text = host.read(VERSIONS_FILE)
    if text:
        try:
            record = json.loads(text)
        except ValueError:
            record = {}
        if isinstance(record, dict):
            detected = dict(record.get("detected") or {})
            build_args = {str(k): str(v) for k, v in (record.get("build_args") or {}).items()}
            source = VERSIONS_FILE
    cuda = str(detected["cuda"]) if detected.get("cuda") else None
    cuda_source = f"{VERSIONS_FILE} (detected.cuda)" if cuda else ""
    if cuda is None:
        cuda = _toolkit_version(host)
        cuda_source = CUDA_VERSION_FILE if cuda else ""
    if cuda is None and host.env.get("CUDA_VERSION"):
        cuda = host.env["CUDA_VERSION"]
        cuda_source = "$CUDA_VERSION"
    compat = str(detected["cuda.compat"]) if detected.get("cuda.compat") else _compat(host)
    return Image(detected, build_args, source, cuda, cuda_source, compat)


def _toolkit_version(host: Host) -> str | None:
    text = host.read(CUDA_VERSION_FILE)
    if not text:
        return None
    try:
        version = json.loads(text).get("cuda", {}).get("version")
    except (ValueError, AttributeError):
        return None
    return str(version) if version else None


def _compat(host: Host) -> str | None:
    """The newest ``libcuda.so.<version>`` of the forward-compatibility package."""
    names = [n for n in host.glob(COMPAT_DIR, "libcuda.so.*.*") if re.search(r"\.so\.\d+\.\d+", n)]
    return names[-1].split("libcuda.so.", 1)[1] if names else None
