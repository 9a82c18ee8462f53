"""The control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler.

Upstream binaries built by ``devcluster/build.sh`` from the pinned versions in
``devcluster/versions.env``; the apiserver has RBAC, service-account signing and an audit log
of pods and pods/exec (the tests count execs from it).
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from devcluster import processes
from devcluster.layout import (
    ADVERTISE_ADDRESS,
    CLUSTER_DOMAIN,
    HERE,
    SERVICE_CIDR,
    DevclusterError,
    write_atomic,
)
from devcluster.pki import kubeconfig_text

if TYPE_CHECKING:
    from collections.abc import Callable

    from devcluster.layout import Layout, Ports

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def build_binaries() -> Path:
    """Run build.sh (a no-op when the cached binaries exist) and return their folder."""
    proc = subprocess.run(
        ["bash", str(HERE / "build.sh")], stdout=subprocess.PIPE, text=True, check=False
    )
    if proc.returncode != 0:
        raise DevclusterError("building the control-plane binaries failed (output above)")
    return Path(proc.stdout.strip().splitlines()[-1])


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


def write_configs(lay: Layout, ports: Ports) -> None:
    """The admin kubeconfig, the components' kubeconfigs and the audit policy."""
    server = f"https://127.0.0.1:{ports.apiserver}"
    write_atomic(lay.kubeconfig, kubeconfig_text(server, lay.pki, "admin"), 0o600)
    for user in ("kube-controller-manager", "kube-scheduler", "kwok", "coredns"):
        write_atomic(lay.component_kubeconfig(user), kubeconfig_text(server, lay.pki, user), 0o600)
    write_atomic(lay.root / "audit-policy.yaml", AUDIT_POLICY)


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
    }


def health_checks(lay: Layout, ports: Ports) -> dict[str, Callable[[], bool]]:
    return {
        "etcd": lambda: processes.http_ok(f"http://127.0.0.1:{ports.etcd_client}/health"),
        "kube-apiserver": lambda: processes.https_ok(
            lay, f"https://127.0.0.1:{ports.apiserver}/readyz"
        ),
        "kube-controller-manager": lambda: processes.tcp_open(ports.controller_manager),
        "kube-scheduler": lambda: processes.tcp_open(ports.scheduler),
    }


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
