"""The real nodes' pod network: one bridge per checkout, pod IPs in 198.19.<offset>.0/24.

The bridge ``k8smpi<offset>`` holds the gateway address (``.1``: node 0's IP, the kubelet's
address, the pods' DNS server) and one address per further node (``.2`` ...). containerd's CNI
config (Debian's ``bridge`` and ``host-local`` plugins) gives each node's pods addresses from
a range of their own in the same subnet, so pods of every real node share one L2 segment and
nothing is routed: ``isGateway`` stays off (it would turn ``net.ipv4.ip_forward`` on host-wide)
and we own the bridge's addresses ourselves. kwok's pods take 198.18.0.0/16; nothing here ever
dials 10.x, 172.16-31.x or 192.168.x.

Three iptables chains of our own (IPv4; the bridge has IPv6 off), named after the offset so
two checkouts never touch each other's rules:

- ``K8SMPI-<o>-PRE`` (nat PREROUTING, from the bridge): the ``kubernetes`` Service address
  (10.96.0.1:443) is DNATed to the loopback apiserver, and DNS to the gateway (port 53) to the
  devcluster's CoreDNS on its loopback address; ``route_localnet`` on the bridge only lets such
  packets reach 127.0.0.0/8. There is no kube-proxy, and no second CoreDNS (a listener of its
  own on the bridge cost 58 MiB).
- ``K8SMPI-<o>-IN`` (filter INPUT, from the bridge): pods reach the apiserver and CoreDNS
  (DNATed) and get replies; nothing else of this machine.
- ``K8SMPI-<o>-FWD`` (filter FORWARD): traffic between two ports of the bridge passes (with
  br_netfilter it is seen here); anything leaving or entering the pod range is dropped.

``remove()`` deletes the chains, the jumps to them and the bridge; nothing else on the host
changed, so nothing else needs restoring.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devcluster.layout import SERVICE_CIDR, DevclusterError

MAX_NODES = 4
# Each node's pods: 60 addresses after the node addresses (.1-.4) and a few spare ones.
_RANGE_START, _RANGE_SIZE = 16, 60
# The `kubernetes` Service: the first address of the service range.
SERVICE_IP = str(next(ipaddress.ip_network(SERVICE_CIDR).hosts()))


@dataclass(frozen=True)
class PodNetwork:
    offset: int

    @property
    def bridge(self) -> str:
        return f"k8smpi{self.offset}"

    @property
    def subnet(self) -> str:
        return f"198.19.{self.offset}.0/24"

    @property
    def gateway(self) -> str:
        """The bridge's address: node 0's IP and the pods' DNS server."""
        return self.node_ip(0)

    def node_ip(self, index: int) -> str:
        return f"198.19.{self.offset}.{1 + index}"

    def pod_range(self, index: int) -> tuple[str, str]:
        first = _RANGE_START + _RANGE_SIZE * index
        last = min(first + _RANGE_SIZE - 1, 254)
        return f"198.19.{self.offset}.{first}", f"198.19.{self.offset}.{last}"

    def chain(self, hook: str) -> str:
        return f"K8SMPI-{self.offset}-{hook}"

    def cni_config(self, index: int, ipam_dir: Path) -> dict[str, Any]:
        """containerd's CNI network for node ``index``: its own range, the shared bridge."""
        first, last = self.pod_range(index)
        return {
            "cniVersion": "1.0.0",
            "name": f"k8smpi-{self.offset}",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": False,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(ipam_dir),
                        "ranges": [
                            [
                                {
                                    "subnet": self.subnet,
                                    "rangeStart": first,
                                    "rangeEnd": last,
                                    "gateway": self.gateway,
                                }
                            ]
                        ],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                }
            ],
        }


def _run(*argv: str, check: bool = True) -> bool:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=60)
    if check and proc.returncode != 0:
        raise DevclusterError(f"{' '.join(argv)} failed: {proc.stderr.strip()[:300]}")
    return proc.returncode == 0


def _iptables(*args: str, check: bool = True) -> bool:
    # -w: wait for the xtables lock that podman and other checkouts take too.
    return _run("iptables", "-w", "10", *args, check=check)


def _rules(
    net: PodNetwork, apiserver_port: int, dns_address: str
) -> dict[tuple[str, str], list[list[str]]]:
    """(table, chain) -> its rules, in order."""
    br, gw = net.bridge, net.gateway
    return {
        ("nat", net.chain("PRE")): [
            ["-d", f"{SERVICE_IP}/32", "-p", "tcp", "--dport", "443", "-j", "DNAT",
             "--to-destination", f"127.0.0.1:{apiserver_port}"],
            *(["-d", f"{gw}/32", "-p", proto, "--dport", "53", "-j", "DNAT",
               "--to-destination", f"{dns_address}:53"] for proto in ("udp", "tcp")),
        ],
        ("filter", net.chain("IN")): [
            ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"],
            ["-d", "127.0.0.1/32", "-p", "tcp", "--dport", str(apiserver_port),
             "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"],
            *(["-d", f"{dns_address}/32", "-p", proto, "--dport", "53",
               "-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"] for proto in ("udp", "tcp")),
            ["-j", "DROP"],
        ],
        ("filter", net.chain("FWD")): [
            ["-i", br, "-o", br, "-j", "RETURN"],
            ["-j", "DROP"],
        ],
    }  # fmt: skip


def _jumps(net: PodNetwork) -> list[tuple[str, str, list[str]]]:
    """(table, built-in chain, match) for every jump into our chains."""
    br = net.bridge
    return [
        ("nat", "PREROUTING", ["-i", br, "-j", net.chain("PRE")]),
        ("filter", "INPUT", ["-i", br, "-j", net.chain("IN")]),
        ("filter", "FORWARD", ["-i", br, "-j", net.chain("FWD")]),
        ("filter", "FORWARD", ["-o", br, "-j", net.chain("FWD")]),
    ]


def _sysctl(path: str, value: str) -> None:
    Path("/proc/sys", path).write_text(f"{value}\n")


def ensure(net: PodNetwork, nodes: int, apiserver_port: int, dns_address: str) -> None:
    """The bridge with the nodes' addresses, and our chains, as they should be. Idempotent."""
    if not Path("/sys/class/net", net.bridge).exists():
        _run("ip", "link", "add", "name", net.bridge, "type", "bridge")
    # Our own interface's settings, gone with it: no IPv6 (pods get IPv4 only, and nothing
    # should reach this machine over a link-local address), and packets to 127.0.0.1 (the
    # DNATed apiserver) accepted from it.
    _sysctl(f"net/ipv6/conf/{net.bridge}/disable_ipv6", "1")
    _sysctl(f"net/ipv4/conf/{net.bridge}/route_localnet", "1")
    wanted = {net.node_ip(index) for index in range(nodes)}
    for address in wanted:
        _run("ip", "addr", "replace", f"{address}/24", "dev", net.bridge)
    listed = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", net.bridge],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    for address in re.findall(r" inet ([0-9.]+)/", listed.stdout):
        if address not in wanted:  # a node that is no longer wanted
            _run("ip", "addr", "del", f"{address}/24", "dev", net.bridge)
    _run("ip", "link", "set", net.bridge, "up")
    for (table, chain), rules in _rules(net, apiserver_port, dns_address).items():
        _iptables("-t", table, "-N", chain, check=False)
        _iptables("-t", table, "-F", chain)
        for rule in rules:
            _iptables("-t", table, "-A", chain, *rule)
    for table, builtin, match in _jumps(net):
        # First, so no earlier ACCEPT of the host's lets pod traffic past ours.
        if not _iptables("-t", table, "-C", builtin, *match, check=False):
            _iptables("-t", table, "-I", builtin, "1", *match)


def remove(net: PodNetwork) -> None:
    """Our jumps, chains and the bridge (its veths went with the pods' namespaces)."""
    if shutil.which("iptables") is None:  # then up never ran here
        return
    for table, builtin, match in _jumps(net):
        while _iptables("-t", table, "-D", builtin, *match, check=False):
            pass
    for table, chain in _rules(net, 0, ""):
        if _iptables("-t", table, "-F", chain, check=False):
            _iptables("-t", table, "-X", chain)
    if Path("/sys/class/net", net.bridge).exists():
        _run("ip", "link", "del", net.bridge)
