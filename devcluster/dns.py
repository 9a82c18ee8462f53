"""Pod DNS: CoreDNS on a loopback address of its own, answering for headless Services.

glibc's resolver always asks port 53, so CoreDNS listens on 127.0.83.(1+offset). Processes
see the cluster's names with ``.devcluster/resolv.conf`` bind-mounted over /etc/resolv.conf in
a private mount namespace; the machine's own resolver is never touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from devcluster import processes
from devcluster.layout import CLUSTER_DOMAIN, write_atomic

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from devcluster.layout import Layout, Ports

COMPONENTS = ("coredns",)

COREFILE = """\
.:53 {{
    bind {dns_address}
    errors
    ready 127.0.0.1:{ready_port}
    kubernetes {domain} in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} devcluster
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    forward . /etc/resolv.conf
}}
"""


def write_configs(lay: Layout, ports: Ports) -> None:
    write_atomic(
        lay.root / "Corefile",
        COREFILE.format(
            dns_address=ports.dns_address,
            ready_port=ports.coredns_ready,
            domain=CLUSTER_DOMAIN,
            kubeconfig=lay.component_kubeconfig("coredns"),
        ),
    )
    # What a pod in namespace default gets from the kubelet: tests bind-mount it over
    # /etc/resolv.conf (unshare -m) so getaddrinfo() resolves pod names through CoreDNS.
    write_atomic(
        lay.resolv_conf,
        f"nameserver {ports.dns_address}\n"
        f"search default.svc.{CLUSTER_DOMAIN} svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n"
        "options ndots:5\n",
    )


def command_lines(lay: Layout, bin_dir: Path, ports: Ports) -> dict[str, list[str]]:
    return {"coredns": [str(bin_dir / "coredns"), "-conf", str(lay.root / "Corefile")]}


def health_checks(lay: Layout, ports: Ports) -> dict[str, Callable[[], bool]]:
    return {"coredns": lambda: processes.http_ok(f"http://127.0.0.1:{ports.coredns_ready}/ready")}
