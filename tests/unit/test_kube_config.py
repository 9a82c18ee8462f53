"""Credential precedence and kubeconfig forms (k8smpi_runtime.kube.config)."""

from __future__ import annotations

import base64
import json
import stat
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from k8smpi_runtime.errors import ConfigError
from k8smpi_runtime.kube import config


def kubeconfig(path: Path, *, server: str, user: Mapping[str, object], namespace: str = "") -> Path:
    ctx: dict[str, str] = {"cluster": "c", "user": "u"}
    if namespace:
        ctx["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "c", "cluster": {"server": server, "certificate-authority": "ca.crt"}}
        ],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": ctx}, {"name": "other", "context": ctx}],
        "current-context": "ctx",
    }
    path.write_text(json.dumps(doc))
    return path


def service_account(tmp_path: Path, token: str = "sa-token") -> dict[str, str]:
    sa = tmp_path / "sa"
    sa.mkdir()
    (sa / "token").write_text(token + "\n")
    (sa / "ca.crt").write_text("ca")
    (sa / "namespace").write_text("team-a")
    return {
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
        "K8SMPI_SERVICEACCOUNT_DIR": str(sa),
        "HOME": str(tmp_path),
    }


def test_in_cluster(tmp_path: Path) -> None:
    cfg = config.load(env=service_account(tmp_path))
    assert cfg.server == "https://10.96.0.1:443"
    assert cfg.token == "sa-token"
    assert cfg.namespace == "team-a"
    assert cfg.ca_file == str(tmp_path / "sa" / "ca.crt")
    assert cfg.auth_headers() == {"Authorization": "Bearer sa-token"}


def test_in_cluster_token_reread_each_load(tmp_path: Path) -> None:
    env = service_account(tmp_path)
    assert config.load(env=env).token == "sa-token"
    (tmp_path / "sa" / "token").write_text("rotated")
    assert config.load(env=env).token == "rotated"


def test_in_cluster_ipv6_host(tmp_path: Path) -> None:
    env = service_account(tmp_path) | {"KUBERNETES_SERVICE_HOST": "fd00::1"}
    assert config.load(env=env).server == "https://[fd00::1]:443"


def test_kubeconfig_env_beats_in_cluster(tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "kc", server="https://k:6443", user={"token": "t"}, namespace="ns9")
    env = service_account(tmp_path) | {"KUBECONFIG": str(kc)}
    cfg = config.load(env=env)
    assert cfg.server == "https://k:6443"
    assert cfg.namespace == "ns9"
    assert cfg.ca_file == str(tmp_path / "ca.crt")  # relative to the kubeconfig's folder
    assert config.load(env=env, namespace="explicit").namespace == "explicit"


def test_explicit_kubeconfig_and_context(tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "kc", server="https://k:6443", user={"token": "t"})
    cfg = config.load(kubeconfig=str(kc), context="other", env={"HOME": str(tmp_path)})
    assert "context other" in cfg.source
    assert cfg.namespace == "default"
    with pytest.raises(ConfigError, match="context 'nope' not found"):
        config.load(kubeconfig=str(kc), context="nope", env={})


def test_kubeconfig_list_first_definition_wins(tmp_path: Path) -> None:
    a = kubeconfig(tmp_path / "a", server="https://a:1", user={"token": "ta"})
    b = kubeconfig(tmp_path / "b", server="https://b:2", user={"token": "tb"})
    cfg = config.load(env={"KUBECONFIG": f"{tmp_path / 'missing'}:{a}:{b}"})
    assert (cfg.server, cfg.token) == ("https://a:1", "ta")


def test_client_certificate_data_and_token_file(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("from-file\n")
    user = {
        "client-certificate-data": base64.b64encode(b"CERT").decode(),
        "client-key-data": base64.b64encode(b"KEY").decode(),
        "tokenFile": "tok",
    }
    cfg = config.load(kubeconfig=str(kubeconfig(tmp_path / "kc", server="https://k", user=user)))
    assert (cfg.cert_pem, cfg.key_pem, cfg.token) == (b"CERT", b"KEY", "from-file")
    assert "CERT" not in repr(cfg) and "from-file" not in repr(cfg)


def test_exec_plugin(tmp_path: Path) -> None:
    plugin = tmp_path / "plugin"
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import json, os\n"
        "info = json.loads(os.environ['KUBERNETES_EXEC_INFO'])\n"
        "assert info['kind'] == 'ExecCredential'\n"
        "print(json.dumps({'status': {'token': 'tok-' + os.environ['EXTRA']}}))\n"
    )
    plugin.chmod(plugin.stat().st_mode | stat.S_IEXEC)
    user = {"exec": {"command": str(plugin), "env": [{"name": "EXTRA", "value": "x"}]}}
    kc = kubeconfig(tmp_path / "kc", server="https://k", user=user)
    assert config.load(kubeconfig=str(kc), env={}).token == "tok-x"


def test_exec_plugin_failure_is_one_line(tmp_path: Path) -> None:
    user = {"exec": {"command": "/bin/false"}}
    kc = kubeconfig(tmp_path / "kc", server="https://k", user=user)
    with pytest.raises(ConfigError, match="exited 1"):
        config.load(kubeconfig=str(kc), env={})


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"auth-provider": {"name": "oidc"}}, "auth-provider"),
        ({"username": "a", "password": "b"}, "basic auth"),
    ],
)
def test_unsupported_auth(tmp_path: Path, user: Mapping[str, object], message: str) -> None:
    kc = kubeconfig(tmp_path / "kc", server="https://k", user=user)
    with pytest.raises(ConfigError, match=message):
        config.load(kubeconfig=str(kc), env={})


def test_nothing_found(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no Kubernetes credentials"):
        config.load(env={"HOME": str(tmp_path)})


def test_bad_yaml(tmp_path: Path) -> None:
    (tmp_path / "kc").write_text("clusters: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(kubeconfig=str(tmp_path / "kc"), env={})
