"""Our credential loader against the kubernetes client's, on the same files.

kube/config.py (with kube/yamlish.py) replaces the kubernetes client on kubexec's path; the
client is kept as a test dependency to be the oracle here: for each kubeconfig fixture (YAML
as kubectl writes it, JSON, merged lists, another context, relative paths, token files, an
exec plugin) and for in-cluster service-account files, both must find the same server, CA,
client certificate and key, token, TLS options and namespace.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client as kclient
from kubernetes.config import incluster_config, kube_config

from k8smpi_runtime.kube import config

CA = b"-----BEGIN CERTIFICATE-----\nMIIBCA==\n-----END CERTIFICATE-----\n"
CERT = b"-----BEGIN CERTIFICATE-----\nMIIBYw==\n-----END CERTIFICATE-----\n"
KEY = b"-----BEGIN EC PRIVATE KEY-----\nMHcCAQ==\n-----END EC PRIVATE KEY-----\n"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def doc(user: dict[str, Any], cluster: dict[str, Any], namespace: str | None = None) -> Any:
    context: dict[str, str] = {"cluster": "c1", "user": "u1"}
    if namespace:
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": "c1", "cluster": cluster}],
        "users": [{"name": "u1", "user": user}],
        "contexts": [
            {"name": "main", "context": context},
            {"name": "second", "context": {"cluster": "c1", "user": "u1", "namespace": "ns2"}},
        ],
        "current-context": "main",
    }


def write(path: Path, data: Any, *, as_json: bool = False) -> Path:
    path.write_text(json.dumps(data) if as_json else yaml.safe_dump(data, default_flow_style=False))
    return path


def theirs(path: str, context: str | None, tmp_path: Path) -> tuple[Any, str]:
    """The kubernetes client's configuration and namespace for a kubeconfig path (list)."""
    conf = kclient.Configuration()
    kube_config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=path,
        context=context,
        client_configuration=conf,
        persist_config=False,
        temp_file_path=str(tmp_path),
    )
    contexts, active = kube_config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
    if context:
        active = next(c for c in contexts if c["name"] == context)
    return conf, active["context"].get("namespace") or "default"


def same(ours: config.ClientConfig, conf: Any, namespace: str) -> None:
    assert ours.server == conf.host
    ca = ours.ca_data if ours.ca_data is not None else Path(str(ours.ca_file)).read_bytes()
    assert ca == Path(conf.ssl_ca_cert).read_bytes()
    if conf.cert_file:
        assert ours.cert_pem == Path(conf.cert_file).read_bytes()
        assert ours.key_pem == Path(conf.key_file).read_bytes()
    else:
        assert (ours.cert_pem, ours.key_pem) == (None, None)
    bearer = conf.api_key.get("BearerToken")
    assert ours.auth_headers().get("Authorization") == bearer
    assert ours.insecure == (not conf.verify_ssl)
    assert ours.tls_server_name == conf.tls_server_name
    assert ours.namespace == namespace


@pytest.mark.parametrize("as_json", [False, True])
def test_certificate_data(tmp_path: Path, as_json: bool) -> None:
    user = {"client-certificate-data": b64(CERT), "client-key-data": b64(KEY)}
    cluster = {"server": "https://127.0.0.1:6443", "certificate-authority-data": b64(CA)}
    path = write(tmp_path / "kc", doc(user, cluster, "team-a"), as_json=as_json)
    same(config.load(kubeconfig=str(path), env={}), *theirs(str(path), None, tmp_path))


def test_token_ca_file_relative_path_and_another_context(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_bytes(CA)
    user = {"token": "t0ken-123"}
    cluster = {
        "server": "https://[fd00::1]:443",
        "certificate-authority": "certs/ca.crt",
        "tls-server-name": "api.example",
    }
    path = write(tmp_path / "kc", doc(user, cluster))
    for context in (None, "second"):
        ours = config.load(kubeconfig=str(path), context=context, env={})
        same(ours, *theirs(str(path), context, tmp_path))


def test_files_for_certificate_key_and_token(tmp_path: Path) -> None:
    for name, data in (("ca.crt", CA), ("c.crt", CERT), ("c.key", KEY)):
        (tmp_path / name).write_bytes(data)
    user = {"client-certificate": str(tmp_path / "c.crt"), "client-key": "c.key"}
    cluster = {"server": "https://k.example", "certificate-authority": "ca.crt"}
    path = write(tmp_path / "kc", doc(user, cluster))
    same(config.load(kubeconfig=str(path), env={}), *theirs(str(path), None, tmp_path))


def test_kubeconfig_list_merged_first_wins(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(CA)
    first = doc({"token": "first"}, {"server": "https://a:1", "certificate-authority": "ca.crt"})
    second = doc({"token": "second"}, {"server": "https://b:2", "certificate-authority": "ca.crt"})
    second["current-context"] = "second"
    paths = f"{write(tmp_path / 'a', first)}:{write(tmp_path / 'b', second)}"
    ours = config.load(env={"KUBECONFIG": paths})
    assert ours.token == "first"
    # kubectl: "the first file to set current-context wins" -- the kubernetes client lets the
    # last one win (KubeConfigMerger), so the oracle is asked with the context named.
    assert ours.namespace == "default"  # main's, from the first file
    for context in ("main", "second"):
        ours = config.load(context=context, env={"KUBECONFIG": paths})
        same(ours, *theirs(paths, context, tmp_path))


def test_exec_plugin(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(CA)
    plugin = tmp_path / "plugin.py"
    plugin.write_text(
        "import json, os\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1', "
        "'kind': 'ExecCredential', 'status': {'token': 'from-' + os.environ['WHO']}}))\n"
    )
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": sys.executable,
            "args": [str(plugin)],
            "env": [{"name": "WHO", "value": "plugin"}],
            "interactiveMode": "Never",
        }
    }
    cluster = {"server": "https://k:6443", "certificate-authority": "ca.crt"}
    path = write(tmp_path / "kc", doc(user, cluster))
    ours = config.load(kubeconfig=str(path), env={"PATH": "/usr/bin:/bin"})
    assert ours.token == "from-plugin"
    same(ours, *theirs(str(path), None, tmp_path))


def test_in_cluster_service_account(tmp_path: Path) -> None:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text("sa-token\n")
    (sa / "ca.crt").write_bytes(CA)
    (sa / "namespace").write_text("team-b")
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    ours = config.load(env={**env, "K8SMPI_SERVICEACCOUNT_DIR": str(sa)})
    conf: Any = kclient.Configuration()
    loader = incluster_config.InClusterConfigLoader(  # type: ignore[no-untyped-call]
        token_filename=str(sa / "token"),
        cert_filename=str(sa / "ca.crt"),
        try_refresh_token=False,
        environ=env,
    )
    loader.load_and_set(conf)  # type: ignore[no-untyped-call]
    assert ours.server == conf.host
    assert Path(str(ours.ca_file)).read_bytes() == Path(conf.ssl_ca_cert).read_bytes()
    # The client keeps the file's newline and writes "bearer"; the token is the same.
    assert ours.token == conf.api_key["BearerToken"].split(" ", 1)[1].strip()
    assert ours.namespace == "team-b"
