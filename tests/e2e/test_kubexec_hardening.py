"""kubexec under the conditions a security review and a long MPI job bring (issue 11, issue 10
item 5), on the devcluster's real API server:

- only the job's pods: a decoy with the job's host name never receives the command;
- a 32 KiB orted-style command while the exec request stays small (and out of the audit log);
- an HTTP CONNECT proxy (kubeconfig ``proxy-url``, ``HTTPS_PROXY``/``NO_PROXY``);
- a connection whose far end goes silent (a relay that stops forwarding) ends in 255 within
  the documented bound;
- streams silent for 10x the runtime's idle timeout live on (podexec restarted with a 3 s
  ``--stream-idle-timeout``, as containerd's ``stream_idle_timeout``).
"""

from __future__ import annotations

import json
import os
import pty
import secrets
import subprocess
import time
import urllib.parse
from typing import TYPE_CHECKING

import pytest

from devcluster.client import JSON, Cluster, wait_for
from devcluster.workloads import (
    DEFAULT_NODES,
    KUBEXEC,
    kubexec_env,
    kubexec_rbac,
    processes_with,
    run_kubexec,
    running_pods,
    statefulset,
    wait_gone,
)
from tests.e2e.podexec_idle import short_stream_idle_timeout
from tests.tcpproxy import ConnectProxy, Relay

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(300)

JOB = "k8smpi.dev/job"
IDLE_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def ns(cluster: Cluster) -> Iterator[str]:
    """Workers ``w-0``/``w-1`` behind ``hpc``; an Indexed Job ``ij`` (hostnames ij-0, ij-1 in
    subdomain ``jsvc``) of job ``ij1``; a decoy ``aaa`` with hostname ij-0 in ``jsvc`` that
    sorts before the job's pods; a launcher pod of job ``ij1`` with a service account that
    may exec into any pod of the namespace (the RBAC the indexed overlay had)."""
    name = cluster.create_namespace("kxhard")
    try:
        objects = statefulset("w", service="hpc", replicas=2)
        objects += [
            indexed_job("ij", "jsvc", 2, labels={JOB: "ij1"}),
            bare_pod("aaa", hostname="ij-0", subdomain="jsvc", labels={"app": "decoy"}),
            *kubexec_rbac("launcher"),
            bare_pod("launcher", labels={JOB: "ij1"}, service_account="launcher"),
        ]
        cluster.apply(objects, name)
        running_pods(cluster, name, "app=w", 2)
        running_pods(cluster, name, "app=ij", 2)
        running_pods(cluster, name, "app=decoy", 1)
        running_pods(cluster, name, f"{JOB}=ij1,!job-name", 1)
        yield name
    finally:
        cluster.delete_namespace(name)


def indexed_job(name: str, service: str, count: int, *, labels: dict[str, str]) -> JSON:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "completionMode": "Indexed",
            "completions": count,
            "parallelism": count,
            "template": {
                "metadata": {"labels": {"app": name, **labels}},
                "spec": {
                    "subdomain": service,
                    "restartPolicy": "Never",
                    "nodeSelector": DEFAULT_NODES,
                    "containers": [{"name": "main", "image": "k8smpi/cpu:dev"}],
                },
            },
        },
    }


def bare_pod(name: str, *, labels: dict[str, str], service_account: str | None = None,
             **spec: str) -> JSON:  # fmt: skip
    pod_spec: JSON = {
        "nodeSelector": DEFAULT_NODES,
        "containers": [{"name": "main", "image": "k8smpi/cpu:dev"}],
        **spec,
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": pod_spec,
    }


def kx(cluster: Cluster, ns: str, *args: str, **kw: object) -> subprocess.CompletedProcess[bytes]:
    return run_kubexec(cluster, "--namespace", ns, *args, **kw)  # type: ignore[arg-type]


def exec_targets(cluster: Cluster, ns: str, since: int) -> list[str]:
    return [e["objectRef"]["name"] for e in cluster.exec_events(ns)[since:]]


def settled_exec_targets(cluster: Cluster, ns: str, since: int) -> list[str]:
    time.sleep(1)  # the audit log is written after the response
    return exec_targets(cluster, ns, since)


# -- point 1: only the job's pods ---------------------------------------------------------------


def test_a_decoy_with_the_jobs_host_name_never_gets_the_command(cluster: Cluster, ns: str) -> None:
    before = len(cluster.exec_events(ns))
    proc = kx(cluster, ns, "--job-selector", f"{JOB}=ij1", "ij-0.jsvc", "echo ran")
    assert (proc.returncode, proc.stdout) == (0, b"ran\n"), proc.stderr
    [target] = settled_exec_targets(cluster, ns, before)
    assert target.startswith("ij-0-"), target
    # Without a scope the name is ambiguous here: refused, and no exec at all.
    before = len(cluster.exec_events(ns))
    proc = kx(cluster, ns, "ij-0.jsvc", "echo ran")
    assert (proc.returncode, proc.stdout) == (255, b"")
    [line] = proc.stderr.decode().splitlines()
    assert line.startswith("kubexec: host ij-0.jsvc matches 2 pods in namespace"), line
    assert "aaa" in line
    assert settled_exec_targets(cluster, ns, before) == []


def test_in_a_pod_the_scope_is_its_own_job(cluster: Cluster, ns: str) -> None:
    # kubexec run inside the launcher pod (podexec gives it the pod's service-account token):
    # no selector given, it takes its own pod's k8smpi.dev/job label.
    before = len(cluster.exec_events(ns))
    proc = cluster.kubectl(
        "exec", "-n", ns, "launcher", "--", str(KUBEXEC), "ij-0.jsvc", "echo from-launcher",
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == b"from-launcher"
    targets = sorted(settled_exec_targets(cluster, ns, before))
    assert len(targets) == 2, targets  # kubectl's exec into the launcher, kubexec's into ij-0
    assert targets[0].startswith("ij-0-"), targets
    assert targets[1] == "launcher"
    # A pod outside the job, named directly: refused with one line, not exec'd.
    before = len(cluster.exec_events(ns))
    proc = cluster.kubectl(
        "exec", "-n", ns, "launcher", "--", str(KUBEXEC), "aaa", "echo no", check=False
    )
    assert proc.returncode == 255
    assert f"pod {ns}/aaa is not one of this job's pods" in proc.stderr.decode()
    assert settled_exec_targets(cluster, ns, before) == ["launcher"]


# -- point 5: the request line fits any proxy ---------------------------------------------------


def orted_command(size: int, token: str) -> str:
    words = ["orted", "-mca", "ess", '"env"', "-mca", "ess_base_jobid", f'"{token}"']
    i = 0
    while len(" ".join(words)) < size:
        words += ["-mca", f"btl_tcp_param_{i}", f'"value;{i}:tcp://10.0.{i % 250}.7:5{i % 9}441"']
        i += 1
    return " ".join(words)


@pytest.mark.parametrize("forward", [False, True])
def test_a_32_kib_orted_command_and_a_small_request(
    cluster: Cluster, ns: str, forward: bool
) -> None:
    token = secrets.token_hex(8)
    daemon = orted_command(32 * 1024, token)
    before = len(cluster.exec_events(ns))
    # The orted line, whole, as a here-document: the remote prints back exactly what it got.
    command = f"cat <<'EOF'\n{daemon}\nEOF"
    proc = kx(cluster, ns, "w-0", command, input=b"" if forward else None)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == daemon.encode() + b"\n"
    [event] = wait_for(
        lambda: cluster.exec_events(ns)[before:] or None, timeout=10, what="the exec's audit event"
    )
    uri = event["requestURI"]
    assert len(uri) < 2048, len(uri)  # proxies commonly cap the request line at 8 KiB
    assert token not in urllib.parse.unquote(uri)  # the command is not in the audit log


# -- point 10: an HTTP proxy ------------------------------------------------------------------


def proxied_kubeconfig(cluster: Cluster, tmp_path: Path, *, server: str, proxy_url: str | None
                       ) -> Path:  # fmt: skip
    doc = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
    for entry in doc["clusters"]:
        entry["cluster"]["server"] = server
        if proxy_url:
            entry["cluster"]["proxy-url"] = proxy_url
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(doc))
    return path


def apiserver_port(cluster: Cluster) -> int:
    doc = json.loads(cluster.kubectl("config", "view", "--raw", "-o", "json").stdout)
    return int(urllib.parse.urlsplit(doc["clusters"][0]["cluster"]["server"]).port or 443)


def test_kubexec_through_an_http_proxy(cluster: Cluster, ns: str, tmp_path: Path) -> None:
    port = apiserver_port(cluster)
    # "kubernetes" is in the apiserver's certificate and resolves nowhere but at the proxy.
    proxy = ConnectProxy(hosts={"kubernetes": "127.0.0.1"})
    try:
        via_kubeconfig = proxied_kubeconfig(
            cluster, tmp_path, server=f"https://kubernetes:{port}", proxy_url=proxy.url
        )
        proc = kx(cluster, ns, "w-1", "echo via-proxy-url", env={"KUBECONFIG": str(via_kubeconfig)})
        assert (proc.returncode, proc.stdout) == (0, b"via-proxy-url\n"), proc.stderr
        plain = proxied_kubeconfig(
            cluster, tmp_path, server=f"https://kubernetes:{port}", proxy_url=None
        )
        env = {"KUBECONFIG": str(plain), "HTTPS_PROXY": proxy.url}
        proc = kx(cluster, ns, "w-1", "echo via-env", input=b"", env=env)
        assert (proc.returncode, proc.stdout) == (0, b"via-env\n"), proc.stderr
        assert proxy.requests == [f"CONNECT kubernetes:{port} HTTP/1.1"] * 2
        # NO_PROXY names the host: a direct connection, which cannot resolve the name.
        proc = kx(cluster, ns, "w-1", "true", env={**env, "NO_PROXY": "kubernetes"})
        assert proc.returncode == 255
        assert proc.stderr.decode().startswith("kubexec: ")
        assert len(proxy.requests) == 2
    finally:
        proxy.close()


# -- issue 10 item 5: dead peers noticed ----------------------------------------------------------


def test_a_far_end_gone_silent_ends_in_255_within_the_bound(
    cluster: Cluster, ns: str, tmp_path: Path
) -> None:
    port = apiserver_port(cluster)
    relay = Relay(("127.0.0.1", port))
    token = f"kx{secrets.token_hex(6)}"
    try:
        kubeconfig = proxied_kubeconfig(
            cluster, tmp_path, server=f"https://127.0.0.1:{relay.port}", proxy_url=None
        )
        proc = subprocess.Popen(
            # --reattach 0: a dead connection ends the call (with a window kubexec would try
            # to re-attach through the stalled relay until the window ran out).
            [str(KUBEXEC), "--namespace", ns, "--reattach", "0", "-o", "ServerAliveInterval=1",
             "-o", "ServerAliveCountMax=2", "w-0", f"KXT={token} exec sleep 300"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=kubexec_env(cluster, {"KUBECONFIG": str(kubeconfig)}),
        )  # fmt: skip
        try:
            wait_for(lambda: processes_with(token), timeout=20, what="the remote command")
            time.sleep(3)  # quiet but alive: pings answered, no false alarm
            assert proc.poll() is None
            relay.stall()  # no FIN, no RST: the path just stops carrying anything
            started = time.monotonic()
            rc = proc.wait(timeout=60)
            elapsed = time.monotonic() - started
        finally:
            proc.kill()
            proc.wait()
        assert rc == 255
        assert proc.stderr is not None
        [line] = proc.stderr.read().decode().splitlines()
        assert "no answer from the API server for 2 pings 1s apart" in line, line
        bound = (2 + 2) * 1.0  # (ServerAliveCountMax + 2) x ServerAliveInterval
        assert elapsed < bound + 5, f"{elapsed:.1f}s after the stall (bound {bound:.0f}s)"
    finally:
        relay.close()  # the apiserver now sees the close: the lifeline ends the command
    assert wait_gone(token, 15) == []


# -- issue 10 item 5: silent streams live ---------------------------------------------------------


@pytest.fixture(scope="module")
def short_idle(cluster: Cluster) -> Iterator[None]:
    """podexec with a 3 s stream idle timeout for this module's tests, then as before."""
    with short_stream_idle_timeout(cluster, IDLE_TIMEOUT_S):
        yield


QUIET_S = 10 * IDLE_TIMEOUT_S


@pytest.mark.restarts_cluster
def test_the_idle_timeout_is_real(cluster: Cluster, ns: str, short_idle: None) -> None:
    # Without keepalives the runtime ends a quiet stream: what kubexec must prevent. The API
    # server then reports Success; only the missing exit record shows the command never ended.
    quiet = f"sleep {3 * IDLE_TIMEOUT_S}; echo done"
    # --reattach 0: with a window kubexec re-attaches to a stream the runtime cut
    # (tests/unit/test_kubexec_reattach.py); here the cut itself is what is shown.
    proc = kx(cluster, ns, "--reattach", "0", "-o", "ServerAliveInterval=0", "w-1", quiet)
    assert (proc.returncode, proc.stdout) == (255, b""), proc.stderr
    [line] = proc.stderr.decode().splitlines()
    assert "the stream ended before the command did" in line, line


@pytest.mark.restarts_cluster
@pytest.mark.parametrize("mode", ["lifeline", "forward"])
def test_a_command_silent_for_10x_the_idle_timeout_completes(
    cluster: Cluster, ns: str, short_idle: None, mode: str
) -> None:
    command = (
        f"cat; sleep {QUIET_S}; echo done" if mode == "forward" else f"sleep {QUIET_S}; echo done"
    )
    proc = kx(
        cluster, ns, "-o", "ServerAliveInterval=1", "w-0", command,
        input=b"in-" if mode == "forward" else None, timeout=QUIET_S + 60,
    )  # fmt: skip
    expected = b"in-done\n" if mode == "forward" else b"done\n"
    assert (proc.returncode, proc.stdout) == (0, expected), proc.stderr


@pytest.mark.restarts_cluster
def test_a_quiet_terminal_session_lives(cluster: Cluster, ns: str, short_idle: None) -> None:
    leader, follower = pty.openpty()
    try:
        proc = subprocess.Popen(
            [str(KUBEXEC), "--namespace", ns, "-tt", "-o", "ServerAliveInterval=1", "w-1",
             f"sleep {QUIET_S}; echo done"],
            stdin=follower, stdout=follower, stderr=subprocess.PIPE,
            env=kubexec_env(cluster),
        )  # fmt: skip
        rc = proc.wait(timeout=QUIET_S + 60)
        os.set_blocking(leader, False)
        out = os.read(leader, 65536)
    finally:
        os.close(leader)
        os.close(follower)
    assert rc == 0, proc.stderr.read() if proc.stderr else b""
    assert b"done" in out
