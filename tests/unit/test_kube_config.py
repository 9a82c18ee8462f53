"""Credential precedence and kubeconfig forms (k8smpi_runtime.kube.config)."""

from __future__ import annotations

import base64
import json
import os
import ssl
import stat
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from k8smpi_runtime.errors import ConfigError
from k8smpi_runtime.kube import config, credentials, rest
from tests.unit.tlsfiles import pki


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


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
    sa.mkdir(parents=True)
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


# -- TLS settings read as kubectl reads them (issue 11, point 4) --------------------------------


def tls_kubeconfig(
    tmp_path: Path, cluster: Mapping[str, object], user: Mapping[str, object]
) -> str:
    doc = {
        "clusters": [{"name": "c", "cluster": {"server": "https://k:6443", **cluster}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    (tmp_path / "kc").write_text(json.dumps(doc))
    return str(tmp_path / "kc")


@pytest.mark.parametrize("value", ["false", "true", "no", 0, 1])
def test_insecure_must_be_a_real_boolean(tmp_path: Path, value: object) -> None:
    kc = tls_kubeconfig(tmp_path, {"insecure-skip-tls-verify": value}, {"token": "t"})
    with pytest.raises(ConfigError, match="insecure-skip-tls-verify must be true or false"):
        config.load(kubeconfig=kc, env={})


def test_insecure_false_verifies(tmp_path: Path) -> None:
    kc = tls_kubeconfig(tmp_path, {"insecure-skip-tls-verify": False}, {"token": "t"})
    cfg = config.load(kubeconfig=kc, env={})
    assert not cfg.insecure
    assert cfg.ssl_context().verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("ca", ["certificate-authority", "certificate-authority-data"])
def test_insecure_with_a_ca_is_refused(tmp_path: Path, ca: str) -> None:
    value = str(pki().ca) if ca == "certificate-authority" else b64(pki().ca.read_bytes())
    kc = tls_kubeconfig(tmp_path, {"insecure-skip-tls-verify": True, ca: value}, {"token": "t"})
    with pytest.raises(ConfigError, match="together with a certificate authority"):
        config.load(kubeconfig=kc, env={})


def test_ca_data_wins_over_the_file(tmp_path: Path) -> None:
    (tmp_path / "not-a-ca.crt").write_text("this file is not a certificate")
    cluster = {
        "certificate-authority": "not-a-ca.crt",
        "certificate-authority-data": b64(pki().ca.read_bytes()),
    }
    cfg = config.load(kubeconfig=tls_kubeconfig(tmp_path, cluster, {"token": "t"}), env={})
    assert cfg.ca_file is None
    assert cfg.ca_data == pki().ca.read_bytes()
    assert len(cfg.ssl_context().get_ca_certs()) == 1  # only the data's CA, no error


# -- secrets stay secret (point 9) ------------------------------------------------------------


def test_a_yaml_error_never_shows_the_file(tmp_path: Path) -> None:
    (tmp_path / "kc").write_text(
        "users:\n- name: u\n  user:\n    token: sk-SECRET-123\n    bad: [unclosed\n"
    )
    with pytest.raises(ConfigError) as info:
        config.load(kubeconfig=str(tmp_path / "kc"), env={})
    assert "SECRET" not in str(info.value)
    assert str(info.value) == f"kubeconfig {tmp_path / 'kc'} is not valid YAML (line 6, column 1)"


def test_the_client_key_never_touches_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = pki()
    user = {
        "client-certificate-data": b64(files.client_cert.read_bytes()),
        "client-key-data": b64(files.client_key.read_bytes()),
    }
    cfg = config.load(kubeconfig=tls_kubeconfig(tmp_path, {}, user), env={})

    def no_files(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("a temporary file was made for the key")

    monkeypatch.setattr(tempfile, "mkstemp", no_files)
    monkeypatch.setattr(tempfile, "NamedTemporaryFile", no_files)
    before = {p.name for p in Path("/dev/shm").iterdir()}
    cfg.ssl_context()  # loads the pair: an error here would be a ConfigError or SSLError
    assert {p.name for p in Path("/dev/shm").iterdir()} <= before
    monkeypatch.setattr(os, "memfd_create", lambda *_a: (_ for _ in ()).throw(OSError(38, "no")))
    cfg.ssl_context()  # without memfd: pipes, still no file


def test_a_bad_client_key_is_one_line(tmp_path: Path) -> None:
    user = {
        "client-certificate-data": b64(pki().client_cert.read_bytes()),
        "client-key-data": b64(
            b"-----BEGIN EC PRIVATE KEY-----\nnope\n-----END EC PRIVATE KEY-----\n"
        ),
    }
    cfg = config.load(kubeconfig=tls_kubeconfig(tmp_path, {}, user), env={})
    with pytest.raises(ConfigError, match="client certificate or key is not valid PEM"):
        cfg.ssl_context()


@pytest.mark.parametrize("token", ["abc\r\nX-Evil: 1", "abc\ndef", "tab\there", "é-token"])
def test_tokens_that_cannot_be_a_header_are_refused(tmp_path: Path, token: str) -> None:
    kc = tls_kubeconfig(tmp_path, {}, {"token": token})
    with pytest.raises(ConfigError) as info:
        config.load(kubeconfig=kc, env={})
    assert token not in str(info.value)
    (tmp_path / "tok").write_text(f"  {token}\n")
    kc = tls_kubeconfig(tmp_path, {}, {"tokenFile": "tok"})
    with pytest.raises(ConfigError):
        config.load(kubeconfig=kc, env={})
    with pytest.raises(ConfigError):
        config.load(env=service_account(tmp_path / "sa-dir", token=token))


def test_the_exec_plugins_stderr_is_not_copied_into_messages(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    plugin = tmp_path / "plugin"
    plugin.write_text("#!/bin/sh\necho 'refresh failed for token sk-SECRET-9' >&2\nexit 3\n")
    plugin.chmod(0o755)
    kc = tls_kubeconfig(tmp_path, {}, {"exec": {"command": str(plugin)}})
    with pytest.raises(ConfigError) as info:
        config.load(kubeconfig=kc, env={})
    assert "SECRET" not in str(info.value)
    assert "exited 3" in str(info.value)
    assert "sk-SECRET-9" in capfd.readouterr().err  # the plugin's own stderr, as kubectl shows it


# -- credentials as client-go handles them (point 10) -------------------------------------------


def counting_plugin(tmp_path: Path, *, expires: str | None) -> Path:
    """A plugin that counts its runs and records what it was given."""
    plugin = tmp_path / "bin" / "plugin"
    plugin.parent.mkdir(exist_ok=True)
    status = {"token": "tok-RUN"} | ({"expirationTimestamp": expires} if expires else {})
    plugin.write_text(
        f"#!{sys.executable}\n"
        "import json, os, pathlib\n"
        f"runs = pathlib.Path({str(tmp_path / 'runs')!r})\n"
        "n = len(runs.read_text()) + 1 if runs.exists() else 1\n"
        "runs.write_text('x' * n)\n"
        f"pathlib.Path({str(tmp_path / 'info')!r}).write_text(os.environ['KUBERNETES_EXEC_INFO'])\n"
        f"status = {status!r}\n"
        "status['token'] = status['token'].replace('RUN', str(n))\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1',"
        " 'kind': 'ExecCredential', 'status': status}))\n"
    )
    plugin.chmod(0o755)
    return plugin


def test_exec_credentials_are_cached_until_they_expire(tmp_path: Path) -> None:
    counting_plugin(tmp_path, expires="2999-01-01T00:00:00Z")
    kc = tls_kubeconfig(tmp_path, {}, {"exec": {"command": str(tmp_path / "bin" / "plugin")}})
    cfg = config.load(kubeconfig=kc, env={})
    assert [cfg.token, cfg.token, cfg.auth_headers()["Authorization"]] == [
        "tok-1", "tok-1", "Bearer tok-1"
    ]  # fmt: skip
    counting_plugin(tmp_path, expires="2000-01-01T00:00:00Z")  # already expired when issued
    (tmp_path / "runs").unlink()
    cfg = config.load(kubeconfig=kc, env={})
    assert [cfg.token, cfg.token] == ["tok-2", "tok-3"]  # run again each time it is needed


def test_a_relative_plugin_command_is_found_from_the_kubeconfig_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counting_plugin(tmp_path, expires=None)
    kc = tls_kubeconfig(tmp_path, {}, {"exec": {"command": "./bin/plugin"}})
    monkeypatch.chdir("/")
    assert config.load(kubeconfig=kc, env={}).token == "tok-1"


def test_provide_cluster_info(tmp_path: Path) -> None:
    counting_plugin(tmp_path, expires=None)
    cluster = {
        "certificate-authority": str(pki().ca),
        "tls-server-name": "kube.test",
        "proxy-url": "http://proxy:3128",
        "extensions": [{"name": "client.authentication.k8s.io/exec", "extension": {"a": 1}}],
    }
    user = {"exec": {"command": "./bin/plugin", "provideClusterInfo": True}}
    config.load(kubeconfig=tls_kubeconfig(tmp_path, cluster, user), env={})
    info = json.loads((tmp_path / "info").read_text())
    assert info["spec"]["cluster"] == {
        "server": "https://k:6443",
        "tls-server-name": "kube.test",
        "certificate-authority-data": b64(pki().ca.read_bytes()),
        "proxy-url": "http://proxy:3128",
        "config": {"a": 1},
    }
    user = {"exec": {"command": "./bin/plugin"}}
    config.load(kubeconfig=tls_kubeconfig(tmp_path, cluster, user), env={})
    assert "cluster" not in json.loads((tmp_path / "info").read_text())["spec"]


def test_a_rotating_token_file_is_read_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bound service-account tokens rotate; a long wait must send the current one.
    monkeypatch.setattr(credentials, "FILE_PERIOD", 0.0)
    env = service_account(tmp_path)
    (tmp_path / "sa" / "ca.crt").write_bytes(pki().ca.read_bytes())
    cfg = config.load(env=env)
    api = rest.Api(cfg)
    assert api.headers()["Authorization"] == "Bearer sa-token"
    (tmp_path / "sa" / "token").write_text("rotated\n")
    assert api.headers()["Authorization"] == "Bearer rotated"
    (tmp_path / "sa" / "token").unlink()  # a failed read keeps the last good token
    assert api.headers()["Authorization"] == "Bearer rotated"


def test_token_file_wins_and_is_reread_for_kubeconfig_users_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(credentials, "FILE_PERIOD", 0.0)
    (tmp_path / "tok").write_text("from-file")
    cfg = config.load(
        kubeconfig=tls_kubeconfig(tmp_path, {}, {"token": "inline", "tokenFile": "tok"}), env={}
    )
    assert cfg.token == "from-file"
    (tmp_path / "tok").write_text("next")
    assert cfg.token == "next"


def test_the_proxy_is_decided_at_load(tmp_path: Path) -> None:
    kc = tls_kubeconfig(tmp_path, {"proxy-url": "http://p:3128"}, {"token": "t"})
    assert config.load(kubeconfig=kc, env={}).proxy == "http://p:3128"
    kc = tls_kubeconfig(tmp_path, {}, {"token": "t"})
    assert config.load(kubeconfig=kc, env={"HTTPS_PROXY": "http://e:1"}).proxy == "http://e:1"
    env = {"HTTPS_PROXY": "http://e:1", "NO_PROXY": "k"}
    assert config.load(kubeconfig=kc, env=env).proxy is None
    kc = tls_kubeconfig(tmp_path, {"proxy-url": "socks5://p:1"}, {"token": "t"})
    with pytest.raises(ConfigError, match="proxy-url: proxy scheme socks5:// is not supported"):
        config.load(kubeconfig=kc, env={})
    sa = service_account(tmp_path) | {"HTTPS_PROXY": "http://e:1"}
    assert config.load(env=sa).proxy == "http://e:1"  # in a pod too, as client-go
