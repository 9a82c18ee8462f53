"""A throwaway CA with a server certificate (localhost, kube.test, 127.0.0.1) and a client
certificate, made once per test session with the openssl command line."""

from __future__ import annotations

import atexit
import functools
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    folder: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def _issue(folder: Path, name: str, subject: str, ext: str) -> None:
    key, csr, crt = (folder / f"{name}.{s}" for s in ("key", "csr", "crt"))
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(key))
    _openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr))
    (folder / f"{name}.ext").write_text(ext)
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(folder / "ca.crt"),
        "-CAkey", str(folder / "ca.key"), "-CAcreateserial", "-days", "2",
        "-extfile", str(folder / f"{name}.ext"), "-out", str(crt),
    )  # fmt: skip


@functools.cache
def pki() -> Pki:
    folder = Path(tempfile.mkdtemp(prefix="k8smpi-pki-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", str(folder / "ca.key"))
    _openssl(
        "req", "-x509", "-new", "-key", str(folder / "ca.key"), "-subj", "/CN=test-ca",
        "-days", "2", "-out", str(folder / "ca.crt"),
    )  # fmt: skip
    _issue(
        folder,
        "server",
        "/CN=kube.test",
        "subjectAltName=DNS:kube.test,DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    _issue(folder, "client", "/CN=alice/O=team", "extendedKeyUsage=clientAuth\n")
    return Pki(
        folder,
        folder / "ca.crt",
        folder / "server.crt",
        folder / "server.key",
        folder / "client.crt",
        folder / "client.key",
    )
