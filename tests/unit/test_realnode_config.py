"""What the real node's configuration says, checked without starting it (devcluster/realnode.py,
podnet.py, nodeimages.py)."""

from __future__ import annotations

import ipaddress
import itertools
import json
import re
from pathlib import Path

import pytest
import yaml

from devcluster import kwoknodes, nodeimages, podnet, realnode
from devcluster.layout import (
    KWOK_POD_CIDR,
    POD_CIDR,
    REAL_POD_CIDR,
    DevclusterError,
    Layout,
    Ports,
)
from images import build

OFFSETS = (0, 1, 249)


def node(tmp_path: Path, offset: int = 1, index: int = 0) -> realnode.RealNode:
    return realnode.RealNode(Layout(tmp_path), offset, index)


def test_pod_ranges_stay_apart_and_inside_the_benchmark_range() -> None:
    everything = ipaddress.IPv4Network(POD_CIDR)
    kwok = ipaddress.IPv4Network(KWOK_POD_CIDR)
    real = ipaddress.IPv4Network(REAL_POD_CIDR)
    assert kwok.subnet_of(everything)
    assert real.subnet_of(everything)
    assert not kwok.overlaps(real)
    subnets = []
    for offset in range(250):
        net = podnet.PodNetwork(offset)
        subnet = ipaddress.IPv4Network(net.subnet)
        assert subnet.subnet_of(real)
        subnets.append(subnet)
        nodes = {ipaddress.IPv4Address(net.node_ip(i)) for i in range(podnet.MAX_NODES)}
        ranges = []
        for i in range(podnet.MAX_NODES):
            first, last = (ipaddress.IPv4Address(a) for a in net.pod_range(i))
            assert first in subnet and last in subnet
            assert last < subnet.broadcast_address
            assert not any(first <= n <= last for n in nodes)
            ranges.append((first, last))
        for (_, last), (first, _) in itertools.pairwise(ranges):
            assert last < first
        assert len(net.bridge) <= 15  # IFNAMSIZ
        assert all(len(net.chain(h)) <= 28 for h in ("PRE", "IN", "FWD"))
    assert len(set(subnets)) == 250  # two checkouts never share a subnet


def test_kwok_manages_only_its_own_nodes_with_its_own_pod_range(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    kwoknodes.write_configs(lay, Ports())
    options = next(yaml.safe_load_all((tmp_path / "kwok.yaml").read_text()))["options"]
    assert options["cidr"] == KWOK_POD_CIDR
    argv = kwoknodes.command_lines(lay, tmp_path, Ports())["kwok"]
    assert "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake" in argv
    assert not any(a.startswith("--manage-all-nodes") for a in argv)
    annotations = kwoknodes.node_manifest(0)["metadata"]["annotations"]
    assert annotations["kwok.x-k8s.io/node"] == "fake"


def test_cni_config_bridges_without_gateway_or_masquerade(tmp_path: Path) -> None:
    net = podnet.PodNetwork(7)
    conf = net.cni_config(1, tmp_path / "ipam")
    bridge = conf["plugins"][0]
    assert bridge["bridge"] == "k8smpi7"
    # isGateway would turn on net.ipv4.ip_forward host-wide; pods never leave the bridge.
    assert bridge["isGateway"] is False
    assert bridge["ipMasq"] is False
    (rng,) = bridge["ipam"]["ranges"][0]
    assert rng == {
        "subnet": "198.19.7.0/24",
        "rangeStart": net.pod_range(1)[0],
        "rangeEnd": net.pod_range(1)[1],
        "gateway": "198.19.7.1",
    }
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")


def test_pod_traffic_rules_stay_in_our_chains() -> None:
    net = podnet.PodNetwork(3)
    rules = podnet._rules(net, 16446, "127.0.83.4")
    assert set(rules) == {
        ("nat", "K8SMPI-3-PRE"),
        ("filter", "K8SMPI-3-IN"),
        ("filter", "K8SMPI-3-FWD"),
    }
    # The kubernetes Service to the apiserver; DNS on the gateway to the devcluster's CoreDNS.
    api, udp, tcp = rules["nat", "K8SMPI-3-PRE"]
    assert api[:2] == ["-d", f"{podnet.SERVICE_IP}/32"]
    assert podnet.SERVICE_IP == "10.96.0.1"
    assert api[-2:] == ["--to-destination", "127.0.0.1:16446"]
    for dns, proto in ((udp, "udp"), (tcp, "tcp")):
        assert dns[:6] == ["-d", "198.19.3.1/32", "-p", proto, "--dport", "53"]
        assert dns[-2:] == ["--to-destination", "127.0.83.4:53"]
    # Only what was DNATed (or answers) gets in.
    for rule in rules["filter", "K8SMPI-3-IN"][1:-1]:
        assert rule[-6:] == ["-m", "conntrack", "--ctstate", "DNAT", "-j", "ACCEPT"]
    # Last rule of each filter chain drops what the others did not let through.
    assert rules["filter", "K8SMPI-3-IN"][-1] == ["-j", "DROP"]
    assert rules["filter", "K8SMPI-3-FWD"] == [
        ["-i", "k8smpi3", "-o", "k8smpi3", "-j", "RETURN"],
        ["-j", "DROP"],
    ]
    for table, builtin, match in podnet._jumps(net):
        assert match[-1] in {chain for (t, chain) in rules if t == table}
        assert builtin in ("PREROUTING", "INPUT", "FORWARD")


@pytest.mark.parametrize("offset", OFFSETS)
def test_sockets_fit_unix_path_limits(tmp_path: Path, offset: int) -> None:
    for index in range(podnet.MAX_NODES):
        n = node(tmp_path, offset, index)
        # containerd refuses a shim socket_dir longer than 42 characters; sun_path is 108.
        assert len(str(n.run / "s")) <= 42
        assert len(f"{n.socket}.ttrpc") < 108
        assert len(str(n.kubelet_root / "device-plugins" / "kubelet.sock")) < 108


def test_containerd_config(tmp_path: Path) -> None:
    n = node(tmp_path, offset=2, index=1)
    text = realnode.containerd_config(n, "localhost/k8smpi/pause:abc")
    assert "version = 4" in text
    settings = dict(re.findall(r"^\s*([A-Za-z_]+) = (.+)$", text, re.M))
    assert settings["root"] == f"'{n.conf / 'containerd'}'"
    assert settings["state"] == f"'{n.run / 'containerd'}'"
    assert settings["restrict_oom_score_adj"] == "true"
    assert settings["netns_mounts_under_state_dir"] == "true"
    assert settings["BinaryName"] == "'/usr/sbin/runc'"
    assert settings["SystemdCgroup"] == "false"
    assert settings["ShimCgroup"] == "'/k8smpi-2/real-node-1/shims'"
    assert settings["sandbox"] == "'localhost/k8smpi/pause:abc'"
    assert settings["socket_dir"] == f"'{n.run / 's'}'"
    assert settings["conf_dir"] == f"'{n.conf / 'cni'}'"
    assert settings["imports"] == "[]"
    # Nothing of the host's: no /opt/containerd, /var/run/nri, /run/containerd, /etc/cni.
    values = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for path in ("/opt/", "/var/", "/etc/", "/run/containerd"):
        assert path not in values


def test_kubelet_config(tmp_path: Path) -> None:
    n = node(tmp_path, offset=2, index=1)
    cfg = realnode.kubelet_config(n)
    assert cfg["address"] == "198.19.2.2"
    assert cfg["port"] == realnode.KUBELET_PORT + 2
    assert cfg["readOnlyPort"] == 0
    assert cfg["healthzPort"] == 0
    assert cfg["authentication"]["anonymous"] == {"enabled": False}
    assert cfg["authentication"]["webhook"] == {"enabled": True}
    assert cfg["authorization"] == {"mode": "Webhook"}
    assert cfg["failCgroupV1"] is False
    assert cfg["cgroupDriver"] == "cgroupfs"
    assert cfg["cgroupRoot"] == "/k8smpi-2/real-node-1"
    assert cfg["makeIPTablesUtilChains"] is False
    assert cfg["protectKernelDefaults"] is False
    assert cfg["clusterDNS"] == ["198.19.2.1"]
    assert cfg["containerRuntimeEndpoint"] == f"unix://{n.socket}"
    assert cfg["registerWithTaints"] == [realnode.TAINT]
    first, last = podnet.PodNetwork(2).pod_range(1)
    assert cfg["maxPods"] == int(last.rsplit(".")[-1]) - int(first.rsplit(".")[-1]) + 1
    json.dumps(cfg)  # what write_configs writes (JSON is YAML)


def test_kubelet_never_writes_the_hosts_kernel_settings(tmp_path: Path) -> None:
    n = node(tmp_path)
    argv = realnode.kubelet_argv(n)
    assert argv[:4] == ["unshare", "--mount", "--propagation", "unchanged"]
    script = argv[argv.index("-c") + 1]
    lines = script.splitlines()
    # Private before anything is mounted over /proc/sys or /var/log.
    assert lines.index("mount --make-private /") < lines.index("mount --make-rprivate /proc")
    first_bind = min(i for i, line in enumerate(lines) if line.startswith("mount --bind"))
    assert lines.index("mount --make-rprivate /proc") < first_bind
    for key in ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops"):
        assert any(line.endswith(f" /proc/sys/{key}") for line in lines), key
    assert lines[-1] == 'exec "$@"'
    kubelet = argv[argv.index("-c") + 3 :]
    assert kubelet[0].endswith("/kubelet")
    assert f"--node-ip={n.ip}" in kubelet
    assert f"--root-dir={n.kubelet_root}" in kubelet
    assert f"--node-labels={realnode.LABEL}=true" in kubelet


def test_placement_matches_the_taint_and_label() -> None:
    place = realnode.placement()
    assert place["nodeSelector"] == {realnode.LABEL: "true"}
    (toleration,) = place["tolerations"]
    assert toleration["key"] == realnode.TAINT["key"]
    assert toleration["effect"] == realnode.TAINT["effect"]
    # The seed's worker (4 GPUs, 1 HCA) fits; deploy/base's four of them share one node.
    assert int(realnode.EXTENDED_RESOURCES["nvidia.com/gpu"]) >= 4 * 4
    assert realnode.EXTENDED_RESOURCES["rdma/hca"] == "1k"


def test_node_count_from_the_environment() -> None:
    assert realnode.node_count({}) == 1
    assert realnode.node_count({"DEVCLUSTER_REAL_NODES": "0"}) == 0
    for bad in ("x", "-1", str(podnet.MAX_NODES + 1)):
        with pytest.raises(DevclusterError):
            realnode.node_count({"DEVCLUSTER_REAL_NODES": bad})


def test_image_tags_are_predictable() -> None:
    assert nodeimages.pause_tag() == nodeimages.pause_tag()
    assert re.fullmatch(r"localhost/k8smpi/pause:[0-9a-f]{12}", nodeimages.pause_tag())
    tags = nodeimages.workload_tags()
    # cpu and example with the default MPI, the waiter, the example with every other MPI.
    others = {f"example-{mpi}" for mpi in build.MPIS[1:]}
    assert set(tags) == {"cpu", "waiter", "example"} | others
    assert all(t.startswith("localhost/k8smpi/") for t in tags.values())
    assert tags["example"].split(":", 1)[1].startswith(f"cpu-{tags['cpu'].split(':', 1)[1]}")
    assert len(set(tags.values())) == len(tags)
    assert "-mpich" in tags["example-mpich"]


def test_the_offset_names_the_real_nodes_resources(tmp_path: Path) -> None:
    ports = Ports.from_env({"DEVCLUSTER_PORT_OFFSET": "7"})
    assert ports.offset == 7
    (n,) = realnode.nodes(Layout(tmp_path), ports, 1)
    assert (n.name, n.ip, n.port) == ("real-node-0", "198.19.7.1", realnode.KUBELET_PORT + 7)
    assert n.cgroup == "/k8smpi-7/real-node-0"
    assert n.run == Path("/run/k8smpi-7/real-node-0")
    assert n.conf == tmp_path / "realnode" / "real-node-0"
