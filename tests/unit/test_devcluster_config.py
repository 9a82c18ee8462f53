"""What the devcluster generates, checked without starting it."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import yaml

from devcluster import addons, cli, kwoknodes, realnode
from devcluster.layout import OFFSET_LIMIT, Layout, Ports

REPO = Path(__file__).resolve().parents[2]


def versions() -> dict[str, str]:
    out = {}
    for line in (REPO / "devcluster/versions.env").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def test_nodes_match_the_seed_talk() -> None:
    node = kwoknodes.node_manifest(3)
    assert node["metadata"]["name"] == "kwok-node-3"
    for field in ("capacity", "allocatable"):
        res = node["status"][field]
        assert res["cpu"] == "160"
        assert res["memory"] == "598005824Ki"
        assert res["nvidia.com/gpu"] == "4"
        assert res["rdma/hca"] == "1k"
        assert res["pods"] == "500"
    assert node["metadata"]["labels"][kwoknodes.NODE_LABEL] == "true"


def test_generated_configs_parse(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    lay.pki.mkdir()
    for name in ("ca", "admin", "kube-controller-manager", "kube-scheduler", "kwok", "coredns"):
        (lay.pki / f"{name}.crt").write_text("cert")
        (lay.pki / f"{name}.key").write_text("key")
    cli.write_configs(lay, Ports())
    docs = list(yaml.safe_load_all((tmp_path / "kwok.yaml").read_text()))
    kinds = [d["kind"] for d in docs]
    assert kinds == ["KwokConfiguration", "Stage", "Stage", "Stage", "Stage"]
    # The opt-in stage that ends a pod on request (kwokstages.py) comes last.
    assert docs[-1]["metadata"]["name"] == "pod-complete-on-request"
    # Nodes advertise podexec's port as their kubelet's; kwok's own exec handler is off.
    assert docs[0]["options"]["nodePort"] == Ports().kubelet
    assert docs[0]["options"]["enableDebuggingHandlers"] is False
    assert {d["metadata"]["name"] for d in docs[1:]} == {
        "node-initialize",
        "pod-ready",
        "pod-delete",
        "pod-complete-on-request",
    }
    policy = yaml.safe_load((tmp_path / "audit-policy.yaml").read_text())
    assert "pods/exec" in policy["rules"][0]["resources"][0]["resources"]
    kubeconfig = yaml.safe_load(lay.kubeconfig.read_text())
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:16443"
    assert (lay.kubeconfig.stat().st_mode & 0o777) == 0o600
    corefile = (tmp_path / "Corefile").read_text()
    assert "bind 127.0.83.1" in corefile
    assert "kubernetes cluster.local" in corefile
    resolv = lay.resolv_conf.read_text()
    assert resolv.startswith("nameserver 127.0.83.1\n")


def test_every_component_listens_on_loopback_only(tmp_path: Path) -> None:
    argv = cli.command_lines(Layout(tmp_path), tmp_path, Ports())
    assert set(argv) == set(cli.COMPONENTS)
    for name, args in argv.items():
        for arg in args:
            listen = r"(?:bind-address|server-address|listen-[a-z]+-urls)=(?:https?://)?([0-9.]+)"
            for addr in re.findall(listen, arg):
                assert addr.startswith("127."), f"{name}: {arg}"


def test_go_build_modules_pin_versions_env() -> None:
    v = versions()
    pins = {
        "kube": ("k8s.io/kubernetes", v["KUBE_VERSION"]),
        "etcd": ("go.etcd.io/etcd/server/v3", v["ETCD_VERSION"]),
        "kwok": ("sigs.k8s.io/kwok", v["KWOK_VERSION"]),
        "coredns": ("github.com/coredns/coredns", v["COREDNS_VERSION"]),
        "containerd": ("github.com/containerd/containerd/v2", v["CONTAINERD_VERSION"]),
        "jobset": ("sigs.k8s.io/jobset", v["JOBSET_VERSION"]),
        "kueue": ("sigs.k8s.io/kueue", v["KUEUE_VERSION"]),
    }
    for folder, (module, version) in pins.items():
        gomod = (REPO / "devcluster/gobuild" / folder / "go.mod").read_text()
        assert f"\nrequire {module} v{version}\n" in gomod, folder
    # build.sh (build-addons.sh for JobSet and Kueue) checks the same pins, and its cache folder
    # changes with every version it builds.
    build = (REPO / "devcluster/build.sh").read_text()
    addons_build = (REPO / "devcluster/build-addons.sh").read_text()
    for folder, (module, _) in pins.items():
        assert f"check_pin {folder} {module} " in build + addons_build
    addons_stamp = re.search(r'^stamp="(.*)"$', addons_build, re.M)
    assert addons_stamp is not None
    assert "${JOBSET_VERSION}" in addons_stamp.group(1)
    assert "${KUEUE_VERSION}" in addons_stamp.group(1)
    stamp = re.search(r'^stamp="(.*)"$', build, re.M)
    assert stamp is not None
    for key in ("KUBE", "ETCD", "KWOK", "COREDNS", "CONTAINERD"):
        assert f"${{{key}_VERSION}}" in stamp.group(1)
    # The real node's binaries: kubelet from the kube module, containerd's three commands.
    tools = (REPO / "devcluster/gobuild/kube/tools.go").read_text()
    assert '_ "k8s.io/kubernetes/cmd/kubelet"' in tools
    for binary in ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr"):
        assert re.search(rf'^want=".*\b{binary}\b', build, re.M), binary
    staging = re.findall(
        r"^\t(k8s\.io/\S+) => \1 (v\S+)$",
        (REPO / "devcluster/gobuild/kube/go.mod").read_text(),
        re.M,
    )
    assert len(staging) > 25
    minor = v["KUBE_VERSION"].split(".", 1)[1]
    assert {tag for _, tag in staging} == {f"v0.{minor}"}
    # Kueue is built against a JobSet API; the JobSet controller served beside it is that one.
    kueue_sum = (REPO / "devcluster/gobuild/kueue/go.mod").read_text()
    assert f"\tsigs.k8s.io/jobset v{v['JOBSET_VERSION']} // indirect\n" in kueue_sum


def test_no_offset_moves_a_port_onto_another_checkouts() -> None:
    """Checkouts with different DEVCLUSTER_PORT_OFFSETs never share a port."""
    base = Ports()
    ports = {
        name: getattr(base, name)
        for name in base.__dataclass_fields__
        if name not in ("dns_address", "offset")
    }
    ports["real node kubelet"] = realnode.KUBELET_PORT
    for (addon, role), port in addons.PORT_BASES.items():
        ports[f"{addon} {role}"] = port
    spans = sorted((p, p + OFFSET_LIMIT, name) for name, p in ports.items())
    for (_, end, name), (start, _, other) in itertools.pairwise(spans):
        assert end <= start, f"{name} and {other}: offsets up to {OFFSET_LIMIT} overlap"
