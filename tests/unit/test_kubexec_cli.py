"""kubexec's glue without a cluster: exit codes, one-line errors, host -> pod resolution order,
mode choice, user mapping, retries and permission messages.

Fakes stand in only where the real world cannot produce the case on demand (a stream that ends
without a status, a 503, a 429 with Retry-After); everything else is tested end to end in
tests/e2e/test_kubexec.py.
"""

from __future__ import annotations

import os
import pwd
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
from k8smpi_runtime.kubexec import cli, failures, identity, resolve, retrying, session, sshargs

JSON = dict[str, Any]
NS = "team-a"


def pod(
    name: str,
    *,
    hostname: str | None = None,
    subdomain: str | None = None,
    ip: str = "10.0.0.1",
    phase: str = "Running",
    containers: tuple[str, ...] = ("main",),
    annotations: dict[str, str] | None = None,
) -> JSON:
    spec: JSON = {"containers": [{"name": c} for c in containers]}
    if hostname:
        spec["hostname"] = hostname
    if subdomain:
        spec["subdomain"] = subdomain
    return {
        "metadata": {"name": name, "namespace": NS, "annotations": annotations or {}},
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
        selector = dict(params or {}).get("fieldSelector", "")
        if selector.startswith("status.podIP="):
            ip = selector.split("=", 1)[1]
            return [p for p in self.pods if p["status"]["podIP"] == ip], "1"
        return list(self.pods), "1"


def find(api: FakeApi, host: str) -> JSON:
    return resolve.find_pod(api, hosts.parse_host(host), NS)


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


class _StreamWithoutStatus:
    """An exec stream cut before channel 3 spoke: what a dropped connection looks like."""

    protocol = kexec.V5
    can_close_stdin = True

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        self.target = kexec.ExecTarget("ns", "p")
        self.status = None

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
