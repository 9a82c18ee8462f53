"""The hostfile-gen command: outputs, documented exit statuses, one-line errors."""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import pytest

from k8smpi_runtime import selection
from k8smpi_runtime.errors import TransportError
from k8smpi_runtime.hostfile import cli
from k8smpi_runtime.kube.rest import Api
from tests.unit.fakeapi import FakeApi
from tests.unit.podfactory import make_pod, sts_pod

STS_PATH = "/apis/apps/v1/namespaces/ns1/statefulsets/cnode"
PODS = "/api/v1/namespaces/ns1/pods"


def cluster(replicas: int = 3, pods: int = 3, **pod_kw: object) -> FakeApi:
    sts = {
        "metadata": {"name": "cnode", "uid": "uid-sts-cnode"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "cnode"}}},
    }
    items = [sts_pod("cnode", i, gpus=4 - i, **pod_kw) for i in range(pods)]
    return FakeApi(objects={STS_PATH: sts}, pods=items)


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch) -> FakeApi:
    fake = cluster()
    use(monkeypatch, fake)
    return fake


def use(monkeypatch: pytest.MonkeyPatch, fake: FakeApi) -> None:
    def connect(args: argparse.Namespace) -> Api:
        if args.namespace:
            fake.config.namespace = args.namespace
        return fake.as_api()

    monkeypatch.setattr(selection, "connect", connect)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("POD_NAME", raising=False)
    monkeypatch.delenv("K8SMPI_POD_NAME", raising=False)


def test_stdout(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--statefulset", "cnode", "--no-header"]) == 0
    assert gc.isenabled()  # paused for the run only
    out, err = capsys.readouterr()
    assert out == "cnode-0 slots=4\ncnode-1 slots=3\ncnode-2 slots=2\n"
    assert err == ""
    assert api.closed
    assert [m for m, _ in api.calls] == ["GET", "LIST"]


def test_output_file_rerun_identical(api: FakeApi, tmp_path: Path) -> None:
    path = tmp_path / "hostfile"
    assert cli.main(["--statefulset", "cnode", "-f", "hydra", "-o", str(path)]) == 0
    first = path.read_bytes()
    assert first.endswith(b"cnode-0:4\ncnode-1:3\ncnode-2:2\n")
    assert b"# Format: hydra. From: statefulset cnode in namespace ns1." in first
    assert cli.main(["--statefulset", "cnode", "-f", "hydra", "-o", str(path)]) == 0
    assert path.read_bytes() == first


def test_refusal_leaves_the_existing_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "hostfile"
    path.write_text("previous\n")
    use(monkeypatch, cluster(replicas=3, pods=2))
    assert cli.main(["--statefulset", "cnode", "-o", str(path)]) == cli.EXIT_REFUSED
    err = capsys.readouterr().err
    assert err == (
        "hostfile-gen: statefulset cnode expects 3 pods, only 2 exist; missing: cnode-2: "
        "refusing a partial hostfile\n"
    )
    assert path.read_text() == "previous\n"
    use(monkeypatch, cluster(pods=3, node=None))
    assert cli.main(["--statefulset", "cnode", "-o", str(path)]) == cli.EXIT_REFUSED
    assert "not scheduled yet" in capsys.readouterr().err
    assert path.read_text() == "previous\n"
    assert cli.main(["--statefulset", "absent", "-o", str(path)]) == cli.EXIT_REFUSED
    assert (
        capsys.readouterr().err == "hostfile-gen: statefulset absent not found in namespace ns1\n"
    )
    assert cli.main(["-l", "app=none", "-o", str(path)]) == cli.EXIT_REFUSED
    assert capsys.readouterr().err == (
        "hostfile-gen: no pods match pods matching app=none in namespace ns1\n"
    )
    assert path.read_text() == "previous\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hostfile"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "one of the arguments"),
        (["--statefulset", "a", "--max-slots", "lots"], "--max-slots takes a number"),
        (["--statefulset", "a", "--slots", "0"], "--slots must be at least 1"),
        (["-l", "app in ("], "malformed label selector"),
        (["--statefulset", "a", "--names", "dns"], "invalid choice"),
        (["--hostfile", "/nonexistent/hostfile"], "cannot read hostfile"),
        (["--statefulset", "a", "--configmap", ":k"], "no ConfigMap name"),
    ],
)
def test_usage_errors(
    api: FakeApi, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_denied_and_unreachable(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    api.forbid.add(STS_PATH)
    assert cli.main(["--statefulset", "cnode"]) == cli.EXIT_DENIED
    assert capsys.readouterr().err == "hostfile-gen: API access denied: forbidden\n"

    def refuse(*args: object, **kw: object) -> object:
        raise TransportError("API server https://fake:6443 refused the connection")

    monkeypatch.setattr(api, "list", refuse)
    assert cli.main(["-l", "app=cnode"]) == cli.EXIT_API
    err = capsys.readouterr().err
    assert err == "hostfile-gen: API server https://fake:6443 refused the connection\n"


def test_verbose_shows_the_traceback(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--statefulset", "absent", "-v"]) == cli.EXIT_REFUSED
    err = capsys.readouterr().err
    assert "Traceback" in err
    assert err.endswith("hostfile-gen: statefulset absent not found in namespace ns1\n")


def test_output_error(api: FakeApi, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "missing-dir" / "hostfile"
    assert cli.main(["--statefulset", "cnode", "-o", str(target)]) == cli.EXIT_OUTPUT
    assert capsys.readouterr().err.startswith("hostfile-gen: cannot write ")


def test_configmap_only_prints_nothing(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--statefulset", "cnode", "--configmap", "hf:hosts"]) == 0
    assert capsys.readouterr().out == ""
    data = api.objects["/api/v1/namespaces/ns1/configmaps/hf"]["data"]
    assert data["hosts"].endswith("cnode-2 slots=2\n")
    assert cli.main(["--statefulset", "cnode", "--configmap", "hf:hosts", "-o", "-"]) == 0
    assert capsys.readouterr().out == data["hosts"]


def test_launcher_from_the_environment(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("HOSTNAME", "cnode-2")
    assert cli.main(["--statefulset", "cnode", "--no-header"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "cnode-2 slots=2"
    assert cli.main(["--statefulset", "cnode", "--no-header", "--launcher", "exclude"]) == 0
    assert "cnode-2" not in capsys.readouterr().out


def test_pods_and_namespace(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = FakeApi(
        pods=[make_pod("b-10", gpus=1, namespace="team"), make_pod("b-9", gpus=2, namespace="team")]
    )
    use(monkeypatch, fake)
    assert cli.main(["--pods", "b-10,b-9", "-n", "team", "--no-header", "-f", "expanded"]) == 0
    assert capsys.readouterr().out == "b-10\nb-9\nb-9\n"
    assert fake.calls == [("LIST", "/api/v1/namespaces/team/pods")]


def test_help_documents_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for code in range(6):
        assert f"\n  {code}  " in out
    assert cli.main(["--version"]) == 0
