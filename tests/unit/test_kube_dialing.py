"""Reaching the API server: proxies as kubectl chooses them, CONNECT through a loopback proxy
to a loopback HTTPS server (both real sockets, real TLS), and which failures are permanent."""

from __future__ import annotations

import base64
import http.server
import json
import os
import ssl
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from k8smpi_runtime.errors import TransportError
from k8smpi_runtime.kube import config, dialing, proxies, rest
from k8smpi_runtime.kubexec import wire
from tests.tcpproxy import ConnectProxy
from tests.unit.tlsfiles import pki

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.mark.parametrize(
    ("host", "env", "proxy_url", "expected"),
    [
        ("k.example.com", {"HTTPS_PROXY": "http://p:3128"}, None, "http://p:3128"),
        ("k.example.com", {"https_proxy": "p:3128"}, None, "p:3128"),
        ("k.example.com", {"HTTP_PROXY": "http://p:3128"}, None, None),  # https only
        ("k.example.com", {}, "http://kc:1", "http://kc:1"),
        ("127.0.0.1", {"HTTPS_PROXY": "http://p:1"}, None, None),  # loopback: never from env
        ("localhost", {"HTTPS_PROXY": "http://p:1"}, None, None),
        ("::1", {"HTTPS_PROXY": "http://p:1"}, None, None),
        ("127.0.0.1", {"HTTPS_PROXY": "http://p:1"}, "http://kc:1", "http://kc:1"),
        ("k.example.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, None, None),
        ("k.example.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, None, None),
        ("example.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, None, None),
        ("example.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".example.com"}, None, "http://p:1"),
        ("a.example.com", {"HTTPS_PROXY": "http://p:1", "no_proxy": "*.example.com"}, None, None),
        ("notexample.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com"}, None, "http://p:1"),
        ("10.96.0.1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.96.0.0/12"}, None, None),
        ("10.112.0.1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.96.0.0/12"}, None, "http://p:1"),
        ("10.96.0.1", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": " 10.96.0.1 ,x"}, None, None),
        ("k.example.com", {"HTTPS_PROXY": "p:1", "NO_PROXY": "k.example.com:6443"}, None, None),
        ("k.example.com", {"HTTPS_PROXY": "p:1", "NO_PROXY": "k.example.com:443"}, None, "p:1"),
    ],
)  # fmt: skip
def test_which_proxy(
    host: str, env: dict[str, str], proxy_url: str | None, expected: str | None
) -> None:
    assert proxies.for_server(host, 6443, proxy_url=proxy_url, env=env) == expected


def test_proxy_urls() -> None:
    assert dialing.parse_proxy("p:3128") == dialing.Proxy("p", 3128)
    assert dialing.parse_proxy("http://[fd00::1]") == dialing.Proxy("fd00::1", 80)
    proxy = dialing.parse_proxy("http://al%40ice:s%3Acret@p:8080")
    assert proxy.authorization == "Basic " + base64.b64encode(b"al@ice:s:cret").decode()
    assert proxy.display == "http://p:8080"  # never the credentials
    for bad, why in [("socks5://p:1", "socks5:// is not supported"), ("https://p", "https://")]:
        with pytest.raises(ValueError, match=why):
            dialing.parse_proxy(bad)


# -- the loopback API server and proxy --------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        body = json.dumps(
            {"kind": "Pod", "path": self.path, "auth": self.headers.get("Authorization")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def api_server() -> Iterator[int]:
    files = pki()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.server_cert, files.server_key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    p = ConnectProxy(hosts={"kube.test": "127.0.0.1"})
    yield p
    p.close()


def kubeconfig(tmp_path: Path, port: int, *, proxy_url: str | None) -> str:
    cluster: dict[str, Any] = {
        "server": f"https://kube.test:{port}",
        "certificate-authority": str(pki().ca),
    }
    if proxy_url:
        cluster["proxy-url"] = proxy_url
    doc = {
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "ns"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("how", ["proxy-url", "HTTPS_PROXY"])
def test_both_clients_tunnel_through_the_proxy(
    tmp_path: Path, api_server: int, proxy: ConnectProxy, how: str
) -> None:
    # kube.test resolves nowhere but at the proxy: a direct connection cannot work.
    path = kubeconfig(tmp_path, api_server, proxy_url=proxy.url if how == "proxy-url" else None)
    env = {"HTTPS_PROXY": proxy.url} if how == "HTTPS_PROXY" else {}
    cfg = config.load(kubeconfig=path, env=env)
    assert cfg.proxy == proxy.url
    conn = wire.Connection(cfg, timeout=10)
    got = conn.get("/api/v1/namespaces/ns/pods/p")
    conn.close()
    assert got == {"kind": "Pod", "path": "/api/v1/namespaces/ns/pods/p", "auth": "Bearer t0ken"}
    api = rest.Api(cfg, timeout=10)
    assert api.get("/api/v1/namespaces/ns/pods/q")["path"] == "/api/v1/namespaces/ns/pods/q"
    api.close()
    assert proxy.requests == [f"CONNECT kube.test:{api_server} HTTP/1.1"] * 2
    assert proxy.authorizations == [None, None]


def test_proxy_credentials_and_refusals(api_server: int) -> None:
    secret = "Basic " + base64.b64encode(b"u:p").decode()
    guarded = ConnectProxy(hosts={"kube.test": "127.0.0.1"}, credentials=secret)
    try:
        ctx = ssl.create_default_context(cafile=str(pki().ca))
        bare = f"http://127.0.0.1:{guarded.port}"
        with pytest.raises(dialing.ProxyRefused, match="407") as info:
            dialing.open_tls("kube.test", api_server, context=ctx, proxy=bare)
        err = dialing.transport_error("https://kube.test", info.value)
        assert not err.retryable
        assert "proxy credentials missing or wrong" in str(err)
        good = f"http://u:p@127.0.0.1:{guarded.port}"
        sock = dialing.open_tls("kube.test", api_server, context=ctx, proxy=good)
        sock.close()
        assert guarded.authorizations == [None, secret]
    finally:
        guarded.close()


def test_a_tls_verification_failure_is_permanent(api_server: int) -> None:
    ctx = ssl.create_default_context()  # the system CAs: the test CA is not among them
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        dialing.open_tls("127.0.0.1", api_server, context=ctx)
    err = dialing.transport_error("https://127.0.0.1", info.value)
    assert isinstance(err, TransportError)
    assert not err.retryable
    assert str(err).startswith("TLS verification of https://127.0.0.1 failed")
    assert dialing.transport_error("x", ConnectionRefusedError()).retryable


def test_a_connection_dialed_before_a_fork_serves_the_forked_process(
    tmp_path: Path, api_server: int
) -> None:
    # The control master's spare: dialed in the master, used by the session process it forks,
    # the master's copy closed at once (which must not end the TLS session for the child).
    path = kubeconfig(tmp_path, api_server, proxy_url=None)
    cfg = config.load(kubeconfig=path, env={})._replace(server=f"https://127.0.0.1:{api_server}")
    spare = wire.dial(cfg, timeout=10)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe
        code = 1
        try:
            time.sleep(0.2)  # the parent has closed its copy by now
            conn = wire.Connection(cfg, timeout=10, sock=spare)
            got = conn.get("/api/v1/namespaces/ns/pods/p")
            served = got["path"] == "/api/v1/namespaces/ns/pods/p"
            # Served on the spare itself, not on a connection dialed after it failed.
            code = 0 if served and conn.take_socket() is spare else 2
        finally:
            os.write(write, bytes([code]))
            os._exit(0)
    spare.close()
    os.close(write)
    assert os.read(read, 1) == b"\0"
    os.close(read)
    os.waitpid(pid, 0)
