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
``tokenFile``, which wins as in client-go) or an exec plugin (``client.authentication.k8s.io``
ExecCredential, :mod:`.credentials`); the legacy ``auth-provider`` and basic auth are refused
with a message saying so.

Read as kubectl reads them:

- ``insecure-skip-tls-verify`` must be a YAML boolean (the string ``"false"`` is an error, as it
  is for kubectl, never "true"), and it cannot be combined with a certificate authority;
- ``certificate-authority-data`` wins over ``certificate-authority`` (and ``client-*-data``
  over the files);
- ``proxy-url`` and ``HTTPS_PROXY``/``NO_PROXY``: :mod:`.proxies`;
- the client key is loaded from memory (an anonymous ``memfd``, or a pipe), never from a file;
- a YAML error names the line and column only: it never shows the file's text (tokens).

This runs at the start of every kubexec call, so it keeps off what costs a call time there
(measured on Python 3.11, 2 cores): ``dataclasses`` (ClientConfig is a Record), ``pathlib``
(os.path), ``urllib.parse`` (:mod:`.urls`), PyYAML for JSON and block-YAML kubeconfigs
(:mod:`.yamlish`), and a second SSL context for the same credentials in one process
(:meth:`ClientConfig.ssl_context` keeps it).
"""

from __future__ import annotations

import base64
import os
import ssl

from k8smpi_runtime.errors import ConfigError
from k8smpi_runtime.kube import credentials, dialing, proxies, urls, yamlish
from k8smpi_runtime.records import Record

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any

#: The kubelet mounts the service account here; K8SMPI_SERVICEACCOUNT_DIR overrides it (tests,
#: and the demo, which runs the launcher's script on the host as if it were the launcher pod).
SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
EXEC_EXTENSION = "client.authentication.k8s.io/exec"


class ClientConfig(Record):
    """Everything needed to open a connection to the API server as someone."""

    server: str
    namespace: str
    source: str
    ca_file: str | None = None
    ca_data: bytes | None = None
    cert_pem: bytes | None = None
    key_pem: bytes | None = None
    token_source: credentials.TokenSource | None = None
    insecure: bool = False
    tls_server_name: str | None = None
    proxy: str | None = None
    """The HTTP proxy to tunnel through (proxy-url or HTTPS_PROXY), None for a direct line."""
    in_cluster: bool = False
    """Credentials from the pod's own service account."""

    def __repr__(self) -> str:
        shown = ("server", "namespace", "source", "ca_file", "insecure", "tls_server_name")
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in shown)
        return f"ClientConfig({fields}, ...)"  # never the key or the token

    @property
    def token(self) -> str | None:
        """The bearer token to send now (token files are re-read, plugin tokens renewed)."""
        return self.token_source.token() if self.token_source is not None else None

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS context for these credentials, made once per process (a call that opens
        several connections, a control master's sessions, reuse it: loading the CA and the key
        pair is most of its cost)."""
        ctx = _CONTEXTS.get(self)
        if ctx is None:
            if len(_CONTEXTS) >= _MAX_CONTEXTS:  # a long-lived master reloads its credentials
                _CONTEXTS.clear()
            ctx = _CONTEXTS[self] = self._new_ssl_context()
        return ctx

    def _new_ssl_context(self) -> ssl.SSLContext:
        # CA data wins over the file, as in client-go; the system's CAs when neither is given.
        ctx = ssl.create_default_context(
            cafile=None if self.ca_data else self.ca_file,
            cadata=self.ca_data.decode() if self.ca_data else None,
        )
        if self.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.cert_pem and self.key_pem:
            _load_cert_chain(ctx, self.cert_pem, self.key_pem)
        return ctx

    def auth_headers(self) -> dict[str, str]:
        token = self.token
        return {"Authorization": f"Bearer {token}"} if token else {}


_CONTEXTS: dict[ClientConfig, ssl.SSLContext] = {}
_MAX_CONTEXTS = 4


def _load_cert_chain(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """Load a client certificate and key without writing the key to any file.

    The ssl module loads key pairs only by path: the path is /proc/self/fd/N of an anonymous
    memfd (no name in any filesystem, gone with the process), or of two pipes where memfd is
    not available.
    """
    try:
        fd = os.memfd_create("k8smpi-client-cert", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        _load_from_pipes(ctx, cert, key)
        return
    try:
        _write_all(fd, cert + b"\n" + key)
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    except ssl.SSLError as e:
        raise ConfigError(f"client certificate or key is not valid PEM: {e.reason}") from None
    finally:
        os.close(fd)


def _load_from_pipes(ctx: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    fds: list[int] = []
    try:
        paths = []
        for data in (cert, key):
            r, w = os.pipe()
            fds += [r, w]
            if len(data) > 60_000:  # the pipe buffer holds 64 KiB: no reader runs yet
                raise ConfigError("client certificate or key is too large to load from memory")
            _write_all(w, data)
            os.close(w)
            fds.remove(w)
            paths.append(f"/proc/self/fd/{r}")
        ctx.load_cert_chain(paths[0], paths[1])
    except ssl.SSLError as e:
        raise ConfigError(f"client certificate or key is not valid PEM: {e.reason}") from None
    finally:
        for fd in fds:
            os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


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
        return _from_kubeconfig([os.path.expanduser(kubeconfig)], context, namespace, env)
    if env.get("KUBECONFIG"):
        paths = [os.path.expanduser(p) for p in env["KUBECONFIG"].split(os.pathsep) if p]
        return _from_kubeconfig(paths, context, namespace, env)
    if context is None and env.get("KUBERNETES_SERVICE_HOST"):
        return _in_cluster(namespace, env)
    default = os.path.join(env.get("HOME", os.path.expanduser("~")), ".kube", "config")
    if os.path.exists(default):
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
    path = os.path.join(env.get("K8SMPI_SERVICEACCOUNT_DIR", SERVICEACCOUNT_DIR), "namespace")
    try:
        return _text(path).strip() or None
    except (OSError, UnicodeError):
        return None


def _text(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def _in_cluster(namespace: str | None, env: Mapping[str, str]) -> ClientConfig:
    sa = env.get("K8SMPI_SERVICEACCOUNT_DIR", SERVICEACCOUNT_DIR)
    host = env["KUBERNETES_SERVICE_HOST"]
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    if not port.isdigit():
        raise ConfigError(f"KUBERNETES_SERVICE_PORT={port!r} is not a port number")
    try:
        token = credentials.FileToken(os.path.join(sa, "token"))
    except ConfigError as e:
        raise ConfigError(f"in a pod but the service-account token is unusable: {e}") from None
    ca = os.path.join(sa, "ca.crt")
    if not os.path.exists(ca):
        raise ConfigError(f"in a pod but the service-account CA {ca} is missing")
    bracketed = f"[{host}]" if ":" in host else host
    return ClientConfig(
        server=f"https://{bracketed}:{port}",
        namespace=namespace or in_cluster_namespace(env) or "default",
        source=f"in-cluster service account ({sa})",
        ca_file=ca,
        token_source=token,
        proxy=proxies.for_server(host, int(port), proxy_url=None, env=env),
        in_cluster=True,
    )


def _read_kubeconfigs(paths: list[str]) -> dict[str, Any]:
    """Merge kubeconfig files as kubectl does: the first definition of each name wins."""
    merged: dict[str, Any] = {"clusters": {}, "users": {}, "contexts": {}, "current-context": None}
    found = False
    for path in paths:
        try:
            text = _text(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            raise ConfigError(f"cannot read kubeconfig {path}: {e.strerror}") from None
        except UnicodeError:
            raise ConfigError(f"kubeconfig {path} is not UTF-8 text") from None
        found = True
        try:
            doc = yamlish.load(text) or {}
        except yamlish.Invalid as e:
            # Never the parser's own message: it quotes the offending line (a token, a key).
            raise ConfigError(f"kubeconfig {path} is not valid YAML{e.where}") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"kubeconfig {path} is not a mapping")
        for kind, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            for item in doc.get(kind) or []:
                if isinstance(item, dict) and "name" in item:
                    entry = dict(item.get(key) or {})
                    entry["_dir"] = os.path.dirname(path)
                    merged[kind].setdefault(item["name"], entry)
        merged["current-context"] = merged["current-context"] or doc.get("current-context")
    if not found:
        raise ConfigError(f"kubeconfig not found: {':'.join(map(str, paths))}")
    return merged


def _from_kubeconfig(
    paths: list[str], context: str | None, namespace: str | None, env: Mapping[str, str]
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
    tls = _tls(cluster)
    server = str(cluster["server"]).rstrip("/")
    try:
        url = urls.split_server(server)
    except ValueError:
        raise ConfigError(f"kubeconfig cluster server {server!r} has a bad port") from None
    proxy_url = cluster.get("proxy-url") or None
    if proxy_url is not None:
        try:
            dialing.parse_proxy(str(proxy_url))
        except ValueError as e:
            raise ConfigError(f"kubeconfig cluster proxy-url: {e}") from None
    port = url.port or 443
    user = cfg["users"].get(ctx.get("user"), {})
    plugin = user.get("exec")
    wants_info = isinstance(plugin, dict) and bool(plugin.get("provideClusterInfo"))
    info = _cluster_info(cluster, server, tls) if wants_info else None
    cert, key, source = _user_credentials(user, env, info)
    return ClientConfig(
        server=server,
        namespace=namespace or ctx.get("namespace") or "default",
        source=f"kubeconfig {paths[0]} context {ctx_name}",
        ca_file=tls.ca_file,
        ca_data=tls.ca_data,
        cert_pem=cert,
        key_pem=key,
        token_source=source,
        insecure=tls.insecure,
        tls_server_name=tls.server_name,
        proxy=proxies.for_server(
            url.hostname or "", port, proxy_url=str(proxy_url) if proxy_url else None, env=env
        ),
    )


class _Tls(Record):
    ca_file: str | None
    ca_data: bytes | None
    insecure: bool
    server_name: str | None


def _tls(cluster: dict[str, Any]) -> _Tls:
    """The cluster's TLS settings, checked as client-go checks them."""
    insecure = cluster.get("insecure-skip-tls-verify", False)
    if insecure is None:
        insecure = False
    if not isinstance(insecure, bool):
        raise ConfigError(
            "kubeconfig cluster insecure-skip-tls-verify must be true or false (a YAML "
            f"boolean), not the {type(insecure).__name__} {str(insecure)[:10]!r}"
        )
    ca_data = _data(cluster, "certificate-authority-data")
    ca_file = None if ca_data else _path(cluster, "certificate-authority")
    if insecure and (ca_data or ca_file):
        raise ConfigError(
            "kubeconfig cluster sets insecure-skip-tls-verify together with a certificate "
            "authority; kubectl refuses that too: drop one of them"
        )
    server_name = cluster.get("tls-server-name")
    if server_name is not None and not isinstance(server_name, str):
        raise ConfigError("kubeconfig cluster tls-server-name must be a string")
    return _Tls(ca_file, ca_data, insecure, server_name or None)


def _cluster_info(cluster: dict[str, Any], server: str, tls: _Tls) -> dict[str, Any]:
    """The ``spec.cluster`` an exec plugin with ``provideClusterInfo`` receives (client-go's)."""
    info: dict[str, Any] = {"server": server}
    if tls.server_name:
        info["tls-server-name"] = tls.server_name
    if tls.insecure:
        info["insecure-skip-tls-verify"] = True
    ca = tls.ca_data or _read(tls.ca_file)
    if ca:
        info["certificate-authority-data"] = credentials.b64(ca)
    if cluster.get("proxy-url"):
        info["proxy-url"] = str(cluster["proxy-url"])
    if cluster.get("disable-compression"):
        info["disable-compression"] = True
    for ext in cluster.get("extensions") or []:
        if isinstance(ext, dict) and ext.get("name") == EXEC_EXTENSION:
            info["config"] = ext.get("extension")
    return info


def _path(entry: dict[str, Any], key: str) -> str | None:
    value = entry.get(key)
    if not value:
        return None
    p = os.path.expanduser(str(value))
    return p if os.path.isabs(p) else os.path.join(entry["_dir"], p)


def _data(entry: dict[str, Any], key: str) -> bytes | None:
    value = entry.get(key)
    if not value:
        return None
    try:
        return base64.b64decode(str(value), validate=True)
    except ValueError:
        raise ConfigError(f"kubeconfig field {key} is not base64") from None


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}") from None


def _user_credentials(
    user: dict[str, Any], env: Mapping[str, str], cluster_info: dict[str, Any] | None
) -> tuple[bytes | None, bytes | None, credentials.TokenSource | None]:
    if user.get("auth-provider"):
        raise ConfigError(
            "kubeconfig user uses the removed auth-provider mechanism; use an exec plugin"
        )
    if user.get("username") or user.get("password"):
        raise ConfigError("kubeconfig basic auth (username/password) is not supported")
    cert = _data(user, "client-certificate-data") or _read(_path(user, "client-certificate"))
    key = _data(user, "client-key-data") or _read(_path(user, "client-key"))
    source: credentials.TokenSource | None = None
    token_file = _path(user, "tokenFile")
    if token_file:  # client-go: the file's token wins over an inline one
        source = credentials.FileToken(token_file)
    elif user.get("token"):
        if not isinstance(user["token"], str):
            raise ConfigError("kubeconfig user token must be a string")
        source = credentials.StaticToken(credentials.check_token(user["token"], "kubeconfig"))
    if user.get("exec"):
        if not isinstance(user["exec"], dict):
            raise ConfigError("kubeconfig user exec must be a mapping")
        plugin = credentials.ExecPlugin(
            user["exec"], kubeconfig_dir=user["_dir"], env=env, cluster_info=cluster_info
        )
        got = plugin.credential()  # run now: its certificate goes into the TLS context
        if got.cert_pem:
            cert, key = got.cert_pem, got.key_pem
        if got.token:
            source = plugin
    return cert, key, source
