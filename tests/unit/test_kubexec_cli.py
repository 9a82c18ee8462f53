"""kubexec's glue without a cluster: exit codes, one-line errors, host -> pod resolution order,
mode choice, user mapping, retries and permission messages.

Fakes stand in only where the real world cannot produce the case on demand (a stream that ends
without a status, a 503, a 429 with Retry-After); everything else is tested end to end in
tests/e2e/test_kubexec.py.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from k8smpi_runtime import hosts
from k8smpi_runtime.errors import (
    ApiError,
    ForbiddenError,
    NotFoundError,
    TransportError,
    UnauthorizedError,
    api_error,
)
from k8smpi_runtime.kube import exec as kexec
from k8smpi_runtime.kube.config import ClientConfig
from k8smpi_runtime.kubexec import cli, failures, identity, resolve, retrying, session, sshargs

JSON = dict[str, Any]
NS = "team-a"
CONFIG = ClientConfig(server="https://kube.test:6443", namespace=NS, source="test")


def pod(
    name: str,
    *,
    hostname: str | None = None,
    subdomain: str | None = None,
    ip: str = "10.0.0.1",
    phase: str = "Running",
    containers: tuple[str, ...] = ("main",),
    annotations: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
    host_network: bool = False,
) -> JSON:
    spec: JSON = {"containers": [{"name": c} for c in containers]}
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    if host_network:
        spec["hostNetwork"] = True
    meta = {"name": name, "namespace": NS, "annotations": annotations or {}, "labels": labels or {}}
    return {
        "metadata": meta,
        "spec": spec,
        "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]},
    }


@dataclass
class FakeApi:
    """Pods of one namespace by name; records each request as (verb, path, params)."""

    pods: list[JSON]
    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    fail: ApiError | None = None

    def get(self, path: str, params: Any = None) -> JSON:
        self.calls.append(("get", path, dict(params or {})))
        if self.fail:
            raise self.fail
        name = path.rsplit("/", 1)[1]
        for p in self.pods:
            if p["metadata"]["name"] == name:
                return p
        raise NotFoundError(f'pods "{name}" not found', status=404)

    def list(self, path: str, params: Any = None, *, limit: int = 500) -> tuple[list[JSON], str]:
        self.calls.append(("list", path, dict(params or {})))
        if self.fail:
            raise self.fail
        query = dict(params or {})
        items = list(self.pods)
        if query.get("labelSelector"):  # key=value only: what kubexec sends
            key, _, value = query["labelSelector"].partition("=")
            items = [p for p in items if p["metadata"]["labels"].get(key) == value]
        field, _, value = query.get("fieldSelector", "").partition("=")
        if field == "status.podIP":
            items = [p for p in items if p["status"]["podIP"] == value]
        elif field == "metadata.name":
            items = [p for p in items if p["metadata"]["name"] == value]
        return items, "1"


def find(api: FakeApi, host: str, scope: resolve.Scope | None = None) -> JSON:
    return resolve.find_pod(api, hosts.parse_host(host), NS, scope)


JOB = resolve.Scope("k8smpi.dev/job=idxjob", "test")
MINE = {"k8smpi.dev/job": "idxjob"}


# -- resolution -------------------------------------------------------------------------------


def test_a_pod_name_costs_one_get() -> None:
    api = FakeApi([pod("w-0", hostname="w-0", subdomain="hpc")])
    assert find(api, "w-0")["metadata"]["name"] == "w-0"
    assert find(api, "w-0.hpc")["metadata"]["name"] == "w-0"
    assert find(api, f"w-0.hpc.{NS}.svc.cluster.local.")["metadata"]["name"] == "w-0"
    assert [c[0] for c in api.calls] == ["get", "get", "get"]


def test_indexed_job_hostname_falls_back_to_one_list() -> None:
    api = FakeApi([pod("job-1-x7k2p", hostname="job-1", subdomain="svc1")])
    assert find(api, "job-1.svc1")["metadata"]["name"] == "job-1-x7k2p"
    assert [c[0] for c in api.calls] == ["get", "list"]


def test_a_pod_in_another_subdomain_is_not_taken() -> None:
    api = FakeApi([pod("w-0", subdomain="other"), pod("w-0-abc", hostname="w-0", subdomain="hpc")])
    assert find(api, "w-0.hpc")["metadata"]["name"] == "w-0-abc"


def test_ip_uses_a_field_selector_then_a_plain_list() -> None:
    dual = pod("b", ip="10.0.0.8")
    dual["status"]["podIPs"].append({"ip": "fd00::8"})
    api = FakeApi([pod("a", ip="10.0.0.7"), dual])
    assert find(api, "10.0.0.7")["metadata"]["name"] == "a"
    assert api.calls == [
        ("list", f"/api/v1/namespaces/{NS}/pods", {"fieldSelector": "status.podIP=10.0.0.7"})
    ]
    api.calls.clear()
    # A secondary address (dual stack): the selector misses, the plain list finds it.
    assert find(api, "[fd00:0::8]")["metadata"]["name"] == "b"
    assert [c[0] for c in api.calls] == ["list", "list"]


# -- point 1: only the job's pods ----------------------------------------------------------


def test_a_decoy_with_the_jobs_hostname_is_never_taken() -> None:
    # The job: Indexed Job pods (hostname cnode-0, subdomain hpc). The decoy: a pod that sorts
    # first, with the same hostname and subdomain, in the same namespace.
    decoy = pod("aaa", hostname="cnode-0", subdomain="hpc", labels={"app": "decoy"})
    worker = pod("idxjob-cnode-0-x7k2p", hostname="cnode-0", subdomain="hpc", labels=MINE)
    api = FakeApi([decoy, worker])
    assert find(api, "cnode-0.hpc", JOB)["metadata"]["name"] == "idxjob-cnode-0-x7k2p"
    assert all(c[2].get("labelSelector") == JOB.selector for c in api.calls)
    # A decoy named like the host itself (the GET path) is not taken either.
    named = pod("cnode-0", subdomain="hpc", labels={"app": "decoy"})
    api = FakeApi([named, worker])
    assert find(api, "cnode-0.hpc", JOB)["metadata"]["name"] == "idxjob-cnode-0-x7k2p"
    with pytest.raises(resolve.PodNotFound, match="is not one of this job's pods"):
        find(FakeApi([named]), "cnode-0", JOB)


def test_without_a_scope_an_ambiguous_host_is_refused() -> None:
    decoy = pod("aaa", hostname="cnode-0", subdomain="hpc")
    worker = pod("idxjob-cnode-0-x7k2p", hostname="cnode-0", subdomain="hpc")
    with pytest.raises(resolve.AmbiguousHost) as info:
        find(FakeApi([decoy, worker]), "cnode-0.hpc")
    assert str(info.value) == (
        f"host cnode-0.hpc matches 2 pods in namespace {NS} (aaa, idxjob-cnode-0-x7k2p); "
        "give the pod name, or narrow with --job-selector"
    )
    # A pod being deleted does not make it ambiguous: the live one is meant.
    decoy["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert (
        find(FakeApi([decoy, worker]), "cnode-0.hpc")["metadata"]["name"]
        == worker["metadata"]["name"]
    )


def test_host_network_pods_never_match_an_ip() -> None:
    node = pod("node-exporter-x", ip="10.0.0.9", host_network=True)
    api = FakeApi([node, pod("w-1", ip="10.0.0.10")])
    with pytest.raises(resolve.PodNotFound, match=r"no pod with IP 10\.0\.0\.9"):
        find(api, "10.0.0.9")
    assert find(api, "10.0.0.10")["metadata"]["name"] == "w-1"


def test_the_scope_in_a_pod_is_its_own_job_label() -> None:
    claims = {"kubernetes.io": {"namespace": NS, "pod": {"name": "launcher-x", "uid": "u"}}}
    payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    token = f"e30.{payload}.sig"
    me = pod("launcher-x", labels={"k8smpi.dev/job": "idxjob"})
    api = FakeApi([me])
    scope = resolve.scope_for(api, explicit=None, in_cluster=True, token=token)
    assert scope.selector == "k8smpi.dev/job=idxjob"
    assert api.calls == [("get", f"/api/v1/namespaces/{NS}/pods/launcher-x", {})]
    explicit = resolve.scope_for(api, explicit="app=x", in_cluster=True, token=token)
    assert explicit.selector == "app=x"
    assert resolve.scope_for(api, explicit=None, in_cluster=False, token=token).selector is None
    unlabelled = FakeApi([pod("launcher-x")])
    assert (
        resolve.scope_for(unlabelled, explicit=None, in_cluster=True, token=token).selector is None
    )


@pytest.mark.parametrize("host", ["a/b", "x%2f..", "a?b", "pod_1", "../pods"])
def test_host_words_that_cannot_be_names_never_reach_a_url(host: str) -> None:
    with pytest.raises(hosts.HostError):
        hosts.parse_host(host)


def test_url_path_parts_are_quoted() -> None:
    api = FakeApi([])
    with pytest.raises(resolve.PodNotFound):
        resolve.find_pod(api, hosts.parse_host("w-0"), "ns/../kube-system?x=1")
    assert api.calls[0][1] == "/api/v1/namespaces/ns%2F..%2Fkube-system%3Fx%3D1/pods/w-0"
    url = kexec.exec_url(CONFIG, kexec.ExecTarget("a/b", "p?q"), ["true"], stdin=False, tty=False)
    assert "/api/v1/namespaces/a%2Fb/pods/p%3Fq/exec?" in url


def test_missing_and_not_running_pods_are_named() -> None:
    api = FakeApi([pod("w-0", phase="Pending")])
    with pytest.raises(resolve.PodNotFound, match=f"no pod named w-9 .* in namespace {NS}"):
        find(api, "w-9")
    with pytest.raises(resolve.PodNotRunning, match=f"pod {NS}/w-0 .*phase Pending"):
        find(api, "w-0")


def test_forbidden_names_the_missing_permission() -> None:
    message = (
        'pods "w-0" is forbidden: User "system:serviceaccount:team-a:launcher" cannot get '
        'resource "pods" in API group "" in the namespace "team-a"'
    )
    api = FakeApi([], fail=ForbiddenError(message, status=403))
    with pytest.raises(failures.AccessDenied) as info:
        find(api, "w-0")
    assert str(info.value).startswith(
        "service account team-a/launcher may not get pods in namespace team-a"
    )
    assert failures.RBAC_NEEDED in str(info.value)


def test_explain_exec_refusal_and_expired_token() -> None:
    message = (
        'pods "w-0" is forbidden: User "system:serviceaccount:ns1:no-rbac" cannot create '
        'resource "pods/exec" in API group "" in the namespace "ns1"'
    )
    err = failures.explain(
        ForbiddenError(message, status=403), verb="create", resource="pods/exec", namespace="ns1"
    )
    assert "service account ns1/no-rbac may not create pods/exec in namespace ns1" in str(err)
    user = failures.explain(
        ForbiddenError('User "alice" cannot get resource "pods"', status=403),
        verb="get",
        resource="pods",
        namespace="ns1",
    )
    assert "user 'alice' may not get pods in namespace ns1" in str(user)
    expired = failures.explain(
        UnauthorizedError("Unauthorized", status=401), verb="get", resource="pods", namespace="x"
    )
    assert "rejected kubexec's credentials" in str(expired)
    other = ApiError("boom", status=500)
    assert failures.explain(other, verb="get", resource="pods", namespace="x") is other


@pytest.mark.parametrize(
    ("host", "explicit", "in_cluster", "expected"),
    [
        ("w-0.hpc.from-fqdn.svc", "flag", "sa", "from-fqdn"),
        ("w-0.hpc", "flag", "sa", "flag"),
        ("w-0", None, "sa", "sa"),
        ("w-0", None, None, "context"),
        ("10.0.0.1", None, None, "context"),
    ],
)
def test_namespace_precedence(
    host: str, explicit: str | None, in_cluster: str | None, expected: str
) -> None:
    ref = hosts.parse_host(host)
    got = resolve.namespace_for(ref, explicit=explicit, in_cluster=in_cluster, configured="context")
    assert got == expected


def test_container_choice() -> None:
    p = pod("w", containers=("first", "second"))
    assert resolve.container_of(p, None) == "first"
    assert resolve.container_of(p, "second") == "second"
    p["metadata"]["annotations"] = {resolve.DEFAULT_CONTAINER_ANNOTATION: "second"}
    assert resolve.container_of(p, None) == "second"


# -- exit codes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ({"status": "Success"}, 0),
        (
            {
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "42"}]},
            },
            42,
        ),
        (
            {
                "status": "Failure",
                "reason": "NonZeroExitCode",
                "details": {"causes": [{"reason": "ExitCode", "message": "255"}]},
            },
            255,
        ),
    ],
)
def test_status_to_exit_code(status: JSON, code: int) -> None:
    assert kexec.exit_code(status) == code


@pytest.mark.parametrize(
    "status",
    [
        {},
        {"status": "Failure", "message": 'exec: "nope": executable file not found in $PATH'},
        {"status": "Failure", "reason": "NonZeroExitCode", "details": {"causes": []}},
        {
            "status": "Failure",
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": "x"}]},
        },
    ],
)
def test_a_status_without_exit_code_is_never_success(status: JSON) -> None:
    with pytest.raises(kexec.ExecFailed):
        kexec.exit_code(status)


@pytest.mark.parametrize("code", ["0", "256", "-1", "512", " 7x", ""])
def test_a_failure_never_maps_to_zero(code: str) -> None:
    # "256" would be 0 as a process exit status; "0" on a Failure is a contradiction.
    status = {
        "status": "Failure",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code}]},
    }
    with pytest.raises(kexec.ExecFailed):
        kexec.exit_code(status)


class _StreamWithoutStatus:
    """An exec stream cut before channel 3 spoke: what a dropped connection looks like."""

    protocol = kexec.V5
    can_close_stdin = True

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        self.target = kexec.ExecTarget("ns", "p")
        self.status = None
        self.presumed_dead = None

    def write_stdin(self, data: bytes) -> None:
        pass

    def start_heartbeat(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def frames(self) -> Any:
        yield kexec.STDOUT, b"partial"

    exit_code = kexec.ExecStream.exit_code

    def abort(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_cut_stream_is_a_failure_not_zero(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(kexec, "ExecStream", _StreamWithoutStatus)
    out = tmp_path / "out"
    with out.open("wb") as f:
        request = session.Request(
            target=resolve.Target("ns", "p", None),
            command="true",
            identity=identity.Identity(),
            mode="lifeline",
        )
        with pytest.raises(TransportError, match="without an exit status"):
            session.run(
                None,  # type: ignore[arg-type]
                request,
                policy=retrying.Policy(attempts=1),
                streams=session.Streams(stdout=f.fileno()),
            )
    assert out.read_bytes() == b"partial"


# -- main(): one line, exit 255, stdout untouched ----------------------------------------------


def run_main(capfd: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, list[str]]:
    code = cli.main(list(argv))
    out, err = capfd.readouterr()
    return code, out, err.splitlines()


def test_usage_error_is_one_line_and_255(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capfd, "-Z", "host")
    assert (code, out) == (255, "")
    assert len(err) == 1
    assert err[0].startswith("kubexec: unknown option -Z")


def test_help_goes_to_stdout_and_version_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capfd, "--help")
    assert code == 0
    assert out.startswith("usage: kubexec")
    code, out, err = run_main(capfd, "-V")
    assert (code, out) == (0, "")
    assert err[0].startswith("kubexec ")


def test_bad_host_is_one_line(capfd: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(capfd, "a.b.c.d.e", "true")
    assert (code, out) == (255, "")
    assert len(err) == 1
    assert "svc" in err[0]


def test_no_credentials_is_one_line(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBEXEC_KUBECONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    code, out, err = run_main(capfd, "-n", "w-0", "true")
    assert (code, out) == (255, "")
    assert err == [
        "kubexec: no Kubernetes credentials: not in a pod (KUBERNETES_SERVICE_HOST unset), "
        "no KUBECONFIG and no ~/.kube/config"
    ]


def test_unexpected_errors_are_one_line_unless_verbose(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any) -> int:
        raise RuntimeError("oops")

    monkeypatch.setattr(cli, "run", broken)
    code, out, err = run_main(capfd, "-n", "w-0", "true")
    assert (code, out) == (255, "")
    assert err == ["kubexec: internal error: RuntimeError: oops (run with -v for details)"]
    code, out, err = run_main(capfd, "-v", "-n", "w-0", "true")
    assert code == 255
    assert any(line.startswith("Traceback") for line in err)


def test_quiet_keeps_the_error_line(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def denied(*_args: Any) -> int:
        raise failures.AccessDenied("service account a/b may not get pods in namespace a")

    monkeypatch.setattr(cli, "run", denied)
    code, _, err = run_main(capfd, "-q", "-x", "-n", "w-0", "true")
    assert code == 255
    assert err == ["kubexec: service account a/b may not get pods in namespace a"]


def test_log_file_takes_the_diagnostics(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(cli, "run", lambda *_a: (_ for _ in ()).throw(TransportError("cut")))
    log = tmp_path / "kubexec.log"
    code, out, err = run_main(capfd, "-E", str(log), "-n", "w-0", "true")
    assert (code, out, err) == (255, "", [])
    assert log.read_text() == "kubexec: cut\n"


def test_signal_exits_255(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*_args: Any) -> int:
        os.kill(os.getpid(), 15)
        raise AssertionError("SIGTERM should have interrupted")

    monkeypatch.setattr(cli, "run", interrupted)
    code, out, _ = run_main(capfd, "-n", "w-0", "true")
    assert (code, out) == (255, "")


def test_remote_code_passes_through(monkeypatch: pytest.MonkeyPatch) -> None:
    for remote_code in (0, 1, 42, 255):
        monkeypatch.setattr(cli, "run", lambda *_a, c=remote_code: c)
        assert cli.main(["-n", "w-0", "true"]) == remote_code


# -- mode and user ----------------------------------------------------------------------------


def inv(*argv: str) -> sshargs.Invocation:
    return sshargs.parse(list(argv), {})


@pytest.fixture
def pipe_fd() -> Any:
    r, w = os.pipe()
    yield r
    os.close(r)
    os.close(w)


@pytest.fixture
def null_fd() -> Any:
    fd = os.open(os.devnull, os.O_RDONLY)
    yield fd
    os.close(fd)


@pytest.fixture
def tty_fd() -> Any:
    leader, follower = os.openpty()
    yield follower
    os.close(leader)
    os.close(follower)


def test_modes(pipe_fd: int, null_fd: int, tty_fd: int) -> None:
    assert cli.choose_mode(inv("h", "cmd"), stdin_fd=null_fd) == "lifeline"
    assert cli.choose_mode(inv("h", "cmd"), stdin_fd=pipe_fd) == "forward"
    assert cli.choose_mode(inv("-n", "h", "cmd"), stdin_fd=pipe_fd) == "lifeline"
    assert cli.choose_mode(inv("--no-forward-stdin", "h", "c"), stdin_fd=pipe_fd) == "lifeline"
    assert cli.choose_mode(inv("h", "cmd"), stdin_fd=tty_fd) == "forward"
    assert cli.choose_mode(inv("h"), stdin_fd=tty_fd) == "tty"
    assert cli.choose_mode(inv("-t", "h", "cmd"), stdin_fd=tty_fd) == "tty"
    assert cli.choose_mode(inv("-T", "h"), stdin_fd=tty_fd) == "forward"
    assert cli.choose_mode(inv("-t", "h", "cmd"), stdin_fd=pipe_fd) == "forward"
    assert cli.choose_mode(inv("-tt", "h", "cmd"), stdin_fd=pipe_fd) == "tty"
    assert cli.choose_mode(inv("h"), stdin_fd=pipe_fd) == "forward"
    assert session.stdin_is_null(null_fd)
    assert not session.stdin_is_null(pipe_fd)


def test_default_user_is_kubexecs_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 100)
    monkeypatch.setattr(os, "getgroups", lambda: [100, 27])
    assert identity.target(None) == identity.Identity(uid=1000, gid=100, groups=(27, 100))
    monkeypatch.setattr(os, "getuid", lambda: 0)
    assert identity.target(None) == identity.Identity()  # root: the container's user


def test_explicit_users() -> None:
    assert identity.target("1234") == identity.Identity(uid=1234)
    root = pwd.getpwuid(0)
    assert identity.target(root.pw_name).uid == 0
    with pytest.raises(identity.UnknownUserError, match="numeric uid"):
        identity.target("no-such-user-kx")


# -- retries ----------------------------------------------------------------------------------


def test_transient_failures_are_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrying, "backoff", lambda _e, _n: 0.0)
    answers: list[Exception] = [
        api_error(503, {"kind": "Status", "message": "etcd leader changed"}),
        api_error(429, None, "slow down", retry_after=0),
    ]

    def flaky() -> str:
        if answers:
            raise answers.pop(0)
        return "ok"

    assert retrying.call(flaky, retrying.Policy(attempts=3), what="t") == "ok"


def test_refused_is_transient_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(retrying, "backoff", lambda _e, _n: 0.0)
    tries = 0

    def refused() -> str:
        nonlocal tries
        tries += 1
        try:
            raise ConnectionRefusedError(111, "refused")
        except ConnectionRefusedError as e:
            raise TransportError("refused") from e

    with pytest.raises(TransportError):
        retrying.call(refused, retrying.Policy(attempts=4), what="t")
    assert tries == 4


@pytest.mark.parametrize("status", [401, 403, 404, 400])
def test_permanent_failures_fail_at_once(status: int) -> None:
    tries = 0

    def refused() -> str:
        nonlocal tries
        tries += 1
        raise api_error(status, None, "no")

    with pytest.raises(ApiError):
        retrying.call(refused, retrying.Policy(attempts=5), what="t")
    assert tries == 1


# -- point 11: closing inherited fds, by what is open ---------------------------------------------


def test_inherited_fds_are_closed_by_listing_not_by_rlimit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Containers often set RLIMIT_NOFILE to 2**30: a loop (or closerange where close_range(2)
    # is filtered) to it takes seconds per call. Only what is open is closed.
    monkeypatch.setattr(os, "sysconf", lambda _name: 2**30)
    ranges: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "closerange", lambda lo, hi: ranges.append((lo, hi)))
    closed: list[int] = []
    real_close = os.close

    def close(fd: int) -> None:
        closed.append(fd)  # pytest's own descriptors stay open: only ours are closed
        if fd in (r, w, high):
            real_close(fd)

    monkeypatch.setattr(os, "close", close)
    r, w = os.pipe()
    high = os.dup2(w, 1000)
    cli._close_inherited_fds()
    assert ranges == []
    assert {r, w, high} <= set(closed)
    assert len(closed) < 100
    for fd in (r, w, high):
        with pytest.raises(OSError):
            os.fstat(fd)


@pytest.mark.timeout(60)
def test_kubexec_closes_what_it_inherited() -> None:
    # The real function in a child whose fd 7 is inherited, at the highest limit allowed here.
    code = (
        "import os, resource\n"
        "hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))\n"
        "os.dup2(2, 7)\n"
        "from k8smpi_runtime.kubexec import cli\n"
        "cli._close_inherited_fds()\n"
        "try:\n    os.fstat(7)\nexcept OSError:\n    print('closed')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "closed\n"


# -- keepalive options ------------------------------------------------------------------------


def test_server_alive_options() -> None:
    default = inv("h", "cmd")
    assert (default.server_alive_interval, default.server_alive_count_max) == (30.0, 3)
    set_ = inv("-o", "ServerAliveInterval=2", "-oServerAliveCountMax=5", "h", "cmd")
    assert (set_.server_alive_interval, set_.server_alive_count_max) == (2.0, 5)
    assert inv("-o", "serveraliveinterval 1m", "h").server_alive_interval == 60.0
    assert inv("-o", "ServerAliveInterval=0", "h").server_alive_interval == 0.0  # off
    with pytest.raises(sshargs.UsageError, match="ServerAliveCountMax=0"):
        inv("-o", "ServerAliveCountMax=0", "h")
    assert inv("--job-selector", "a=b", "h").job_selector == "a=b"
    assert sshargs.parse(["h"], {"KUBEXEC_SELECTOR": "k8smpi.dev/job=x"}).job_selector == (
        "k8smpi.dev/job=x"
    )


@pytest.mark.parametrize(
    ("argv", "window"),
    [
        (["-n", "w-0", "true"], 45.0),  # lifeline (MPI launchers): the default window
        (["--reattach", "9", "-n", "w-0", "true"], 9.0),
        (["--reattach", "9", "w-0", "cat"], 0.0),  # stdin forwarded: no re-attach (yet)
    ],
)
def test_only_lifeline_calls_reattach(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, pipe_fd: int, argv: list[str], window: float
) -> None:
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "x",
            "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "n"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
        })
    )  # fmt: skip
    seen: list[session.Request] = []

    def fake_run(_cfg: Any, request: session.Request, **_kw: Any) -> int:
        seen.append(request)
        return 0

    monkeypatch.setattr(session, "run", fake_run)
    monkeypatch.setattr(os, "isatty", lambda _fd: False)
    stdin = os.dup(0)
    os.dup2(pipe_fd, 0)  # a pipe: forwarded unless -n
    try:
        env = {"KUBECONFIG": str(kubeconfig)}
        assert cli.run(sshargs.parse(argv, env), env) == 0
    finally:
        os.dup2(stdin, 0)
        os.close(stdin)
    assert [r.reattach for r in seen] == [window]
