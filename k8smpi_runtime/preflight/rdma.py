"""InfiniBand / RDMA checks: the HCAs the pod was given and their ports, the kernel side against
the image's user space, and GPUDirect.

Facts (Linux drivers/infiniband/core: sysfs.c, uverbs_main.c; rdma-core libibverbs/init.c):

- ``/sys/class/infiniband/<hca>/ports/<n>/{state,phys_state,link_layer,rate}``: ``4: ACTIVE``,
  ``5: LinkUp``, ``InfiniBand`` or ``Ethernet`` (RoCE), ``200 Gb/sec (4X HDR)``. /sys is not
  namespaced: a container sees every HCA of the node there.
- ``/dev/infiniband/uverbs<N>``: the verbs devices the pod was *given* (RDMA device plugin);
  ``/sys/class/infiniband_verbs/uverbs<N>/ibdev`` names the HCA behind each, and its
  ``abi_version`` is the driver's ABI (mlx5: 1).
- ``/sys/class/infiniband_verbs/abi_version``: the kernel's uverbs ABI. rdma-core's libibverbs
  accepts 3 to 6 (IB_USER_VERBS_MIN/MAX_ABI_VERSION) and refuses to start otherwise ("Fatal:
  kernel ABI version N doesn't match library version 6"); its mlx5 provider accepts driver ABI
  1 to 1 and skips other devices.
- ``/sys/module/mlx5_core/version``: present for MLNX_OFED / DOCA-OFED kernel modules only
  (inbox drivers have none). UCX does not support MOFED 5 user space on a MOFED 4 kernel
  (openucx/ucx#6906) and wants the OFED it was built with (#5469).
- GPUDirect RDMA: ``/sys/module/nvidia_peermem`` (or the older ``nv_peer_mem``); gdrcopy:
  ``/dev/gdrdrv``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from k8smpi_runtime.preflight.model import ABSENT, FAIL, OK, SKIP, WARN, Finding

if TYPE_CHECKING:
    from collections.abc import Callable

    from k8smpi_runtime.preflight.host import Host
    from k8smpi_runtime.preflight.image import Image
    from k8smpi_runtime.preflight.native import VerbsProbe

#: rdma-core libibverbs (libibverbs/ibverbs.h): kernel uverbs ABI versions it accepts.
VERBS_ABI = (3, 6)
#: rdma-core providers' driver ABI ranges (providers/<name>/<name>-abi.h).
PROVIDER_ABI = {"mlx5": (1, 1), "mlx4": (2, 4)}


@dataclass(frozen=True)
class Port:
    hca: str
    number: str
    state: str
    phys_state: str
    link_layer: str
    rate: str

    @property
    def active(self) -> bool:
        return self.state.endswith("ACTIVE")

    def describe(self) -> str:
        layer = "Ethernet (RoCE)" if self.link_layer == "Ethernet" else self.link_layer or "?"
        state = self.state.split(": ", 1)[-1] or "?"
        return f"{self.hca} port {self.number}: {state}, {layer}, {self.rate or '? Gb/sec'}"


@dataclass(frozen=True)
class Rdma:
    #: HCAs in /sys/class/infiniband (the node's, not necessarily the pod's).
    node_hcas: list[str] = field(default_factory=list)
    #: /dev/infiniband/uverbsN -> HCA name (what the pod was given).
    given: dict[str, str] = field(default_factory=dict)
    ports: list[Port] = field(default_factory=list)
    abi: int | None = None
    device_abi: dict[str, int] = field(default_factory=dict)
    mofed: str | None = None
    mlx5_loaded: bool = False


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


def facts(host: Host) -> Rdma:
    hcas = host.listdir("/sys/class/infiniband")
    given: dict[str, str] = {}
    device_abi: dict[str, int] = {}
    for dev in host.glob("/dev/infiniband", "uverbs*"):
        base = f"/sys/class/infiniband_verbs/{dev}"
        given[dev] = _first_line(host.read(f"{base}/ibdev")) or "?"
        abi = _first_line(host.read(f"{base}/abi_version"))
        if abi.isdigit():
            device_abi[dev] = int(abi)
    ports = []
    for hca in hcas:
        for number in host.listdir(f"/sys/class/infiniband/{hca}/ports"):
            base = f"/sys/class/infiniband/{hca}/ports/{number}"
            ports.append(
                Port(
                    hca,
                    number,
                    _first_line(host.read(f"{base}/state")),
                    _first_line(host.read(f"{base}/phys_state")),
                    _first_line(host.read(f"{base}/link_layer")),
                    _first_line(host.read(f"{base}/rate")),
                )
            )
    abi_text = _first_line(host.read("/sys/class/infiniband_verbs/abi_version"))
    return Rdma(
        hcas,
        given,
        ports,
        int(abi_text) if abi_text.isdigit() else None,
        device_abi,
        _first_line(host.read("/sys/module/mlx5_core/version")) or None,
        host.exists("/sys/module/mlx5_core"),
    )


def check_devices(rdma: Rdma, requested: int | None) -> list[Finding]:
    """The pod's verbs devices and the state of their ports; absent is fine unless asked for."""
    if not rdma.given:
        node = f" (the node has {', '.join(rdma.node_hcas)})" if rdma.node_hcas else ""
        found = f"no /dev/infiniband/uverbs*{node}"
        if requested:
            return [
                Finding(
                    "rdma",
                    FAIL,
                    found,
                    f"{requested} RDMA device(s) (the pod's rdma/* resources)",
                    "the RDMA device plugin passed no verbs device into the pod",
                )
            ]
        return [Finding("rdma", ABSENT, found)]
    out: list[Finding] = []
    hcas = sorted(set(rdma.given.values()))
    for hca in hcas:
        ports = [p for p in rdma.ports if p.hca == hca]
        text = "; ".join(p.describe() for p in ports) or f"{hca}: no ports in /sys"
        if not ports or not any(p.active for p in ports):
            out.append(
                Finding(
                    "rdma",
                    FAIL,
                    text,
                    "a port in state ACTIVE",
                    f"{hca} has no active port: check the cable, the switch and the subnet "
                    "manager (InfiniBand) or the link (RoCE); `ibstat` on the node",
                )
            )
        elif not all(p.active for p in ports):
            out.append(Finding("rdma", WARN, text, "ACTIVE", f"{hca}: some ports are not up"))
        else:
            roce = any(p.link_layer == "Ethernet" for p in ports)
            message = (
                "RoCE: UCX needs a routable GID (UCX_IB_GID_INDEX) and lossless Ethernet"
                if roce
                else ""
            )
            out.append(Finding("rdma", OK, text, message=message))
    if requested and len(rdma.given) < requested:
        out.append(
            Finding(
                "rdma",
                FAIL,
                f"{len(rdma.given)} verbs device(s)",
                f"{requested} (the pod's rdma/* resources)",
                "fewer RDMA devices than the pod asked for",
            )
        )
    return out


def check_stack(rdma: Rdma, image: Image, probe: Callable[[], VerbsProbe] | None) -> list[Finding]:
    """Kernel uverbs ABI, driver ABI, MOFED against the image's user space; libibverbs live."""
    if not rdma.given:
        return [Finding("rdma-stack", ABSENT, "no RDMA device")]
    out: list[Finding] = []
    user = _user_space(image)
    lo, hi = VERBS_ABI
    if rdma.abi is None:
        out.append(
            Finding(
                "rdma-stack",
                FAIL,
                "no /sys/class/infiniband_verbs/abi_version",
                "the ib_uverbs module",
                "the node's kernel has no uverbs (load ib_uverbs)",
            )
        )
    elif not lo <= rdma.abi <= hi:
        out.append(
            Finding(
                "rdma-stack",
                FAIL,
                f"kernel uverbs ABI {rdma.abi}",
                f"{lo}..{hi} (what {user}'s libibverbs accepts)",
                "the image's rdma-core is too new for this kernel: libibverbs refuses to start "
                f'("Fatal: kernel ABI version {rdma.abi} doesn\'t match library version {hi}"); '
                "use a node with a newer kernel, or an image with the node's OFED",
            )
        )
    for dev, abi in sorted(rdma.device_abi.items()):
        hca = rdma.given.get(dev, "?")
        match = re.match(r"[a-z]+\d*", hca)
        provider = match.group() if match else "?"
        rng = PROVIDER_ABI.get(provider)
        if rng and not rng[0] <= abi <= rng[1]:
            out.append(
                Finding(
                    "rdma-stack",
                    FAIL,
                    f"{hca} ({dev}) driver ABI {abi}",
                    f"{rng[0]}..{rng[1]} (the {provider} provider of {user})",
                    "rdma-core skips this device: the image's provider and the kernel driver "
                    "differ",
                )
            )
    out.append(_ofed(rdma, image, user))
    if probe is not None:
        result = probe()
        if not result.loaded:
            out.append(
                Finding(
                    "rdma-stack",
                    FAIL,
                    "libibverbs.so.1 cannot be loaded",
                    "rdma-core's libibverbs1 in the image",
                    "install libibverbs1 and ibverbs-providers in the image",
                )
            )
        elif (result.devices or 0) < len(rdma.given):
            out.append(
                Finding(
                    "rdma-stack",
                    FAIL,
                    f"libibverbs lists {result.devices or 0} device(s) {result.error}".strip(),
                    f"{len(rdma.given)} (/dev/infiniband/uverbs*)",
                    "the image has no provider for this HCA (ibverbs-providers), or its ABI does "
                    "not match the kernel's",
                )
            )
    return out


def _user_space(image: Image) -> str:
    flavor = image.ofed_flavor
    if flavor == "rdma-core" or flavor is None:
        return f"rdma-core {image.rdma_core}" if image.rdma_core else "the image's rdma-core"
    return f"{flavor} {image.ofed_version or '?'}"


def _major(version: str) -> str:
    return version.split("-", 1)[0].split(".", 1)[0]


def _ofed(rdma: Rdma, image: Image, user: str) -> Finding:
    flavor = image.ofed_flavor
    kernel = (
        f"MOFED/DOCA kernel driver {rdma.mofed}"
        if rdma.mofed
        else "inbox mlx5_core"
        if rdma.mlx5_loaded
        else "no mlx5_core"
    )
    found = f"{kernel}; image {user}"
    if rdma.mofed and flavor in ("mlnx", "doca") and image.ofed_version:
        host_major, image_major = _major(rdma.mofed), _major(image.ofed_version)
        if host_major == "4" and image_major != "4":
            return Finding(
                "rdma-stack",
                FAIL,
                found,
                "MOFED user space of the kernel's major (4.x)",
                "UCX does not support MOFED 5+ user space on a MOFED 4 kernel (openucx/ucx#6906)",
            )
        if flavor == "mlnx" and host_major != image_major:
            return Finding(
                "rdma-stack",
                WARN,
                found,
                f"MLNX_OFED {host_major}.x",
                "UCX has to run with the OFED it was built with (openucx/ucx#5469): rebuild with "
                f"OFED_VERSION matching {rdma.mofed}",
            )
    if not rdma.mofed and flavor in ("mlnx", "doca"):
        return Finding(
            "rdma-stack",
            WARN,
            found,
            "the OFED kernel modules the image's user space was built for",
            "the image carries NVIDIA OFED user space but the node runs the inbox driver: build "
            "with OFED_FLAVOR=rdma-core",
        )
    return Finding("rdma-stack", OK, found)


def check_gpudirect(host: Host, rdma: Rdma, image: Image, *, gpus: int) -> list[Finding]:
    """nvidia_peermem and gdrdrv, when the pod has GPUs and HCAs and the image uses them."""
    if not rdma.given or gpus == 0:
        return [Finding("gpudirect", ABSENT, "needs GPUs and an RDMA device")]
    out: list[Finding] = []
    cuda_ucx = image.flag("ucx.cuda")
    if cuda_ucx is False:
        return [Finding("gpudirect", SKIP, "the image's UCX is not built with CUDA")]
    peermem = next(
        (m for m in ("nvidia_peermem", "nv_peer_mem") if host.exists(f"/sys/module/{m}")), None
    )
    if peermem:
        out.append(Finding("gpudirect", OK, f"{peermem} loaded"))
    else:
        out.append(
            Finding(
                "gpudirect",
                WARN,
                "nvidia_peermem not loaded",
                "nvidia_peermem (GPUDirect RDMA)",
                "the HCA cannot read GPU memory directly: UCX stages GPU buffers through host "
                "memory (slower); `modprobe nvidia_peermem` on the node",
            )
        )
    if image.flag("ucx.gdrcopy"):
        if host.exists("/dev/gdrdrv"):
            out.append(Finding("gpudirect", OK, "/dev/gdrdrv present"))
        else:
            out.append(
                Finding(
                    "gpudirect",
                    WARN,
                    "no /dev/gdrdrv",
                    "/dev/gdrdrv (the image's UCX uses gdrcopy)",
                    "UCX's gdr_copy transport is off: load gdrdrv on the node and pass the "
                    "device in",
                )
            )
    return out
