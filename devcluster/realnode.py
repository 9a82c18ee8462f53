"""The real nodes: kubelet + containerd + runc beside the kwok nodes, running pods for real.

Each node ``real-node-<i>`` is a kubelet (from the pinned kube module) talking CRI to a
containerd of its own (the pinned containerd module, Debian's runc through
``/usr/sbin/runc``, cgroupfs, Debian's CNI plugins), with pod IPs on the checkout's bridge
(:mod:`devcluster.podnet`, which also brings the pods' DNS queries and API calls to the
devcluster's CoreDNS and apiserver) and images from :mod:`devcluster.nodeimages`. Facts behind each
setting: ../shared/notes/real-node.md of the project (each was found by a failure).

Where things live (``<o>`` = DEVCLUSTER_PORT_OFFSET):

- ``.devcluster/realnode/<node>/``: configs and containerd's root (the imported images);
- ``/run/k8smpi-<o>/<node>/``: what only lives while the node runs: containerd's state and
  sockets (unix socket paths must stay short), runc's state, the kubelet's root dir, pod logs,
  IP leases; removed by ``down``;
- cgroups under ``/k8smpi-<o>/<node>`` in every hierarchy (the kubelet's ``cgroupRoot``;
  containerd's shims go to ``.../shims``), so ``down`` finds every process a node started by
  its cgroup, and two checkouts' kubelets never see each other's pods.

The kubelet runs in a mount namespace of its own where three of the host's kernel settings
that it would change (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops) are files
holding the values it wants, so the host's are never written; its root dir is a shared bind
mount, so the volumes it mounts there reach containerd and runc on the host. Its iptables
chains are off (``makeIPTablesUtilChains: false``): podnet's own chains do what pods need.

The nodes are tainted ``k8smpi.dev/real-node=true:NoSchedule`` and labelled
``k8smpi.dev/real-node=true``: a pod lands there only with both (``placement()``). They
advertise ``nvidia.com/gpu`` and ``rdma/hca`` (a PATCH of the node's status, as the Kubernetes
docs describe for extended resources; the kubelet keeps them across its status updates and
zeroes them only when it registers again, so ``up`` patches after every kubelet start).
"""

from __future__ import annotations

import calendar
import functools
import json
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster import hostfs, nodeimages, podnet, processes
from devcluster.controlplane import kubectl
from devcluster.layout import CLUSTER_DOMAIN, DevclusterError, Layout, Ports, log, write_atomic
from devcluster.pki import _issue, kubeconfig_text

if TYPE_CHECKING:
    from collections.abc import Callable

NODE_PREFIX = "real-node-"
LABEL = "k8smpi.dev/real-node"
TAINT = {"key": LABEL, "value": "true", "effect": "NoSchedule"}
# The seed's workers ask for 4 GPUs and 1 HCA each; 16 GPUs let deploy/'s 4 workers share one
# real node (the seed talk's nodes have 4 each; kwok nodes keep that shape).
EXTENDED_RESOURCES = {"nvidia.com/gpu": "16", "rdma/hca": "1k"}
KUBELET_PORT = 12250  # + offset, on the node's own address
CNI_PLUGINS = ("bridge", "host-local", "loopback")  # Debian's, in /usr/lib/cni
# What the kubelet would write into /proc/sys (kubelet/cm's setupKernelTunables); it finds
# these values already set in its mount namespace and writes nothing.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


def placement() -> dict[str, Any]:
    """What a pod spec needs to run on a real node (and only there)."""
    return {
        "nodeSelector": {LABEL: "true"},
        "tolerations": [{"key": LABEL, "operator": "Exists", "effect": "NoSchedule"}],
    }


def node_count(env: dict[str, str] | None = None) -> int:
    """``DEVCLUSTER_REAL_NODES`` (default 1; 0: none), at most podnet.MAX_NODES."""
    raw = (os.environ if env is None else env).get("DEVCLUSTER_REAL_NODES", "1")
    try:
        count = int(raw)
    except ValueError:
        raise DevclusterError(f"DEVCLUSTER_REAL_NODES must be an integer: {raw!r}") from None
    if not 0 <= count <= podnet.MAX_NODES:
        raise DevclusterError(f"DEVCLUSTER_REAL_NODES must be in 0..{podnet.MAX_NODES}")
    return count


def run_root(offset: int) -> Path:
    return Path(f"/run/k8smpi-{offset}")


@dataclass(frozen=True)
class RealNode:
    lay: Layout
    offset: int
    index: int

    @property
    def net(self) -> podnet.PodNetwork:
        return podnet.PodNetwork(self.offset)

    @property
    def name(self) -> str:
        return f"{NODE_PREFIX}{self.index}"

    @property
    def ip(self) -> str:
        return self.net.node_ip(self.index)

    @property
    def port(self) -> int:
        return KUBELET_PORT + self.offset

    @property
    def conf(self) -> Path:
        return self.lay.root / "realnode" / self.name

    @property
    def run(self) -> Path:
        return run_root(self.offset) / self.name

    @property
    def socket(self) -> Path:
        return self.run / "containerd.sock"

    @property
    def kubelet_root(self) -> Path:
        return self.run / "kubelet"

    @property
    def cgroup(self) -> str:
        return f"/k8smpi-{self.offset}/{self.name}"

    def component(self, exe: str) -> str:
        """Pid file and log name of this node's ``containerd`` or ``kubelet``."""
        return f"{exe}.{self.name}"

    def ctr(self) -> list[str]:
        return [str(self.lay.bin / "ctr"), "--address", str(self.socket), "--namespace", "k8s.io"]


def nodes(lay: Layout, ports: Ports, count: int) -> list[RealNode]:
    return [RealNode(lay, ports.offset, i) for i in range(count)]


def components(lay: Layout, ports: Ports, count: int) -> dict[str, str]:
    """Each real-node process ``restart`` may name -> its executable."""
    return {
        node.component(exe): exe
        for node in nodes(lay, ports, count)
        for exe in ("containerd", "kubelet")
    }


def _existing_nodes(lay: Layout, ports: Ports) -> list[RealNode]:
    """Every node this checkout may have started: by its config or its run folder."""
    found = {p.name for p in (lay.root / "realnode").glob(f"{NODE_PREFIX}*")}
    found |= {p.name for p in run_root(ports.offset).glob(f"{NODE_PREFIX}*")}
    indexes = sorted(
        int(n.removeprefix(NODE_PREFIX)) for n in found if n[len(NODE_PREFIX) :].isdigit()
    )
    return [RealNode(lay, ports.offset, i) for i in indexes]


# ---------------------------------------------------------------------------------------------
# Configuration


def containerd_config(node: RealNode, pause_image: str) -> str:
    idle = os.environ.get("DEVCLUSTER_STREAM_IDLE_TIMEOUT", "4h0m0s")
    return f"""\
# Written by devcluster/realnode.py. Every path is this node's own: another containerd on this
# machine (or another checkout's node) is never disturbed.
version = 4
root = '{node.conf / "containerd"}'
state = '{node.run / "containerd"}'
imports = []
# opt would write /opt/containerd, NRI listen on /var/run/nri; neither is used here.
disabled_plugins = [
  'io.containerd.internal.v1.opt',
  'io.containerd.nri.v1.nri',
  'io.containerd.image-verifier.v1.bindir',
]

[plugins]
  [plugins.'io.containerd.server.v1.grpc']
    address = '{node.socket}'

  [plugins.'io.containerd.server.v1.ttrpc']
    address = '{node.socket}.ttrpc'

  [plugins.'io.containerd.shim.v1.manager']
    socket_dir = '{node.run / "s"}'

  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = '{pause_image}'

  [plugins.'io.containerd.cri.v1.runtime']
    # No CAP_SYS_RESOURCE in these VMs' bounding set: runc cannot lower oom_score_adj.
    restrict_oom_score_adj = true
    # Not the host's /var/run/netns.
    netns_mounts_under_state_dir = true
    # CDI specs (devices for containers) from an empty folder of ours, not /etc/cdi.
    cdi_spec_dirs = ['{node.conf / "cdi"}']
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ['/usr/lib/cni']
      conf_dir = '{node.conf / "cni"}'
      max_conf_num = 1
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = 'io.containerd.runc.v2'
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          # Debian's runc (crun fails on hybrid cgroups); no systemd here.
          BinaryName = '/usr/sbin/runc'
          Root = '{node.run / "runc"}'
          SystemdCgroup = false
          ShimCgroup = '{node.cgroup}/shims'

  [plugins.'io.containerd.grpc.v1.cri']
    stream_server_address = '127.0.0.1'
    stream_server_port = '0'
    stream_idle_timeout = '{idle}'
"""


def kubelet_config(node: RealNode) -> dict[str, Any]:
    pki = node.lay.pki
    first, last = node.net.pod_range(node.index)
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip,
        "port": node.port,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "tlsCertFile": str(pki / f"kubelet-serving-{node.name}.crt"),
        "tlsPrivateKeyFile": str(pki / f"kubelet-serving-{node.name}.key"),
        # The apiserver's client certificate (O=system:masters) is authorised by the
        # apiserver itself: SubjectAccessReview through the webhook.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup,
        # Kubernetes 1.36 refuses cgroup v1 hosts unless told otherwise; these VMs are hybrid.
        "failCgroupV1": False,
        "failSwapOn": False,
        "protectKernelDefaults": False,
        "makeIPTablesUtilChains": False,
        "clusterDNS": [node.net.gateway],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": str(node.conf / "resolv.conf"),
        "podLogsDir": str(node.run / "pod-logs"),
        "maxPods": int(last.rsplit(".", 1)[1]) - int(first.rsplit(".", 1)[1]) + 1,
        "registerWithTaints": [TAINT],
        # A shared development machine: evict only when it is really short, and never
        # collect images (they are pinned too: nothing could pull them back).
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
            "nodefs.inodesFree": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusReportFrequency": "30s",
        "rotateCertificates": False,
        "serverTLSBootstrap": False,
    }


def kubelet_argv(node: RealNode) -> list[str]:
    """The kubelet in a private mount namespace (see the module docstring)."""
    sysctl_dir = node.conf / "sysctl"
    lines = [
        "set -e",
        # Mounts made here stay here: / and /proc are private in this namespace (the kubelet's
        # shared root dir is a mount of its own and keeps propagating to the host).
        "mount --make-private /",
        "mount --make-rprivate /proc",
        *(
            f"mount --bind {sysctl_dir / key.replace('/', '.')} /proc/sys/{key}"
            for key in KUBELET_SYSCTLS
        ),
        # The kubelet writes /var/log/containers (fixed path): a private folder instead.
        f"mount --bind {node.run / 'var-log'} /var/log",
        'exec "$@"',
    ]
    return [
        "unshare",
        "--mount",
        "--propagation",
        "unchanged",
        "sh",
        "-c",
        "\n".join(lines),
        "kubelet",
        str(node.lay.bin / "kubelet"),
        f"--config={node.conf / 'kubelet.yaml'}",
        f"--kubeconfig={node.conf / 'kubeconfig'}",
        f"--root-dir={node.kubelet_root}",
        f"--hostname-override={node.name}",
        f"--node-ip={node.ip}",
        f"--node-labels={LABEL}=true",
        "--v=1",
    ]


def write_configs(node: RealNode, ports: Ports, pause_image: str) -> None:
    pki = node.lay.pki
    _issue(pki, f"kubelet-{node.name}", f"/O=system:nodes/CN=system:node:{node.name}")
    _issue(
        pki,
        f"kubelet-serving-{node.name}",
        f"/CN={node.name}",
        san=f"IP:{node.ip}",
        usage="serverAuth",
    )
    server = f"https://127.0.0.1:{ports.apiserver}"
    write_atomic(
        node.conf / "kubeconfig", kubeconfig_text(server, pki, f"kubelet-{node.name}"), 0o600
    )
    write_atomic(node.conf / "containerd.toml", containerd_config(node, pause_image))
    write_atomic(node.conf / "kubelet.yaml", json.dumps(kubelet_config(node), indent=2) + "\n")
    ipam = node.run / "ipam"
    cni = node.net.cni_config(node.index, ipam)
    write_atomic(node.conf / "cni" / "10-k8smpi.conflist", json.dumps(cni, indent=2) + "\n")
    # What pods with dnsPolicy Default get, and what ClusterFirst adds nothing to.
    write_atomic(node.conf / "resolv.conf", f"nameserver {node.net.gateway}\n")
    for key, value in KUBELET_SYSCTLS.items():
        write_atomic(node.conf / "sysctl" / key.replace("/", "."), f"{value}\n")


# ---------------------------------------------------------------------------------------------
# Health


def _unix_socket_ok(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(1)
        return s.connect_ex(str(path)) == 0


def health_checks(lay: Layout, ports: Ports, count: int) -> dict[str, Callable[[], bool]]:
    checks: dict[str, Callable[[], bool]] = {}
    for node in nodes(lay, ports, count):
        checks[node.component("containerd")] = functools.partial(_unix_socket_ok, node.socket)
        healthz = f"https://{node.ip}:{node.port}/healthz"
        checks[node.component("kubelet")] = functools.partial(processes.https_ok, lay, healthz)
    return checks


def _exe(component: str) -> str:
    return component.split(".", 1)[0]


def _wait(lay: Layout, check: Callable[[], bool], component: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    logfile = lay.logs / f"{component}.log"
    while not check():
        if processes.read_pid(lay, component, exe=_exe(component)) is None:
            raise DevclusterError(f"{component} exited; see {logfile}")
        if time.monotonic() > deadline:
            raise DevclusterError(f"{component} not healthy after {timeout:.0f}s; see {logfile}")
        time.sleep(0.2)


def _rfc3339(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def _wait_registered(lay: Layout, node: RealNode, since: float, timeout: float) -> None:
    """The node Ready, with a heartbeat after ``since`` (a stale Ready from before the kubelet
    restarted does not count: registering again resets the extended resources)."""
    deadline = time.monotonic() + timeout
    last = "not registered"
    while time.monotonic() < deadline:
        try:
            obj = json.loads(kubectl(lay, "get", "node", node.name, "-o", "json"))
        except DevclusterError:
            obj = {}
        for cond in obj.get("status", {}).get("conditions", []):
            if cond["type"] == "Ready":
                last = f"Ready={cond['status']} ({cond.get('message', '')})"
                if cond["status"] == "True" and _rfc3339(cond["lastHeartbeatTime"]) >= since:
                    return
        if processes.read_pid(lay, node.component("kubelet"), exe="kubelet") is None:
            raise DevclusterError(
                f"kubelet exited; see {lay.logs / (node.component('kubelet') + '.log')}"
            )
        time.sleep(0.3)
    raise DevclusterError(f"{node.name} not Ready after {timeout:.0f}s: {last}")


def _converge_node(lay: Layout, node: RealNode) -> None:
    """Label, taint and extended resources as they should be (the kubelet sets the first two
    only when it creates the node object)."""
    obj = json.loads(kubectl(lay, "get", "node", node.name, "-o", "json"))
    taints = obj.get("spec", {}).get("taints", [])
    if not any(t.get("key") == TAINT["key"] and t.get("effect") == TAINT["effect"] for t in taints):
        kubectl(
            lay, "taint", "node", node.name, f"{TAINT['key']}={TAINT['value']}:{TAINT['effect']}"
        )
    kubectl(lay, "label", "--overwrite", "node", node.name, f"{LABEL}=true")
    status = obj.get("status", {})
    if any(
        status.get(field, {}).get(k) != v
        for field in ("capacity", "allocatable")
        for k, v in EXTENDED_RESOURCES.items()
    ):
        patch = {"status": {"capacity": EXTENDED_RESOURCES, "allocatable": EXTENDED_RESOURCES}}
        kubectl(
            lay,
            "patch",
            "node",
            node.name,
            "--subresource=status",
            "--type=merge",
            "-p",
            json.dumps(patch),
        )


# ---------------------------------------------------------------------------------------------
# Up, down, status


def _check_host() -> None:
    """What a real node needs of this machine, each missing piece named in one line."""
    if os.geteuid() != 0:
        raise DevclusterError(
            "a real node needs root (mounts, cgroups, a bridge): run as root, or set"
            " DEVCLUSTER_REAL_NODES=0 for the kwok nodes only"
        )
    files = [Path("/usr/sbin/runc"), *(Path("/usr/lib/cni", p) for p in CNI_PLUGINS)]
    missing = [str(p) for p in files if not p.exists()]
    missing += [t for t in ("ip", "iptables", "unshare", "mount") if shutil.which(t) is None]
    if missing:
        raise DevclusterError(f"{', '.join(missing)} missing: run `make apt` (devcluster/apt.sh)")


def up(lay: Layout, ports: Ports, count: int) -> dict[str, Any]:
    """``count`` real nodes Ready with the images imported (nodes of an earlier ``up`` beyond
    ``count`` removed). Returns what state.json records about them. Idempotent."""
    t0 = time.monotonic()
    if count:
        _check_host()
    extra = [n for n in _existing_nodes(lay, ports) if n.index >= count]
    if extra:
        _remove_nodes(lay, extra)
    if not count:
        if extra:
            down(lay, ports)
        return {}
    wanted = nodes(lay, ports, count)
    net = wanted[0].net
    podnet.ensure(net, count, ports.apiserver, ports.dns_address)
    pause = nodeimages.pause_tag()
    started: list[str] = []
    for node in wanted:
        write_configs(node, ports, pause)
        hostfs.ensure_cgroup(f"{node.cgroup}/shims")
        (node.run / "var-log").mkdir(parents=True, exist_ok=True)
        name = node.component("containerd")
        if processes.read_pid(lay, name, exe="containerd") is None:
            argv = [str(lay.bin / "containerd"), "--config", str(node.conf / "containerd.toml")]
            processes.start(lay, name, argv)
            started.append(name)
        _wait(lay, functools.partial(_unix_socket_ok, node.socket), name, timeout=60)
    images = nodeimages.ensure_images([n.ctr() for n in wanted])
    checks = health_checks(lay, ports, count)
    for node in wanted:
        name = node.component("kubelet")
        if processes.read_pid(lay, name, exe="kubelet") is None:
            hostfs.ensure_shared_mount(node.kubelet_root)
            since = float(int(time.time()))
            pid = processes.start(lay, name, kubelet_argv(node))
            started.append(name)
            _wait_exec(pid, "kubelet", lay.logs / f"{name}.log")
            _wait_registered(lay, node, since, timeout=120)
        _wait(lay, checks[name], name, timeout=60)
        _converge_node(lay, node)
    what = f"started {', '.join(started)}" if started else "already running"
    log(f"real nodes: {count} Ready in {time.monotonic() - t0:.1f}s ({what})")
    return state(lay, ports, count, images)


def _wait_exec(pid: int, exe: str, logfile: Path, timeout: float = 10.0) -> None:
    """Until ``pid`` (unshare, then sh) has exec'd ``exe``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if Path(f"/proc/{pid}/exe").readlink().name == exe:
                return
        except OSError:
            raise DevclusterError(f"{exe} did not start; see {logfile}") from None
        if time.monotonic() > deadline:
            raise DevclusterError(f"{exe} did not start in {timeout:.0f}s; see {logfile}")
        time.sleep(0.05)


def state(lay: Layout, ports: Ports, count: int, images: dict[str, str]) -> dict[str, Any]:
    net = podnet.PodNetwork(ports.offset)
    return {
        "nodes": [
            {
                "name": n.name,
                "ip": n.ip,
                "kubelet_port": n.port,
                "pod_range": list(net.pod_range(n.index)),
                "containerd_socket": str(n.socket),
                "ctr": n.ctr(),
                "cgroup": n.cgroup,
            }
            for n in nodes(lay, ports, count)
        ],
        "label": {LABEL: "true"},
        "taint": TAINT,
        "placement": placement(),
        "extended_resources": EXTENDED_RESOURCES,
        "bridge": net.bridge,
        "subnet": net.subnet,
        "dns_address": net.gateway,
        "images": images,
    }


def _stop_tasks(node: RealNode) -> None:
    """Ask containerd to kill and delete every task: runc removes the containers' cgroups and
    the shims unmount their root filesystems and exit. Best effort; down sweeps after it."""
    listed = subprocess.run(
        [*node.ctr(), "tasks", "ls", "--quiet"],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    for task in listed.stdout.split() if listed.returncode == 0 else []:
        subprocess.run(
            [*node.ctr(), "tasks", "rm", "--force", task],
            capture_output=True,
            check=False,
            timeout=30,
        )


def _down_nodes(lay: Layout, gone: list[RealNode]) -> None:
    for node in gone:
        processes.stop(lay, node.component("kubelet"), exe="kubelet")
    for node in gone:
        if processes.read_pid(lay, node.component("containerd"), exe="containerd") is not None:
            _stop_tasks(node)
        processes.stop(lay, node.component("containerd"), exe="containerd")
    for node in gone:
        killed = hostfs.kill_cgroup(node.cgroup)
        unmounted = hostfs.unmount_all(node.run, node.conf)
        hostfs.remove_cgroup(node.cgroup)
        subprocess.run(["rm", "-rf", "--one-file-system", str(node.run)], check=True)
        if killed or unmounted:
            log(f"{node.name}: {killed} leftover processes killed, {unmounted} mounts removed")


def _remove_nodes(lay: Layout, gone: list[RealNode]) -> None:
    """Nodes no longer wanted: down, their Node objects and their images deleted."""
    _down_nodes(lay, gone)
    for node in gone:
        kubectl(lay, "delete", "node", node.name, "--ignore-not-found")
        subprocess.run(["rm", "-rf", "--one-file-system", str(node.conf)], check=True)
        log(f"{node.name}: removed")


def down(lay: Layout, ports: Ports) -> None:
    """Stop every real node and remove what ``up`` put on the host: processes (by pid file and
    by cgroup), mounts, cgroups, the bridge and our iptables chains, the run folder. The Node
    objects and containerd's images stay for the next ``up``."""
    _down_nodes(lay, _existing_nodes(lay, ports))
    offset = ports.offset
    top = f"/k8smpi-{offset}"
    hostfs.kill_cgroup(top)
    hostfs.remove_cgroup(top)
    podnet.remove(podnet.PodNetwork(offset))
    hostfs.unmount_all(run_root(offset))
    subprocess.run(["rm", "-rf", "--one-file-system", str(run_root(offset))], check=True)


def status_rows(lay: Layout, ports: Ports, count: int) -> list[tuple[str, bool, int | None, int]]:
    """(component, healthy, pid, resident KiB) for each real-node process, and one row per
    node for its shims (pid: how many)."""
    checks = health_checks(lay, ports, count)
    rows: list[tuple[str, bool, int | None, int]] = []
    for node in nodes(lay, ports, count):
        for exe in ("containerd", "kubelet"):
            name = node.component(exe)
            pid = processes.read_pid(lay, name, exe=exe)
            ok = pid is not None and bool(checks[name]())
            rows.append((name, ok, pid, processes.rss_kib(pid) if pid else 0))
        shims = hostfs.cgroup_pids(f"{node.cgroup}/shims")
        rss = sum(processes.rss_kib(p) for p in shims)
        rows.append((f"shims.{node.name}", True, len(shims), rss))
    return rows
