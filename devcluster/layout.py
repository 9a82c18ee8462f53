"""Where the devcluster lives and how it is addressed: ports, folders, shared constants.

Everything listens on loopback; ``DEVCLUSTER_PORT_OFFSET=N`` moves every endpoint so two
checkouts can each run one. State lives in ``.devcluster/`` at the repo root (gitignored), or
``DEVCLUSTER_DIR``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class DevclusterError(Exception):
    """A known failure: printed as one line, exit 1."""


OFFSET_LIMIT = 250
"""``DEVCLUSTER_PORT_OFFSET`` is below this."""


@dataclass(frozen=True)
class Ports:
    """Loopback endpoints. Non-default ports so a real cluster's components are not disturbed.

    The defaults lie at least :data:`OFFSET_LIMIT` apart, so that no offset moves one port onto
    another checkout's (a unit test checks it, the real nodes' kubelet port included).
    """

    etcd_client: int = 23790
    etcd_peer: int = 24040
    apiserver: int = 16443
    controller_manager: int = 10257
    scheduler: int = 10507
    kwok: int = 10757
    # The simulated nodes' kubelet port (their status.daemonEndpoints): podexec.
    kubelet: int = 11250
    coredns_ready: int = 18181
    # glibc's resolver always asks port 53, so CoreDNS gets a loopback address of its own.
    dns_address: str = "127.0.83.1"
    # DEVCLUSTER_PORT_OFFSET: also names the real nodes' bridge, subnet, cgroups and run folder.
    offset: int = 0

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Ports:
        """``DEVCLUSTER_PORT_OFFSET=N`` moves every endpoint, so two checkouts can each run one."""
        raw = (os.environ if env is None else env).get("DEVCLUSTER_PORT_OFFSET", "0")
        try:
            offset = int(raw)
        except ValueError:
            raise DevclusterError(f"DEVCLUSTER_PORT_OFFSET must be an integer: {raw!r}") from None
        if not 0 <= offset < OFFSET_LIMIT:
            raise DevclusterError(f"DEVCLUSTER_PORT_OFFSET must be in 0..{OFFSET_LIMIT - 1}")
        base = cls()
        ports = {
            name: getattr(base, name) + offset
            for name in (
                "etcd_client",
                "etcd_peer",
                "apiserver",
                "controller_manager",
                "scheduler",
                "kwok",
                "kubelet",
                "coredns_ready",
            )
        }
        return cls(**ports, dns_address=f"127.0.83.{1 + offset}", offset=offset)


CLUSTER_DOMAIN = "cluster.local"
SERVICE_CIDR = "10.96.0.0/16"
# Pod IPs: the benchmarking range. kwok's pods take the first half; their IPs are never dialled
# (execs go apiserver -> podexec). The real nodes' pods (devcluster/podnet.py) are in the second
# half, 198.19.<offset>.0/24 per checkout, on a bridge of this machine only.
POD_CIDR = "198.18.0.0/15"
KWOK_POD_CIDR = "198.18.0.0/16"
REAL_POD_CIDR = "198.19.0.0/16"
# Written into the `kubernetes` Endpoints only; loopback is rejected there by validation.
ADVERTISE_ADDRESS = "192.0.2.10"


@dataclass
class Layout:
    """Where the devcluster keeps its state: ``.devcluster/`` at the repo root (gitignored)."""

    root: Path
    bin: Path = field(init=False)

    def __post_init__(self) -> None:
        self.bin = self.root / "bin"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "kubeconfig"

    @property
    def audit_log(self) -> Path:
        return self.root / "logs" / "audit.log"

    @property
    def resolv_conf(self) -> Path:
        return self.root / "resolv.conf"

    def pidfile(self, name: str) -> Path:
        return self.run / f"{name}.pid"

    def component_kubeconfig(self, name: str) -> Path:
        return self.root / f"kubeconfig-{name}"


def default_layout() -> Layout:
    return Layout(Path(os.environ.get("DEVCLUSTER_DIR", str(REPO / ".devcluster"))).resolve())


def log(msg: str) -> None:
    print(f"devcluster: {msg}", file=sys.stderr, flush=True)


def write_atomic(path: Path, data: str | bytes, mode: int = 0o644) -> None:
    """Write via a temp file in the same folder and rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        Path(tmp).chmod(mode)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
