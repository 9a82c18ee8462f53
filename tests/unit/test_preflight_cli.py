"""k8smpi-preflight's command line, the launcher's checks and the across-the-job runner, with
fakes where the API or pods/exec would be (the e2e tier runs them for real)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest

from k8smpi_runtime.errors import ForbiddenError
from k8smpi_runtime.preflight import cli, exitcodes, job, kube, mpi, table
from k8smpi_runtime.preflight.host import Host
from k8smpi_runtime.preflight.image import Image
from k8smpi_runtime.preflight.model import FAIL, OK, SKIP, WARN, Finding, Report
from tests.unit.podfactory import sts_pod
from tests.unit.preflight_tree import Tree

if TYPE_CHECKING:
    from collections.abc import Sequence

    from k8smpi_runtime.kube.config import ClientConfig
    from k8smpi_runtime.kube.exec import ExecTarget
    from k8smpi_runtime.kube.rest import Api


def test_healthy_pod_exits_0_and_lists_every_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Tree(tmp_path).nvidia(gpus=4).cuda_toolkit("12.8.1").shm(4 << 30)
    code = cli.main(["--root", str(tmp_path), "--gpus", "4"])
    out, err = capsys.readouterr()
    assert code == exitcodes.OK, err
    assert err == ""
    for check in ("gpu", "cuda", "cuinit", "rdma", "memlock", "shm", "nofile", "mpi-env"):
        assert f"  {check}" in out


def test_fatal_findings_exit_1_with_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Tree(tmp_path).nvidia("470.57.02", gpus=2).cuda_toolkit("12.8.1")
    code = cli.main(["--root", str(tmp_path), "--gpus", "4"])
    _, err = capsys.readouterr()
    assert code == exitcodes.FATAL
    lines = err.splitlines()
    assert lines[0].startswith("k8smpi-preflight: FATAL (here): ")
    assert any("gpu: found 2 GPUs" in line and "expected 4 (--gpus)" in line for line in lines)
    assert any(
        "cuda: found driver 470.57.02" in line and "expected >= 570.26" in line for line in lines
    )
    assert len(lines) == 2


def test_worker_json_is_the_report_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Tree(tmp_path).shm(64 << 20)
    code = cli.main(["--root", str(tmp_path), "--json", "--worker", "--gpus", "0", "--ranks", "8"])
    out, err = capsys.readouterr()
    assert code == exitcodes.FATAL
    assert err == ""  # the launcher prints the fatal lines, from this JSON
    doc = json.loads(out)
    assert doc["fatal"] == 1
    (pod,) = doc["pods"]
    checks = {f["check"] for f in pod["findings"]}
    assert "shm" in checks and "mpi-env" not in checks  # --worker: no launcher checks


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gpus", "-1"], "must be 0 or more"),
        (["--root", "/nonexistent/x"], "is not a directory"),
        (["--statefulset", "a", "--job", "b"], "not allowed with argument"),
    ],
)
def test_bad_arguments_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == exitcodes.USAGE
    assert message in capsys.readouterr().err


def test_console_script_is_declared() -> None:
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert 'k8smpi-preflight = "k8smpi_runtime.preflight.cli:main"' in text


# -- the launcher's checks -----------------------------------------------------------------------


def host_with(tmp_path: Path, env: dict[str, str]) -> Host:
    Tree(tmp_path).write("opt/mpi/bin/kubexec", "#!/bin/sh\n")
    (tmp_path / "opt/mpi/bin/kubexec").chmod(0o755)
    return Host(tmp_path, env=env)


def test_open_mpi_5_needs_the_prrte_agent_name(tmp_path: Path) -> None:
    img = Image(detected={"openmpi": "5.0.8"})
    host = host_with(tmp_path, {"OMPI_MCA_plm_rsh_agent": "/opt/mpi/bin/kubexec"})
    found = mpi.check_env(host, img)
    assert found.status == FAIL
    assert "ignores OMPI_MCA_plm_rsh_agent" in found.message
    assert found.expected == "PRTE_MCA_plm_ssh_agent=kubexec"
    host = host_with(tmp_path, {"PRTE_MCA_plm_ssh_agent": "/opt/mpi/bin/kubexec"})
    assert mpi.check_env(host, img).status == OK


def test_open_mpi_4_agent_must_exist(tmp_path: Path) -> None:
    img = Image(detected={"openmpi": "4.1.4"})
    ok = mpi.check_env(host_with(tmp_path, {"OMPI_MCA_plm_rsh_agent": "/opt/mpi/bin/kubexec"}), img)
    assert (
        ok.status == OK
        and ok.found == "Open MPI 4 4.1.4: OMPI_MCA_plm_rsh_agent=/opt/mpi/bin/kubexec"
    )
    gone = mpi.check_env(host_with(tmp_path, {"OMPI_MCA_plm_rsh_agent": "/usr/bin/kubexec"}), img)
    assert gone.status == FAIL
    unset = mpi.check_env(host_with(tmp_path, {}), img)
    assert unset.status == WARN and "kubexec-env openmpi4" in unset.message


def test_hostfile_against_the_jobs_pods(tmp_path: Path) -> None:
    pods = [sts_pod("w", i) for i in range(4)]
    tree = Tree(tmp_path).write(
        "etc/hostfile", "w-0 slots=4\nw-1 slots=4\nw-2 slots=4\nw-3 slots=4\n"
    )
    host = Host(tree.root, env={"K8SMPI_HOSTFILE": "/etc/hostfile"})
    assert mpi.check_hostfile(host, None, pods, "ns1").status == OK
    tree.write("etc/hostfile", "w-0 slots=4\nold-7 slots=4\n")
    stale = mpi.check_hostfile(host, None, pods, "ns1")
    assert stale.status == FAIL and "old-7" in stale.found
    tree.write("etc/hostfile", "# empty default\n")
    assert mpi.check_hostfile(host, None, pods, "ns1").status == WARN
    assert mpi.check_hostfile(host, "/etc/missing", pods, "ns1").status == FAIL
    assert mpi.check_hostfile(Host(tree.root, env={}), None, pods, "ns1").status == SKIP


class SsarApi:
    """Answers SelfSubjectAccessReviews: pods/exec allowed on the pods named."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed
        self.asked: list[str] = []

    def request(self, method: str, path: str, *, body: dict[str, Any], **_: Any) -> dict[str, Any]:
        assert (method, path) == ("POST", kube.SSAR)
        attrs = body["spec"]["resourceAttributes"]
        assert (attrs["verb"], attrs["resource"], attrs["subresource"]) == (
            "create",
            "pods",
            "exec",
        )
        self.asked.append(attrs["name"])
        return {"status": {"allowed": attrs["name"] in self.allowed}}


def test_exec_rbac_on_each_worker() -> None:
    pods = [sts_pod("w", i) for i in range(4)]
    api = SsarApi({"w-0", "w-1", "w-2"})
    found = kube.check_exec_rbac(cast("Api", api), "ns1", pods)
    assert api.asked == ["w-0", "w-1", "w-2", "w-3"]
    assert found.status == FAIL and found.found == "may not create pods/exec on w-3"
    assert (
        kube.check_exec_rbac(cast("Api", SsarApi({"w-0", "w-1", "w-2", "w-3"})), "ns1", pods).status
        == OK
    )


def test_dns_of_every_worker() -> None:
    pods = [sts_pod("w", i) for i in range(3)]
    table_ = {"w-0.w-svc": ["10.0.1.1"], "w-1.w-svc": ["10.0.9.9"]}

    def lookup(name: str) -> list[str]:
        if name not in table_:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return table_[name]

    found = kube.check_dns(pods, lookup=lookup)
    assert found.status == FAIL
    assert "w-1.w-svc resolves to 10.0.9.9" in found.found
    assert "w-2.w-svc does not resolve" in found.found
    table_.update({"w-1.w-svc": ["10.0.1.2"], "w-2.w-svc": ["10.0.1.3"]})
    assert kube.check_dns(pods, lookup=lookup).status == OK


# -- across the job ------------------------------------------------------------------------------


def fake_runner(results: dict[str, job.Ran | Exception], seen: list[list[str]]) -> Any:
    def run(
        config: ClientConfig, target: ExecTarget, argv: Sequence[str], timeout: float
    ) -> job.Ran:
        seen.append(list(argv))
        result = results[target.pod]
        if isinstance(result, Exception):
            raise result
        return result

    return run


def worker_json(pod: str, *findings: Finding) -> bytes:
    return table.to_json([Report(pod, list(findings))]).encode()


def test_each_pod_is_told_its_own_request_and_reports_come_back() -> None:
    pods = [sts_pod("w", 0, gpus=4), sts_pod("w", 1, gpus=2), sts_pod("w", 2), sts_pod("w", 3)]
    seen: list[list[str]] = []
    results: dict[str, job.Ran | Exception] = {
        "w-0": job.Ran(0, worker_json("w-0", Finding("gpu", OK, "4 GPUs")), b""),
        "w-1": job.Ran(1, worker_json("w-1", Finding("gpu", FAIL, "2 GPUs", "4")), b""),
        "w-2": job.Ran(127, b"", b"sh: k8smpi-preflight: not found\n"),
        "w-3": ForbiddenError("pods/exec is forbidden", status=403),
    }
    config = cast("ClientConfig", object())
    reports = job.check_pods(config, "ns1", pods, job.Plan(), run=fake_runner(results, seen))
    assert [r.pod for r in reports] == ["w-0", "w-1", "w-2", "w-3"]
    assert seen[0][:6] == ["k8smpi-preflight", "--json", "--worker", "--gpus", "4", "--gpu-source"]
    assert seen[1][4] == "2" and seen[1][-2:] == ["--ranks", "2"]
    assert reports[1].fatal()[0].found == "2 GPUs"
    assert "not found in the pod (exit 127)" in reports[2].fatal()[0].found
    assert "exec failed" in reports[3].fatal()[0].found
    text = table.render(reports)
    rows = text.splitlines()
    assert rows[0].split()[:3] == ["pod", "gpu", "preflight"]
    assert [r.split()[0] for r in rows[1:]] == ["w-1", "w-2", "w-3", "w-0"]  # worst first
    lines = table.fatal_lines(reports)
    assert lines[0] == "w-1: gpu: found 2 GPUs, expected 4"
    assert len(lines) == 3


def test_a_report_that_is_not_json_is_a_fatal_finding() -> None:
    pods = [sts_pod("w", 0)]
    results: dict[str, job.Ran | Exception] = {"w-0": job.Ran(2, b"usage", b"error: bad option\n")}
    config = cast("ClientConfig", object())
    (report,) = job.check_pods(config, "ns1", pods, job.Plan(), run=fake_runner(results, []))
    assert report.fatal()[0].found.endswith("exited 2 without a report: error: bad option")


def test_a_pods_check_imports_nothing_heavy(tmp_path: Path) -> None:
    """It runs in every pod before every job: no kubernetes client, no compiled dependency."""
    Tree(tmp_path)
    code = (
        "import sys, json, contextlib, io\n"
        "from k8smpi_runtime.preflight import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    cli.main(['--root', {str(tmp_path)!r}, '--json', '--worker', '--gpus', '0'])\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}
    assert not loaded & {"kubernetes", "urllib3", "yaml", "tenacity", "psutil", "docker"}
