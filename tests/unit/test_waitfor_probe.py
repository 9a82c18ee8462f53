"""--exec-probe: one `true` per pod through kubexec's exec code (a fake exec here)."""

from __future__ import annotations

import socket
import struct
from typing import TYPE_CHECKING, cast

import pytest

from k8smpi_runtime.errors import ForbiddenError, TransportError
from k8smpi_runtime.kube import websocket as ws
from k8smpi_runtime.kube.config import ClientConfig
from k8smpi_runtime.waitfor import probe
from tests.unit.podfactory import make_pod

if TYPE_CHECKING:
    from k8smpi_runtime.kube.exec import ExecTarget

CONFIG = cast("ClientConfig", object())


def test_each_pod_runs_true_in_its_default_container() -> None:
    seen: list[tuple[str, str | None]] = []

    def run(_c: ClientConfig, target: ExecTarget, _t: float) -> int:
        seen.append((target.pod, target.container))
        return {"a": 0, "b": 1}.get(target.pod, 0)

    pods = [
        make_pod("a"),
        make_pod("b"),
        make_pod("c", annotations={"kubectl.kubernetes.io/default-container": "side"}),
    ]
    rows = probe.probe_all(CONFIG, "ns1", pods, container=None, timeout=5, run=run)
    assert sorted(seen) == [("a", "main"), ("b", "main"), ("c", "side")]
    assert [(r.pod, r.why, r.fatal) for r in rows] == [("b", "exec probe: `true` exited 1", True)]


def test_a_broken_stream_is_a_failed_pod_and_403_is_denied() -> None:
    def broken(_c: ClientConfig, target: ExecTarget, _t: float) -> int:
        raise TransportError(f"exec into {target.pod}: stream ended without an exit status")

    rows = probe.probe_all(CONFIG, "ns1", [make_pod("a")], container="x", timeout=5, run=broken)
    assert rows[0].why == "exec probe: exec into a: stream ended without an exit status"

    def denied(_c: ClientConfig, _target: ExecTarget, _t: float) -> int:
        raise ForbiddenError(
            'pods "a" is forbidden: User "system:serviceaccount:ns1:launcher" cannot create '
            'resource "pods/exec" in API group "" in the namespace "ns1"',
            status=403,
        )

    with pytest.raises(probe.ProbeDenied) as err:
        probe.probe_all(CONFIG, "ns1", [make_pod("a")], container=None, timeout=5, run=denied)
    assert str(err.value) == (
        "--exec-probe: service account ns1/launcher may not exec into pod a in namespace ns1 "
        "(--exec-probe needs pods/exec: create, get)"
    )


def test_a_server_breaking_the_websocket_framing_is_a_failed_pod_not_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The real exec code over a socketpair whose "API server" sends a 2**63-1 byte frame.
    client, server = socket.socketpair()

    def connect(*_args: object, **_kwargs: object) -> ws.WebSocket:
        return ws.WebSocket(client, ws._Reader(client), "v5.channel.k8s.io")  # type: ignore[arg-type]

    monkeypatch.setattr(ws, "connect", connect)
    server.sendall(struct.pack("!BBQ", 0x82, 127, 2**63 - 1))
    config = ClientConfig(server="https://kube.test:6443", namespace="ns1", source="test")
    result = probe.probe_pod(config, "ns1", make_pod("a"), container=None, timeout=5)
    assert result.row is not None
    assert result.row.why.startswith("exec probe: exec into a: stream broken: a frame over")
    server.close()
