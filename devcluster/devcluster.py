#!/usr/bin/env python3
"""devcluster: a real Kubernetes control plane on one machine, for tests and the demo.

Upstream etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok (simulated nodes
and pods) and CoreDNS (pod DNS for headless Services), built by ``devcluster/build.sh`` from
the pinned versions in ``devcluster/versions.env``; and podexec (``gobuild/podexec``), the
simulated nodes' kubelet exec endpoint, which runs pods/exec commands on this machine as a
container runtime would (see its doc comment for why not kwok's own).

Commands (``make devcluster`` / ``make devcluster-down`` call the first two):

``up``     build if needed, start what is not running, wait until healthy, write
           ``.devcluster/kubeconfig`` and print ``export KUBECONFIG=...``. Idempotent.
``down``   stop every process ``up`` started, by the pids it recorded, and their process groups.
``status`` print each component and whether it runs; exit 1 if any does not.
``restart NAME...``  stop those components, then ``up`` (e.g. an apiserver restart mid-test).
``clean``  ``down`` and remove ``.devcluster/``.

Everything listens on loopback only. Exit codes: 0 ok, 1 a component failed (its log is named),
2 bad usage. Standard library only, so it runs before the project's venv exists.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class DevclusterError(Exception):
    """A known failure: printed as one line, exit 1."""


@dataclass(frozen=True)
class Ports:
    """Loopback endpoints. Non-default ports so a real cluster's components are not disturbed."""

    etcd_client: int = 23790
    etcd_peer: int = 23800
    apiserver: int = 16443
    controller_manager: int = 10257
    scheduler: int = 10259
    kwok: int = 10247
    # The simulated nodes' kubelet port (their status.daemonEndpoints): podexec.
    kubelet: int = 11250
    coredns_ready: int = 18181
    # glibc's resolver always asks port 53, so CoreDNS gets a loopback address of its own.
    dns_address: str = "127.0.83.1"

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Ports:
        """``DEVCLUSTER_PORT_OFFSET=N`` moves every endpoint, so two checkouts can each run one."""
        raw = (os.environ if env is None else env).get("DEVCLUSTER_PORT_OFFSET", "0")
        try:
            offset = int(raw)
        except ValueError:
            raise DevclusterError(f"DEVCLUSTER_PORT_OFFSET must be an integer: {raw!r}") from None
        if not 0 <= offset < 250:
            raise DevclusterError("DEVCLUSTER_PORT_OFFSET must be in 0..249")
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
        return cls(**ports, dns_address=f"127.0.83.{1 + offset}")


# The seed talk's node (`kubectl describe node`), as capacity and allocatable.
NODE_RESOURCES: dict[str, str] = {
    "cpu": "160",
    "memory": "598005824Ki",
    "ephemeral-storage": "956642692Ki",
    "hugepages-1Gi": "0",
    "hugepages-2Mi": "0",
    "nvidia.com/gpu": "4",
    "rdma/hca": "1k",
    "pods": "500",
}
NODE_PREFIX = "kwok-node-"
NODE_LABEL = "k8smpi.dev/devcluster"
CLUSTER_DOMAIN = "cluster.local"
SERVICE_CIDR = "10.96.0.0/16"
# Pod IPs: the benchmarking range, which nothing here ever dials (execs go apiserver -> kwok).
POD_CIDR = "198.18.0.0/15"
# Written into the `kubernetes` Endpoints only; loopback is rejected there by validation.
ADVERTISE_ADDRESS = "192.0.2.10"
COMPONENTS = (
    "etcd",
    "kube-apiserver",
    "kube-controller-manager",
    "kube-scheduler",
    "kwok",
    "podexec",
    "coredns",
)


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


# ---------------------------------------------------------------------------------------------
# Binaries and certificates


def build_binaries() -> Path:
    """Run build.sh (a no-op when the cached binaries exist) and return their folder."""
    proc = subprocess.run(
        ["bash", str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        raise DevclusterError("building the control-plane binaries failed (output above)")
    return Path(proc.stdout.strip().splitlines()[-1])


def _openssl(*args: str) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise DevclusterError(f"openssl {args[0]} failed: {proc.stderr.strip()[:300]}")


def _issue(pki: Path, name: str, subject: str, *, san: str = "", usage: str = "clientAuth") -> None:
    """An EC P-256 key and a certificate for it, signed by the devcluster CA."""
    key, crt = pki / f"{name}.key", pki / f"{name}.crt"
    if crt.exists() and key.exists():
        return
    csr = pki / f"{name}.csr"
    ext = pki / f"{name}.ext"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if san:
        lines.append(f"subjectAltName={san}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    _openssl(
        "x509",
        "-req",
        "-in",
        str(csr),
        "-CA",
        str(pki / "ca.crt"),
        "-CAkey",
        str(pki / "ca.key"),
        "-CAcreateserial",
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        str(ext),
        "-out",
        str(crt),
    )
    csr.unlink()
    ext.unlink()


def ensure_pki(pki: Path) -> None:
    pki.mkdir(parents=True, exist_ok=True)
    pki.chmod(0o700)
    if not (pki / "ca.crt").exists():
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(pki / "ca.key"))
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            str(pki / "ca.key"),
            "-subj",
            "/CN=k8smpi-devcluster-ca",
            "-days",
            "3650",
            "-sha256",
            "-out",
            str(pki / "ca.crt"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        )
    apiserver_san = ",".join(
        [
            "IP:127.0.0.1",
            "IP:10.96.0.1",
            "DNS:localhost",
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            f"DNS:kubernetes.default.svc.{CLUSTER_DOMAIN}",
        ]
    )
    _issue(pki, "apiserver", "/CN=kube-apiserver", san=apiserver_san, usage="serverAuth")
    _issue(
        pki, "kubelet-serving", "/CN=kubelet", san="IP:127.0.0.1,DNS:localhost", usage="serverAuth"
    )
    _issue(pki, "admin", "/O=system:masters/CN=kubernetes-admin")
    _issue(pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client")
    _issue(pki, "kube-controller-manager", "/CN=system:kube-controller-manager")
    _issue(pki, "kube-scheduler", "/CN=system:kube-scheduler")
    # kwok writes node and pod status for every simulated node; CoreDNS reads Services,
    # EndpointSlices and Namespaces. Both are dev-only infrastructure: cluster admin is fine.
    _issue(pki, "kwok", "/O=system:masters/CN=kwok-controller")
    _issue(pki, "coredns", "/O=system:masters/CN=coredns")
    # podexec reads any pod and mints its service-account token, as a kubelet would.
    _issue(pki, "podexec", "/O=system:masters/CN=podexec")
    if not (pki / "sa.key").exists():
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))


def kubeconfig_text(server: str, pki: Path, user: str) -> str:
    """A self-contained kubeconfig (data embedded), JSON being valid YAML."""

    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "devcluster",
                "cluster": {"server": server, "certificate-authority-data": b64(pki / "ca.crt")},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": b64(pki / f"{user}.crt"),
                    "client-key-data": b64(pki / f"{user}.key"),
                },
            }
        ],
        "contexts": [
            {
                "name": "devcluster",
                "context": {"cluster": "devcluster", "user": user, "namespace": "default"},
            }
        ],
        "current-context": "devcluster",
    }
    return json.dumps(cfg, indent=2) + "\n"


# ---------------------------------------------------------------------------------------------
# Configuration files


AUDIT_POLICY = """\
# Metadata for what the tests count (execs per pod, pod list/watch/get, ConfigMaps); nothing else.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  resources:
  - group: ""
    resources: ["pods", "pods/exec", "pods/attach", "configmaps", "serviceaccounts/token"]
- level: None
"""

# kwok's controller takes its stages from its config: these move nodes to Ready (keeping the
# capacity we create them with, pointing the kubelet endpoint at kwok's server) and pods to
# Running/Ready with an IP. Pods stay Running until deleted; nothing completes on its own, so a
# Job's pods behave like real long-running work.
KWOK_CONFIG = """\
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokConfiguration
options:
  cidr: {pod_cidr}
  nodeIP: 127.0.0.1
  # What nodes advertise as their kubelet port: podexec serves exec there.
  nodePort: {kubelet_port}
  # kwok's controller binary has no defaults for these (kwokctl writes them).
  podPlayStageParallelism: 4
  nodePlayStageParallelism: 4
  nodeLeaseParallelism: 4
  podsOnNodeSyncParallelism: 4
  nodeLeaseDurationSeconds: 40
  # podexec serves exec; kwok's own handler loses exit codes and stdin EOF.
  enableDebuggingHandlers: false
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef: {{apiGroup: v1, kind: Node}}
  selector:
    matchExpressions:
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      {{{{ range NodeConditions }}}}
      - lastHeartbeatTime: {{{{ $now | Quote }}}}
        lastTransitionTime: {{{{ $now | Quote }}}}
        message: {{{{ .message | Quote }}}}
        reason: {{{{ .reason | Quote }}}}
        status: {{{{ .status | Quote }}}}
        type: {{{{ .type | Quote }}}}
      {{{{ end }}}}
      addresses:
      - address: {{{{ NodeIP | Quote }}}}
        type: InternalIP
      daemonEndpoints:
        kubeletEndpoint:
          Port: {{{{ NodePort }}}}
      allocatable:
      {{{{ YAML .status.allocatable 1 }}}}
      capacity:
      {{{{ YAML .status.capacity 1 }}}}
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: {{{{ printf "kwok-%s" Version | Quote }}}}
        containerRuntimeVersion: {{{{ printf "kwok-%s" Version | Quote }}}}
        kernelVersion: {{{{ printf "kwok-%s" Version | Quote }}}}
        kubeProxyVersion: {{{{ printf "kwok-%s" Version | Quote }}}}
      phase: Running
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-ready
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: DoesNotExist
    - key: '.status.phase'
      operator: In
      values: ['Pending']
    - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
      operator: NotIn
      values: ['True']
  next:
    statusTemplate: |
      {{{{ $now := Now }}}}
      conditions:
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: PodScheduled}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: Initialized}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: ContainersReady}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: Ready}}
      {{{{ range .spec.readinessGates }}}}
      - {{lastTransitionTime: {{{{ $now | Quote }}}}, status: "True", type: {{{{ .conditionType | Quote }}}}}}
      {{{{ end }}}}
      containerStatuses:
      {{{{ range .spec.containers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        started: true
        restartCount: 0
        state:
          running:
            startedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      initContainerStatuses:
      {{{{ range .spec.initContainers }}}}
      - image: {{{{ .image | Quote }}}}
        name: {{{{ .name | Quote }}}}
        ready: true
        restartCount: 0
        state:
          terminated:
            exitCode: 0
            reason: Completed
            startedAt: {{{{ $now | Quote }}}}
            finishedAt: {{{{ $now | Quote }}}}
      {{{{ end }}}}
      {{{{ with NodeIPsWith .spec.nodeName }}}}
      hostIP: {{{{ index . 0 | Quote }}}}
      hostIPs:
      {{{{ range . }}}}
      - ip: {{{{ . | Quote }}}}
      {{{{ end }}}}
      {{{{ end }}}}
      {{{{ with PodIPsWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) }}}}
      podIP: {{{{ index . 0 | Quote }}}}
      podIPs:
      {{{{ range . }}}}
      - ip: {{{{ . | Quote }}}}
      {{{{ end }}}}
      {{{{ end }}}}
      phase: Running
      startTime: {{{{ $now | Quote }}}}
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-delete
spec:
  resourceRef: {{apiGroup: v1, kind: Pod}}
  selector:
    matchExpressions:
    - key: '.metadata.deletionTimestamp'
      operator: Exists
  next:
    finalizers:
      empty: true
    delete: true
"""

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
    server = f"https://127.0.0.1:{ports.apiserver}"
    write_atomic(lay.kubeconfig, kubeconfig_text(server, lay.pki, "admin"), 0o600)
    for user in ("kube-controller-manager", "kube-scheduler", "kwok", "coredns"):
        write_atomic(lay.component_kubeconfig(user), kubeconfig_text(server, lay.pki, user), 0o600)
    write_atomic(lay.root / "audit-policy.yaml", AUDIT_POLICY)
    write_atomic(
        lay.root / "kwok.yaml", KWOK_CONFIG.format(pod_cidr=POD_CIDR, kubelet_port=ports.kubelet)
    )
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
    pki = lay.pki

    def with_kc(name: str) -> list[str]:
        kc = lay.component_kubeconfig(name)
        return [
            f"--kubeconfig={kc}",
            f"--authentication-kubeconfig={kc}",
            f"--authorization-kubeconfig={kc}",
        ]

    return {
        "etcd": [
            str(bin_dir / "etcd"),
            "--name=devcluster",
            f"--data-dir={lay.root / 'etcd-data'}",
            f"--listen-client-urls=http://127.0.0.1:{ports.etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{ports.etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{ports.etcd_peer}",
            f"--initial-cluster=devcluster=http://127.0.0.1:{ports.etcd_peer}",
            "--quota-backend-bytes=4294967296",
            # One machine, tests only: fewer fsyncs keep a 2-core box responsive.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers=http://127.0.0.1:{ports.etcd_client}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.apiserver}",
            f"--advertise-address={ADVERTISE_ADDRESS}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
            "--authorization-mode=Node,RBAC",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}",
            "--kubelet-preferred-address-types=InternalIP",
            f"--audit-policy-file={lay.root / 'audit-policy.yaml'}",
            f"--audit-log-path={lay.audit_log}",
            "--audit-log-maxsize=200",
            "--audit-log-maxbackup=2",
            "--allow-privileged=true",
            "--profiling=false",
            "--v=1",
        ],
        "kube-controller-manager": [
            str(bin_dir / "kube-controller-manager"),
            *with_kc("kube-controller-manager"),
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.controller_manager}",
            "--leader-elect=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            "--use-service-account-credentials=true",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--cluster-name=devcluster",
            "--v=1",
        ],
        "kube-scheduler": [
            str(bin_dir / "kube-scheduler"),
            *with_kc("kube-scheduler"),
            "--bind-address=127.0.0.1",
            f"--secure-port={ports.scheduler}",
            "--leader-elect=false",
            "--v=1",
        ],
        "kwok": [
            str(bin_dir / "kwok"),
            f"--kubeconfig={lay.component_kubeconfig('kwok')}",
            f"--config={lay.root / 'kwok.yaml'}",
            "--manage-all-nodes=true",
            "--node-ip=127.0.0.1",
            f"--node-port={ports.kubelet}",
            f"--server-address=127.0.0.1:{ports.kwok}",
        ],
        "podexec": [
            str(bin_dir / "podexec"),
            "serve",
            f"--listen=127.0.0.1:{ports.kubelet}",
            f"--tls-cert-file={pki / 'kubelet-serving.crt'}",
            f"--tls-private-key-file={pki / 'kubelet-serving.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--apiserver=https://127.0.0.1:{ports.apiserver}",
            f"--api-client-cert={pki / 'podexec.crt'}",
            f"--api-client-key={pki / 'podexec.key'}",
            f"--state-dir={lay.root / 'pods'}",
            f"--dns-address={ports.dns_address}",
            f"--cluster-domain={CLUSTER_DOMAIN}",
            "--service-host=127.0.0.1",
            f"--service-port={ports.apiserver}",
        ],
        "coredns": [str(bin_dir / "coredns"), "-conf", str(lay.root / "Corefile")],
    }


# ---------------------------------------------------------------------------------------------
# Processes


def read_pid(lay: Layout, name: str) -> int | None:
    """The recorded pid, if that process is still the one we started (not a reused pid)."""
    try:
        pid = int(lay.pidfile(name).read_text().strip())
        exe = Path(f"/proc/{pid}/exe").readlink()
    except (OSError, ValueError):
        return None
    return pid if exe.name.removesuffix(" (deleted)") == name else None


def start(lay: Layout, name: str, argv: list[str]) -> int:
    lay.logs.mkdir(parents=True, exist_ok=True)
    lay.run.mkdir(parents=True, exist_ok=True)
    with (lay.logs / f"{name}.log").open("ab") as out:
        # A session of its own: the component outlives `make`, and `down` can stop it together
        # with anything it started (kwok's execs) through its process group.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=lay.root,
        )
    write_atomic(lay.pidfile(name), f"{proc.pid}\n")
    return proc.pid


def stop(lay: Layout, name: str, timeout: float = 15.0) -> None:
    pid = read_pid(lay, name)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _group_alive(pid):
            time.sleep(0.05)
        if _group_alive(pid):
            raise DevclusterError(f"{name} (process group {pid}) did not stop")
        log(f"stopped {name} (pid {pid})")
    lay.pidfile(name).unlink(missing_ok=True)


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Health


def _https_ok(lay: Layout, url: str) -> bool:
    ctx = ssl.create_default_context(cafile=str(lay.pki / "ca.crt"))
    ctx.load_cert_chain(str(lay.pki / "admin.crt"), str(lay.pki / "admin.key"))
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=3) as resp:  # noqa: S310 - our https URL
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as resp:  # noqa: S310 - our loopback URL
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def healthy(lay: Layout, ports: Ports, name: str) -> bool:
    checks: dict[str, Callable[[], bool]] = {
        "etcd": lambda: _http_ok(f"http://127.0.0.1:{ports.etcd_client}/health"),
        "kube-apiserver": lambda: _https_ok(lay, f"https://127.0.0.1:{ports.apiserver}/readyz"),
        "kube-controller-manager": lambda: _tcp_open(ports.controller_manager),
        "kube-scheduler": lambda: _tcp_open(ports.scheduler),
        "kwok": lambda: _tcp_open(ports.kwok),
        "podexec": lambda: _tcp_open(ports.kubelet),
        "coredns": lambda: _http_ok(f"http://127.0.0.1:{ports.coredns_ready}/ready"),
    }
    return checks[name]()


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_healthy(lay: Layout, ports: Ports, name: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(lay, ports, name):
            return
        if read_pid(lay, name) is None:
            raise DevclusterError(f"{name} exited; see {lay.logs / (name + '.log')}")
        time.sleep(0.2)
    raise DevclusterError(
        f"{name} not healthy after {timeout:.0f}s; see {lay.logs / (name + '.log')}"
    )


def kubectl(lay: Layout, *args: str, stdin: str | None = None) -> str:
    proc = subprocess.run(
        [str(lay.bin / "kubectl"), f"--kubeconfig={lay.kubeconfig}", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if proc.returncode != 0:
        raise DevclusterError(f"kubectl {' '.join(args[:3])} failed: {proc.stderr.strip()[:400]}")
    return proc.stdout


def node_manifest(i: int) -> dict[str, object]:
    name = f"{NODE_PREFIX}{i}"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                NODE_LABEL: "true",
                "type": "kwok",
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "node-role.kubernetes.io/worker": "",
                "nvidia.com/gpu.present": "true",
                "topology.kubernetes.io/zone": f"zone-{i % 2}",
            },
        },
        "spec": {},
        "status": {"capacity": NODE_RESOURCES, "allocatable": NODE_RESOURCES},
    }


def ensure_nodes(lay: Layout, count: int, kubelet_port: int) -> None:
    """Exactly ``count`` simulated nodes, each advertising podexec as its kubelet."""
    nodes = json.loads(kubectl(lay, "get", "nodes", "-l", NODE_LABEL, "-o", "json"))["items"]
    existing = {n["metadata"]["name"] for n in nodes}
    # A node initialised by an older configuration points the apiserver elsewhere for exec.
    stale = {
        n["metadata"]["name"]
        for n in nodes
        if n.get("status", {}).get("daemonEndpoints", {}).get("kubeletEndpoint", {}).get("Port")
        not in (None, kubelet_port)
    }
    want = {f"{NODE_PREFIX}{i}" for i in range(count)}
    extra = sorted((existing - want) | stale)
    if extra:
        kubectl(lay, "delete", "--wait=true", *(f"node/{n}" for n in extra))
    missing = sorted((want - existing) | (stale & want))
    for chunk in range(0, len(missing), 200):
        items = [node_manifest(int(n.rsplit("-", 1)[1])) for n in missing[chunk : chunk + 200]]
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        kubectl(lay, "create", "-f", "-", stdin=doc)
    if missing or extra:
        log(f"nodes: {len(missing)} created, {len(extra)} deleted, {count} wanted")


def wait_cluster_ready(lay: Layout, count: int, timeout: float) -> None:
    """Nodes Ready and the default ServiceAccount present (pods are refused without it)."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        try:
            nodes = json.loads(kubectl(lay, "get", "nodes", "-l", NODE_LABEL, "-o", "json"))
            ready = sum(
                1
                for n in nodes["items"]
                if any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in n.get("status", {}).get("conditions", [])
                )
            )
            kubectl(lay, "get", "serviceaccount", "default", "-n", "default")
            if ready >= count:
                return
            last = f"{ready}/{count} nodes Ready"
        except DevclusterError as e:
            last = str(e)
        time.sleep(0.5)
    raise DevclusterError(f"cluster not ready after {timeout:.0f}s: {last}")


# ---------------------------------------------------------------------------------------------
# Commands


def cmd_up(lay: Layout, ports: Ports, nodes: int) -> int:
    t0 = time.monotonic()
    bin_dir = build_binaries()
    lay.root.mkdir(parents=True, exist_ok=True)
    if lay.bin.is_symlink() or lay.bin.exists():
        lay.bin.unlink()
    lay.bin.symlink_to(bin_dir)
    ensure_pki(lay.pki)
    write_configs(lay, ports)
    argv = command_lines(lay, bin_dir, ports)
    started = []
    for name in COMPONENTS:
        if read_pid(lay, name) is None:
            start(lay, name, argv[name])
            started.append(name)
        # The next component needs this one; the others need the apiserver only.
        if name in ("etcd", "kube-apiserver"):
            wait_healthy(lay, ports, name, timeout=90)
    for name in COMPONENTS:
        wait_healthy(lay, ports, name, timeout=90)
    ensure_nodes(lay, nodes, ports.kubelet)
    wait_cluster_ready(lay, nodes, timeout=120)
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
        "node_resources": NODE_RESOURCES,
        "pids": {n: read_pid(lay, n) for n in COMPONENTS},
    }
    write_atomic(lay.root / "state.json", json.dumps(state, indent=2) + "\n")
    what = f"started {', '.join(started)}" if started else "already running"
    log(f"healthy in {time.monotonic() - t0:.1f}s ({what}; {nodes} nodes)")
    print(f"export KUBECONFIG={lay.kubeconfig}")
    return EXIT_OK


def cmd_down(lay: Layout) -> int:
    for name in reversed(COMPONENTS):
        stop(lay, name)
    return EXIT_OK


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmd_status(lay: Layout, ports: Ports) -> int:
    """One line per component with its pid and resident memory; exit 1 if any is down."""
    bad = 0
    total = 0
    for name in COMPONENTS:
        pid = read_pid(lay, name)
        ok = pid is not None and healthy(lay, ports, name)
        bad += not ok
        rss = _rss_kib(pid) if pid else 0
        total += rss
        state = "running" if ok else "down"
        print(f"{name:24} {state:8} pid {pid or '-':>7}  rss {rss / 1024:7.1f} MiB")
    print(f"{'total':24} {'':8} {'':11}  rss {total / 1024:7.1f} MiB")
    return EXIT_OK if bad == 0 else EXIT_FAILED


def cmd_clean(lay: Layout) -> int:
    cmd_down(lay)
    if lay.root.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(lay.root)], check=True)
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devcluster", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "restart", "clean"])
    parser.add_argument("components", nargs="*", help="with restart: which components")
    parser.add_argument(
        "--nodes",
        type=int,
        default=int(os.environ.get("DEVCLUSTER_NODES", "4")),
        help="simulated nodes (default 4, or DEVCLUSTER_NODES)",
    )
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be >= 1")
    lay = default_layout()
    try:
        ports = Ports.from_env()
        if args.command == "up":
            return cmd_up(lay, ports, args.nodes)
        if args.command == "down":
            return cmd_down(lay)
        if args.command == "status":
            return cmd_status(lay, ports)
        if args.command == "restart":
            unknown = set(args.components) - set(COMPONENTS)
            if unknown or not args.components:
                parser.error(f"restart takes components from: {', '.join(COMPONENTS)}")
            for name in args.components:
                stop(lay, name)
            return cmd_up(lay, ports, args.nodes)
        return cmd_clean(lay)
    except DevclusterError as e:
        print(f"devcluster: error: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
