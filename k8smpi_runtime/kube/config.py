"""Where the API server and credentials come from: one function, :func:`load`.

Precedence, first match wins:

1. an explicit kubeconfig path (``--kubeconfig``) -- with ``--context`` if given;
2. ``$KUBECONFIG`` (a ``:``-separated list, merged as kubectl merges it: the first file that
   defines a name wins);
3. in-cluster: ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT`` with the service-account
   token, CA and namespace files (the token is re-read on every start: bound tokens rotate);
4. ``~/.kube/config``.

An explicit ``--context`` without a kubeconfig path skips the in-cluster step. The namespace is
the caller's explicit one, else the in-cluster namespace file (in-cluster only), else the
context's namespace, else ``default``.

Kubeconfig users may authenticate with a client certificate (file or data), a token (inline or
``tokenFile``) or an exec plugin (``client.authentication.k8s.io`` ExecCredential); the legacy
``auth-provider`` and basic auth are refused with a message saying so.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from k8smpi_runtime.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

#: The kubelet mounts the service account here; K8SMPI_SERVICEACCOUNT_DIR overrides it (tests,
#: and the demo, which runs the launcher's script on the host as if it were the launcher pod).
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@dataclass(frozen=True)
class ClientConfig:
    """Everything needed to open a connection to the API server as someone."""

    server: str
    namespace: str
    source: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_pem: bytes | None = field(default=None, repr=False)
    key_pem: bytes | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    insecure: bool = False
    tls_server_name: str | None = None

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(
            cafile=self.ca_file, cadata=self.ca_data.decode() if self.ca_data else None
        )
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_pem and self.key_pem:
            _load_cert_chain(ctx, self.cert_pem, self.key_pem)
        return ctx

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    # The ssl module only loads key pairs from files: a private file, deleted at once.
    shm = "/dev/shm" if Path("/dev/shm").is_dir() else None  # noqa: S108 - private 0600 file
    import tempfile  # noqa: PLC0415 - only client-certificate users pay for it (kubexec startup)

    fd, name = tempfile.mkstemp(prefix="k8smpi-", suffix=".pem", dir=shm)
    try:
        os.write(fd, cert + b"\n" + key)
        os.close(fd)
        ctx.load_cert_chain(name)
    except ssl.SSLError as e:
        raise ConfigError(f"client certificate or key is not valid PEM: {e}") from e
    finally:
        Path(name).unlink(missing_ok=True)


def load(
    *,
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    env: Mapping[str, str] | None = None,
) -> ClientConfig:
    """The client configuration, found by the precedence in this module's docstring."""
    env = os.environ if env is None else env
    if kubeconfig:
        return _from_kubeconfig([Path(kubeconfig).expanduser()], context, namespace, env)
    if env.get("KUBECONFIG"):
        paths = [Path(p).expanduser() for p in env["KUBECONFIG"].split(os.pathsep) if p]
        return _from_kubeconfig(paths, context, namespace, env)
    if context is None and env.get("KUBERNETES_SERVICE_HOST"):
        return _in_cluster(namespace, env)
    default = Path(env.get("HOME", str(Path.home()))) / ".kube" / "config"
    if default.exists():
        return _from_kubeconfig([default], context, namespace, env)
    raise ConfigError(
        "no Kubernetes credentials: not in a pod (KUBERNETES_SERVICE_HOST unset), "
        "no KUBECONFIG and no ~/.kube/config"
    )


def in_cluster_namespace(env: Mapping[str, str] | None = None) -> str | None:
    """The pod's own namespace when running in a pod, else None."""
    env = os.environ if env is None else env
    if not env.get("KUBERNETES_SERVICE_HOST"):
        return None
    path = Path(env.get("K8SMPI_SERVICEACCOUNT_DIR", SERVICEACCOUNT_DIR)) / "namespace"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _in_cluster(namespace: str | None, env: Mapping[str, str]) -> ClientConfig:
    sa = Path(env.get("K8SMPI_SERVICEACCOUNT_DIR", SERVICEACCOUNT_DIR))
    host = env["KUBERNETES_SERVICE_HOST"]
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    try:
        token = (sa / "token").read_text().strip()
    except OSError as e:
        raise ConfigError(f"in a pod but cannot read the service-account token: {e}") from e
    if not token:
        raise ConfigError(f"service-account token {sa / 'token'} is empty")
    ca = sa / "ca.crt"
    if not ca.exists():
        raise ConfigError(f"in a pod but the service-account CA {ca} is missing")
    host = f"[{host}]" if ":" in host else host
    return ClientConfig(
        server=f"https://{host}:{port}",
        namespace=namespace or in_cluster_namespace(env) or "default",
        source=f"in-cluster service account ({sa})",
        ca_file=str(ca),
        token=token,
    )


def _read_kubeconfigs(paths: list[Path]) -> dict[str, Any]:
    """Merge kubeconfig files as kubectl does: the first definition of each name wins."""
    import yaml  # noqa: PLC0415 - only kubeconfig users pay for the YAML parser

    merged: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}, "current-context": None}
    found = False
    for path in paths:
        try:
            text = path.read_text()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ConfigError(f"cannot read kubeconfig {path}: {e}") from e
        found = True
        try:
            doc = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"kubeconfig {path} is not valid YAML: {e}") from e
        if not isinstance(doc, dict):
            raise ConfigError(f"kubeconfig {path} is not a mapping")
        for kind, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for item in doc.get(kind) or []:
                if isinstance(item, dict) and "name" in item:
                    entry = dict(item.get(key) or {})
                    entry["_dir"] = str(path.parent)
                    merged[kind].setdefault(item["name"], entry)
        merged["current-context"] = merged["current-context"] or doc.get("current-context")
    if not found:
        raise ConfigError(f"kubeconfig not found: {':'.join(map(str, paths))}")
    return merged


def _from_kubeconfig(
    paths: list[Path], context: str | None, namespace: str | None, env: Mapping[str, str]
) -> ClientConfig:
    cfg = _read_kubeconfigs(paths)
    ctx_name = context or cfg["current-context"]
    if not ctx_name:
        raise ConfigError(f"kubeconfig {paths[0]} has no current-context; pass --context")
    ctx = cfg["contexts"].get(ctx_name)
    if ctx is None:
        raise ConfigError(f"context {ctx_name!r} not found in kubeconfig {paths[0]}")
    cluster = cfg["clusters"].get(ctx.get("cluster"))
    if cluster is None or not cluster.get("server"):
        raise ConfigError(f"context {ctx_name!r} names no cluster with a server")
    user = cfg["users"].get(ctx.get("user"), {})
    cert, key, token = _user_credentials(user, env)
    return ClientConfig(
        server=str(cluster["server"]).rstrip("/"),
        namespace=namespace or ctx.get("namespace") or "default",
        source=f"kubeconfig {paths[0]} context {ctx_name}",
        ca_file=_path(cluster, "certificate-authority"),
        ca_data=_data(cluster, "certificate-authority-data"),
        cert_pem=cert,
        key_pem=key,
        token=token,
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
        tls_server_name=cluster.get("tls-server-name"),
    )


def _path(entry: dict[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if not value:
        return None
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else Path(entry["_dir"]) / p)


def _data(entry: dict[str, Any], key: str) -> bytes | None:
    value = entry.get(key)
    if not value:
        return None
    try:
        return base64.b64decode(value)
    except ValueError as e:
        raise ConfigError(f"kubeconfig field {key} is not base64") from e


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e}") from e


def _user_credentials(
    user: dict[str, Any], env: Mapping[str, str]
) -> tuple[bytes | None, bytes | None, str | None]:
    if user.get("auth-provider"):
        raise ConfigError(
            "kubeconfig user uses the removed auth-provider mechanism; use an exec plugin"
        )
    if user.get("username") or user.get("password"):
        raise ConfigError("kubeconfig basic auth (username/password) is not supported")
    cert = _data(user, "client-certificate-data") or _read(_path(user, "client-certificate"))
    key = _data(user, "client-key-data") or _read(_path(user, "client-key"))
    token = user.get("token")
    if not token and user.get("tokenFile"):
        token = (_read(_path(user, "tokenFile")) or b"").decode().strip()
    if user.get("exec"):
        exec_cert, exec_key, exec_token = _exec_plugin(user["exec"], env)
        cert, key, token = exec_cert or cert, exec_key or key, exec_token or token
    return cert, key, token


def _exec_plugin(
    spec: dict[str, Any], env: Mapping[str, str]
) -> tuple[bytes | None, bytes | None, str | None]:
    """Run a client-go credential plugin and take the ExecCredential it prints."""
    command = spec.get("command")
    if not command:
        raise ConfigError("kubeconfig exec plugin has no command")
    api_version = spec.get("apiVersion", "client.authentication.k8s.io/v1")
    child_env = dict(env)
    for item in spec.get("env") or []:
        child_env[str(item["name"])] = str(item["value"])
    child_env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": {"interactive": False}}
    )
    import subprocess  # noqa: PLC0415 - only exec-plugin users pay for it (kubexec startup)

    try:
        proc = subprocess.run(
            [command, *(spec.get("args") or [])],
            env=child_env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"kubeconfig exec plugin {command!r} could not run: {e}") from e
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise ConfigError(
            f"kubeconfig exec plugin {command!r} exited {proc.returncode}: {err[-1] if err else ''}"
        )
    try:
        status = json.loads(proc.stdout)["status"]
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"kubeconfig exec plugin {command!r} printed no ExecCredential") from e
    cert = status.get("clientCertificateData")
    key = status.get("clientKeyData")
    return (
        cert.encode() if cert else None,
        key.encode() if key else None,
        status.get("token"),
    )
