"""``python3 -m devcluster``: bring the devcluster up, down, or report on it.

Upstream etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (simulated nodes
and pods) and CoreDNS (pod DNS for headless Services), built by ``devcluster/build.sh`` from
the pinned versions in ``devcluster/versions.env``; and podexec (``gobuild/podexec``), the
simulated nodes' kubelet exec endpoint, which runs pods/exec commands on this machine as a
container runtime would (see its doc comment for why not kwok's own). Beside the simulated
nodes, real ones (``realnode.py``): kubelet + containerd + runc, pods from ``make images``' images.

Commands (``make devcluster`` / ``make devcluster-down`` call the first two):

``up``     build if needed, start what is not running, wait until healthy, write
           ``.devcluster/kubeconfig`` and print ``export KUBECONFIG=...``. Idempotent.
           ``--with jobset,kueue`` also runs those controllers (:mod:`devcluster.addons`).
``down``   stop every process ``up`` started, by the pids it recorded, and their process groups;
           remove what the real nodes set up on the host (mounts, cgroups, bridge, chains).
``status`` print each component and whether it runs; exit 1 if any does not.
``restart NAME...``  stop those components, then ``up`` (e.g. an apiserver restart mid-test, or
           ``containerd.real-node-0`` after changing DEVCLUSTER_STREAM_IDLE_TIMEOUT).
           ``--kill``: SIGKILL them (a crash) instead of TERM first (a drain).
``kill NAME...``  SIGKILL those components and leave them down (a crash that lasts: ``up``
           starts them again).
``clean``  ``down`` and remove ``.devcluster/``.

Everything listens on loopback only (the real nodes' kubelets on their bridge address). Exit
codes: 0 ok, 1 a component failed (its log is named), 2 bad usage (an unknown component is
one line on stderr). Standard library only, so it
runs before the project's venv exists.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING

from devcluster import addons, controlplane, dns, kwoknodes, processes, realnode
from devcluster.layout import (
    CLUSTER_DOMAIN,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    DevclusterError,
    Layout,
    Ports,
    default_layout,
    log,
    write_atomic,
)
from devcluster.pki import ensure_pki

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

# Start order: the next component needs the one before only for etcd and the apiserver.
COMPONENTS = (*controlplane.COMPONENTS, *kwoknodes.COMPONENTS, *dns.COMPONENTS)
_MODULES = (controlplane, kwoknodes, dns)


def write_configs(lay: Layout, ports: Ports) -> None:
    for module in _MODULES:
        module.write_configs(lay, ports)


def command_lines(lay: Layout, bin_dir: Path, ports: Ports) -> dict[str, list[str]]:
    argv: dict[str, list[str]] = {}
    for module in _MODULES:
        argv.update(module.command_lines(lay, bin_dir, ports))
    return argv


def health_checks(lay: Layout, ports: Ports) -> dict[str, Callable[[], bool]]:
    checks: dict[str, Callable[[], bool]] = {}
    for module in _MODULES:
        checks.update(module.health_checks(lay, ports))
    return checks


def wait_healthy(lay: Layout, check: Callable[[], bool], name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if processes.read_pid(lay, name) is None:
            raise DevclusterError(f"{name} exited; see {lay.logs / (name + '.log')}")
        time.sleep(0.2)
    raise DevclusterError(
        f"{name} not healthy after {timeout:.0f}s; see {lay.logs / (name + '.log')}"
    )


def cmd_up(
    lay: Layout, ports: Ports, nodes: int, real_nodes: int, with_: tuple[str, ...] = ()
) -> int:
    t0 = time.monotonic()
    bin_dir = controlplane.build_binaries()
    lay.root.mkdir(parents=True, exist_ok=True)
    if lay.bin.is_symlink() or lay.bin.exists():
        lay.bin.unlink()
    lay.bin.symlink_to(bin_dir)
    ensure_pki(lay.pki)
    write_configs(lay, ports)
    argv = command_lines(lay, bin_dir, ports)
    checks = health_checks(lay, ports)
    started = []
    for name in COMPONENTS:
        if processes.read_pid(lay, name) is None:
            processes.start(lay, name, argv[name])
            started.append(name)
        # The next component needs this one; the others need the apiserver only.
        if name in ("etcd", "kube-apiserver"):
            wait_healthy(lay, checks[name], name, timeout=90)
    for name in COMPONENTS:
        wait_healthy(lay, checks[name], name, timeout=90)
    kwoknodes.ensure_nodes(lay, nodes, ports.kubelet)
    kwoknodes.wait_cluster_ready(lay, nodes, timeout=120)
    real = realnode.up(lay, ports, real_nodes)
    state = {
        "kubeconfig": str(lay.kubeconfig),
        "bin": str(bin_dir),
        "server": f"https://127.0.0.1:{ports.apiserver}",
        "ca": str(lay.pki / "ca.crt"),
        "audit_log": str(lay.audit_log),
        "resolv_conf": str(lay.resolv_conf),
        "dns_address": ports.dns_address,
        "cluster_domain": CLUSTER_DOMAIN,
        "nodes": nodes,
        "node_resources": kwoknodes.NODE_RESOURCES,
        "pids": {n: processes.read_pid(lay, n) for n in COMPONENTS},
        # What realnode.state() describes: nodes, label, taint, placement, images, network.
        "real_nodes": real,
    }
    write_atomic(lay.root / "state.json", json.dumps(state, indent=2) + "\n")
    what = f"started {', '.join(started)}" if started else "already running"
    log(f"healthy in {time.monotonic() - t0:.1f}s ({what}; {nodes} nodes, {real_nodes} real)")
    addons.up(
        lay,
        offset=ports.offset,
        server=str(state["server"]),
        nodes=nodes,
        resources=kwoknodes.NODE_RESOURCES,
        names=with_,
    )
    print(f"export KUBECONFIG={lay.kubeconfig}")
    return EXIT_OK


def cmd_down(lay: Layout, ports: Ports) -> int:
    addons.down(lay)
    realnode.down(lay, ports)
    for name in reversed(COMPONENTS):
        processes.stop(lay, name)
    return EXIT_OK


def cmd_status(lay: Layout, ports: Ports, real_nodes: int) -> int:
    """One line per component with its pid and resident memory; exit 1 if any is down.

    The real nodes' rows follow: containerd and kubelet per node, then its containerd shims
    (pid: how many; rss: all of them together).
    """
    bad = 0
    total = 0
    checks = health_checks(lay, ports)
    rows = [
        (name, pid is not None and checks[name](), pid, processes.rss_kib(pid) if pid else 0)
        for name in COMPONENTS
        for pid in [processes.read_pid(lay, name)]
    ]
    # JobSet and Kueue when they were started (not running then is not a failure of the cluster).
    optional = [
        (name, pid is not None, pid, processes.rss_kib(pid) if pid else 0)
        for name, pid in addons.started(lay)
    ]
    for name, ok, pid, rss in [*rows, *realnode.status_rows(lay, ports, real_nodes), *optional]:
        bad += not ok
        total += rss
        state = "running" if ok else "down"
        shown = "-" if pid is None else pid
        print(f"{name:32} {state:8} pid {shown:>7}  rss {rss / 1024:7.1f} MiB")
    print(f"{'total':32} {'':8} {'':11}  rss {total / 1024:7.1f} MiB")
    return EXIT_OK if bad == 0 else EXIT_FAILED


def cmd_clean(lay: Layout, ports: Ports) -> int:
    cmd_down(lay, ports)
    if lay.root.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(lay.root)], check=True)
    return EXIT_OK


def cmd_restart(
    lay: Layout, ports: Ports, args: argparse.Namespace, real_nodes: int, with_: tuple[str, ...]
) -> int:
    """``restart``/``kill`` the named components (``kill``: SIGKILL, nothing started again)."""
    real = realnode.components(lay, ports, real_nodes)
    known = [*COMPONENTS, *real]
    unknown = [n for n in args.components if n not in known]
    if unknown or not args.components:
        what = f"unknown component {unknown[0]!r}" if unknown else "no component named"
        print(
            f"devcluster: error: {args.command}: {what}; one of: {', '.join(known)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    kill = args.kill or args.command == "kill"
    for name in args.components:
        processes.stop(lay, name, exe=real.get(name), kill=kill)
    if args.command == "kill":
        return EXIT_OK
    return cmd_up(lay, ports, args.nodes, real_nodes, with_)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "restart", "kill", "clean"])
    parser.add_argument("components", nargs="*", help="with restart/kill: which components")
    parser.add_argument(
        "--kill",
        action="store_true",
        help="with restart: SIGKILL the components (a crash) rather than TERM them (a drain)",
    )
    parser.add_argument(
        "--with",
        dest="with_",
        default=os.environ.get("DEVCLUSTER_WITH", ""),
        metavar="NAMES",
        help="with up/restart: also run these optional controllers, comma-separated: "
        "jobset, kueue (default $DEVCLUSTER_WITH)",
    )
    parser.add_argument(
        "--nodes",
        type=int,
        default=int(os.environ.get("DEVCLUSTER_NODES", "4")),
        help="simulated nodes (default 4, or DEVCLUSTER_NODES)",
    )
    parser.add_argument(
        "--real-nodes",
        type=int,
        default=None,
        help="real nodes: kubelet + containerd (default 1, or DEVCLUSTER_REAL_NODES; 0: none)",
    )
    # Intermixed: `restart --kill kube-apiserver` as well as `restart kube-apiserver --kill`.
    args = parser.parse_intermixed_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be >= 1")
    lay = default_layout()
    try:
        ports = Ports.from_env()
        real_nodes = realnode.node_count(
            None if args.real_nodes is None else {"DEVCLUSTER_REAL_NODES": str(args.real_nodes)}
        )
        with_ = tuple(n.strip() for n in args.with_.split(",") if n.strip())
        if args.command == "up":
            return cmd_up(lay, ports, args.nodes, real_nodes, with_)
        if args.command == "down":
            return cmd_down(lay, ports)
        if args.command == "status":
            return cmd_status(lay, ports, real_nodes)
        if args.command in ("restart", "kill"):
            return cmd_restart(lay, ports, args, real_nodes, with_)
        return cmd_clean(lay, ports)
    except DevclusterError as e:
        print(f"devcluster: error: {e}", file=sys.stderr)
        return EXIT_FAILED
