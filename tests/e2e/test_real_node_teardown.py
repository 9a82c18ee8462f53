"""``python3 -m devcluster down`` leaves nothing of the real node on the host (issue 10).

The host is photographed with the whole devcluster down, again while the real node runs a pod
(with volume mounts, a network namespace, shims), and once more after ``down``: mounts,
network namespaces, links, iptables and ip6tables rules, kernel settings, cgroups, host paths
containerd and the kubelet use by default, and processes must be as before. While the node
runs, the host's kernel settings must be untouched and the only new rules our own chains.

Other engineers' devclusters and podman builds may run on the same machine meanwhile: what
belongs to another checkout's offset or to podman is left out of the comparison.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from devcluster import realnode
from devcluster.client import Cluster, devcluster
from devcluster.layout import Ports, default_layout
from devcluster.workloads import real_node_pod, running_pods
from images import build

SYSCTLS = (
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/forwarding",
    "net/ipv4/conf/all/route_localnet",
    "net/ipv4/conf/default/route_localnet",
    "net/ipv6/conf/all/forwarding",
    "net/bridge/bridge-nf-call-iptables",
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
)
# Where containerd, runc, CNI and the kubelet put things by default: ours must not.
HOST_PATHS = (
    "/run/containerd",
    "/run/netns",
    "/var/run/netns",
    "/var/lib/cni",
    "/var/lib/kubelet",
    "/var/log/containers",
    "/var/log/pods",
    "/opt/containerd",
    "/var/run/nri",
    "/etc/cni/net.d",
)
PODMAN = re.compile(r"libpod|buildah|podman|netavark|CNI-|cni-podman")


def offset() -> int:
    return Ports.from_env().offset


def foreign(entry: str) -> bool:
    """Another checkout's real node (another offset), or podman's doing."""
    others = [int(m) for m in re.findall(r"(?i)k8smpi-?(\d+)", entry)]
    return any(m != offset() for m in others) or bool(PODMAN.search(entry))


def mounts() -> set[str]:
    podman = str(build.cache_dir())
    out = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        sep = fields.index("-")
        point, fstype, source = fields[4], fields[sep + 1], fields[sep + 2]
        if not point.startswith(podman):
            out.add(f"{point} {fstype} {source}")
    return out


def masters() -> dict[str, str]:
    """Each network device's name -> its bridge (``-`` when it has none)."""
    listing = subprocess.run(
        ["ip", "-o", "link", "show"], capture_output=True, text=True, check=True
    )
    out = {}
    for line in listing.stdout.splitlines():
        name = line.split(":", 2)[1].strip().split("@")[0]
        master = re.search(r" master (\S+)", line)
        out[name] = master.group(1) if master else "-"
    return out


def links() -> set[str]:
    return {f"{name} master={master}" for name, master in masters().items()}


def routes() -> set[str]:
    """Every route, with its device's bridge: a veth's link-local routes belong to the real
    node whose bridge holds it (another checkout's are foreign)."""
    bridge = masters()
    listing = subprocess.run(
        ["ip", "-o", "route", "show", "table", "all"], capture_output=True, text=True, check=True
    )
    out = set()
    for line in listing.stdout.splitlines():
        dev = re.search(r" dev (\S+)", line)
        master = bridge.get(dev.group(1), "-") if dev else "-"
        out.add(f"{line} master={master}" if master != "-" else line)
    return out


def rules(command: str) -> set[str]:
    saved = subprocess.run([command], capture_output=True, text=True, check=True).stdout
    return {
        re.sub(r"\[\d+:\d+\]", "", line)
        for line in saved.splitlines()
        if line and not line.startswith("#")
    }


def cgroups() -> set[str]:
    out = set()
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        for folder, _dirs, _files in os.walk(hierarchy):
            out.add(folder)
    return out


def processes(*needles: str) -> set[str]:
    """Live processes whose command line names one of ``needles``."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and any(n in argv for n in needles):
            found.add(f"{entry.name} {argv.replace(chr(0), ' ')[:100]}")
    return found


def snapshot() -> dict[str, set[str]]:
    lay = default_layout()
    netns = {
        str(p)
        for d in ("/run/netns", "/var/run/netns")
        if Path(d).is_dir()
        for p in Path(d).iterdir()
    }
    shot = {
        "mounts": mounts(),
        "netns": netns,
        "links": links(),
        "routes": routes(),
        "iptables": rules("iptables-save"),
        "ip6tables": rules("ip6tables-save"),
        "sysctls": {f"{k}={Path('/proc/sys', k).read_text().strip()}" for k in SYSCTLS},
        "cgroups": cgroups(),
        "paths": {p for p in (*HOST_PATHS, str(realnode.run_root(offset()))) if Path(p).exists()},
        "processes": processes(str(lay.root), str(realnode.run_root(offset()))),
    }
    return {k: {e for e in v if not foreign(e)} for k, v in shot.items()}


def ours(shot: dict[str, set[str]]) -> dict[str, list[str]]:
    """Entries that name this checkout's real node: its bridge, chains, cgroups, folders."""
    o = offset()
    mark = re.compile(
        rf"k8smpi{o}\b|K8SMPI-{o}-|/k8smpi-{o}\b|{re.escape(str(default_layout().root))}/"
    )
    found = {k: sorted(e for e in v if mark.search(e)) for k, v in shot.items()}
    return {k: v for k, v in found.items() if v}


def differences(before: dict[str, set[str]], after: dict[str, set[str]]) -> dict[str, list[str]]:
    diff = {}
    for key, was in before.items():
        added, gone = after[key] - was, was - after[key]
        if added or gone:
            diff[key] = [f"+ {e}" for e in sorted(added)] + [f"- {e}" for e in sorted(gone)]
    return diff


@pytest.mark.restarts_cluster
def test_down_leaves_nothing_behind(cluster: Cluster, namespace: str) -> None:
    try:
        assert devcluster("down").returncode == 0
        before = snapshot()
        assert not before["processes"], "the devcluster still runs after down"
        assert ours(before) == {}
        assert devcluster("up").returncode == 0
        fresh = Cluster.from_devcluster(default_layout().root)
        # Something for down to clean: a pod with a network namespace, volume mounts, a shim.
        pod = real_node_pod(fresh, "victim", labels={"app": "victim"})
        pod["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {"medium": "Memory"}}]
        pod["spec"]["containers"][0]["volumeMounts"] = [
            {"name": "scratch", "mountPath": "/scratch"}
        ]
        fresh.apply([pod], namespace)
        running_pods(fresh, namespace, "app=victim", 1)
        during = snapshot()

        # While it runs: the host's settings as they were, no rule but in our own chains.
        assert during["sysctls"] == before["sysctls"]
        own_rule = re.compile(rf"K8SMPI-{offset()}-|k8smpi{offset()}\b")
        for table in ("iptables", "ip6tables"):
            added = during[table] - before[table]
            assert all(own_rule.search(line) for line in added), sorted(added)
            assert before[table] - during[table] == set()
        assert not any("KUBE-" in line for line in during["iptables"] | during["ip6tables"])
        # What down has to remove was there.
        seen = ours(during)
        assert {"mounts", "links", "routes", "iptables", "cgroups", "paths"} <= set(seen), seen
        assert any(" master=k8smpi" in link for link in seen["links"])  # the pod's veth

        assert devcluster("down").returncode == 0
        after = snapshot()
        assert ours(after) == {}
        assert differences(before, after) == {}
    finally:
        # As the rest of the session expects it.
        assert devcluster("up").returncode == 0
