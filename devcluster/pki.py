"""The devcluster's certificate authority, component certificates and kubeconfigs (openssl)."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import TYPE_CHECKING

from devcluster.layout import CLUSTER_DOMAIN, DevclusterError

if TYPE_CHECKING:
    from pathlib import Path


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
