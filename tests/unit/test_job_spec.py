"""k8smpi-job's inputs: every bad one is refused with one line naming it, and exit status 2.

Nothing is applied or printed on stdout when an input is refused.
"""

from __future__ import annotations

import io
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from k8smpi_runtime.job import cli, exitcodes, spec

GOOD = ["--image", "img:1", "-N", "2", "--gpus", "4", "-n", "hpc", "--user", "1000"]


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "my-job.sh"
    path.write_text("#!/bin/sh\nmpirun app\n")
    return path


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def refused(argv: list[str], fragment: str) -> None:
    code, out, err = run(argv)
    assert code == exitcodes.USAGE, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("k8smpi-job: "), err
    assert fragment in lines[0], err


def test_good_inputs_render(script: Path) -> None:
    code, out, err = run(["render", str(script), *GOOD])
    assert code == 0, err
    assert "name: my-job-launcher" in out
    assert err == ""


BAD_OPTIONS: list[tuple[list[str], str]] = [
    (["--image", ""], "image: give the container image"),
    (["--image", "has space"], "image: 'has space' is not an image reference"),
    (["--image", "repo:"], "is not an image reference"),
    (["-N", "0"], "workers: 0 is out of range"),
    (["-N", "two"], "workers: not a whole number"),
    (["-N", "10001"], "workers: 10001 is out of range"),
    (["--gpus", "-1"], "gpus: -1 is out of range"),
    (["--gpus", "1.5"], "gpus: not a whole number"),
    (["--resource", "rdma/hca"], "--resource 'rdma/hca': expected NAME=VALUE"),
    (["--resource", "hca=1"], "resources: 'hca' is not an extended resource name"),
    (["--resource", "cpu=4"], "resources: give cpu with --cpu"),
    (["--resource", "nvidia.com/gpu=2"], "nvidia.com/gpu is given twice"),
    (["--resource", "rdma/hca=x"], "resources.rdma/hca: not a whole number"),
    (["--cpu", "four"], "cpu: 'four' is not a Kubernetes quantity"),
    (["--cpu", "0"], "cpu: 0 must be more than 0"),
    (["--memory", "8GB"], "memory: '8GB' is not a Kubernetes quantity"),
    (["--mpi", "lam"], "mpi: 'lam' is not one of openmpi, openmpi4, openmpi5, mpich, intel"),
    (["--shape", "deployment"], "shape: 'deployment' is not one of statefulset, jobset"),
    (["--user", "0"], "user: root (uid 0) is refused"),
    (["--user", "alice"], "user: 'alice': ids are numbers"),
    (["--user", "1:2:3:4"], "is not UID[:GID[:GROUP,GROUP...]]"),
    (["--user", "1000:"], "is not UID[:GID[:GROUP,GROUP...]]"),
    (["--user", "99999999999"], "ids must be between"),
    (["-n", "Bad_NS"], "namespace: 'Bad_NS' is not a namespace name"),
    (["--queue", "Team A"], "queue: 'Team A' is not a LocalQueue name"),
    (["-J", "9lives"], "name '9lives': use lowercase letters"),
    (["-J", "x" * 41], "longer than 40 characters"),
    (["--slots", "0"], "slots: 0 is out of range"),
    (["--shm", "lots"], "shm: 'lots' is not a Kubernetes quantity"),
    (["--time", "soon"], "time: not a duration: 'soon'"),
    (["--time", "0"], "time: '0' is out of range"),
    (["--time", "400d"], "time: '400d' is out of range"),
    (["--wait-timeout", "10 minutes"], "waitTimeout: not a duration"),
    (["--keep-for=-1h"], "keepFor: not a duration"),
    (["--env", "1X=y"], "env: '1X' is not an environment variable name"),
    (["--env", "novalue"], "--env 'novalue': expected NAME=VALUE"),
    (["--node-selector", "a=b c"], "nodeSelector: 'b c' is not a label value"),
    (["--node-selector=-a=b"], "nodeSelector: '-a' is not a label name"),
    (["--toleration", "=x"], "--toleration '=x': expected KEY[=VALUE][:EFFECT]"),
    (["--toleration", "k:Never"], "tolerations: effect 'Never' is not one of"),
    (["--launcher-cpu", "x"], "launcher.cpu: 'x' is not a Kubernetes quantity"),
    (["--launcher-memory", "0"], "launcher.memory: 0 must be more than 0"),
    (["--launcher-annotation", "bad key=x"], "is not an annotation name"),
    (["--waiter-image", "a b"], "waiterImage: 'a b' is not an image reference"),
    (
        ["--image-pull-policy", "never"],
        "imagePullPolicy: 'never' is not one of Always, IfNotPresent, Never",
    ),
    (["--cluster-domain", "Cluster_Local"], "clusterDomain: 'Cluster_Local' is not a DNS domain"),
    (["--mpi", "mpich", "--no-service"], "--no-service: MPICH (Hydra) proxies dial back"),
    (["--mpi", "intel", "--no-dns"], "--no-dns: Intel MPI (Hydra) proxies dial back"),
    (["--gpus", "0"], "slots: nothing to count ranks from"),
    (["--gpus", "0", "--cpu", "500m"], "cpu: 500m is less than one whole core"),
]


@pytest.mark.parametrize(("extra", "fragment"), BAD_OPTIONS, ids=[f for _, f in BAD_OPTIONS])
def test_bad_option(script: Path, extra: list[str], fragment: str) -> None:
    refused(["render", str(script), *GOOD, *extra], fragment)


def test_every_input_has_a_refusal_test() -> None:
    keys = {f.split(":")[0].split(".")[0].split(" ")[0].lstrip("-") for _, f in BAD_OPTIONS}
    aliases = {
        "workers": "workers",
        "resource": "resources",
        "toleration": "tolerations",
        "env": "env",
        "name": "name",
        "no-service": "mpiOptions",
        "no-dns": "mpiOptions",
    }
    covered = {aliases.get(k, k) for k in keys} | {"script", "launcher", "mpiOptions"}
    assert set(spec.KEYS) <= covered, set(spec.KEYS) - covered


def test_script_problems(tmp_path: Path) -> None:
    refused(["render", *GOOD], "script: give the batch script")
    refused(["render", str(tmp_path / "missing.sh"), *GOOD], "cannot read it: No such file")
    empty = tmp_path / "empty.sh"
    empty.write_text("  \n")
    refused(["render", str(empty), *GOOD], "the file is empty")
    binary = tmp_path / "a.out"
    binary.write_bytes(b"\x7fELF\xff\xfe")
    refused(["render", str(binary), *GOOD], "not a text file")
    huge = tmp_path / "huge.sh"
    huge.write_text("#" * (spec.MAX_SCRIPT + 1))
    refused(["render", str(huge), *GOOD], "more than a ConfigMap should hold")
    nameless = tmp_path / "123.sh"
    nameless.write_text("mpirun x\n")
    refused(["render", str(nameless), *GOOD], "cannot make a job name from the script's name")


def test_name_from_script(tmp_path: Path) -> None:
    path = tmp_path / "My_Big.Run.sh"
    path.write_text("mpirun x\n")
    code, out, _ = run(["render", str(path), *GOOD])
    assert code == 0
    assert "name: my-big-launcher" in out


def test_spec_file_problems(tmp_path: Path, script: Path) -> None:
    refused(["render", "-f", str(tmp_path / "nope.yaml")], "cannot read it")
    bad = tmp_path / "bad.yaml"
    bad.write_text("image: [unclosed\n")
    refused(["render", "-f", str(bad)], "not valid YAML (line 2)")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    refused(["render", "-f", str(listing)], "expected a mapping of inputs, found a list")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("image: x\nnodes: 3\n")
    refused(["render", "-f", str(unknown)], "unknown key 'nodes'")
    typed = tmp_path / "typed.yaml"
    typed.write_text(f"script: {script}\nimage: x\nworkers: [1]\ngpus: 1\n")
    refused(["render", "-f", str(typed)], "workers: expected a whole number, found a list")
    opts = tmp_path / "opts.yaml"
    opts.write_text(f"script: {script}\nimage: x\ngpus: 1\nmpiOptions: {{ssh: true}}\n")
    refused(["render", "-f", str(opts)], "mpiOptions: unknown option 'ssh'")
    flag = tmp_path / "flag.yaml"
    flag.write_text(f"script: {script}\nimage: x\ngpus: 1\nmpiOptions: {{dns: 'no'}}\n")
    refused(["render", "-f", str(flag)], "mpiOptions.dns: expected true or false")
    launcher = tmp_path / "launcher.yaml"
    launcher.write_text(f"script: {script}\nimage: x\ngpus: 1\nlauncher: {{gpus: 1}}\n")
    refused(["render", "-f", str(launcher)], "launcher: unknown key 'gpus'")
    tol = tmp_path / "tol.yaml"
    tol.write_text(f"script: {script}\nimage: x\ngpus: 1\ntolerations: [{{key: a, op: x}}]\n")
    refused(["render", "-f", str(tol)], "tolerations: unknown field 'op'")


def test_spec_file_and_command_line_merge(tmp_path: Path) -> None:
    (tmp_path / "run.sh").write_text("#!/bin/sh\nmpirun app\n")
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: merged\nscript: run.sh\nimage: img:1\nworkers: 2\ngpus: 1\nnamespace: a\n"
        "env: {A: '1'}\nuser: 1234\n"
    )
    code, out, err = run(["render", "-f", str(job), "-N", "3", "--env", "B=2"])
    assert code == 0, err
    assert "replicas: 3" in out
    assert "name: A" in out and "name: B" in out
    assert "runAsUser: 1234" in out
    assert "namespace: a" in out


def test_default_user_is_the_caller(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spec, "caller_user", lambda: spec.User(4242, 100, (5, 7)))
    argv = ["render", str(script), "--image", "i", "--gpus", "1", "-n", "x"]
    code, out, _ = run(argv)
    assert code == 0
    assert "runAsUser: 4242" in out and "runAsGroup: 100" in out
    assert "supplementalGroups:\n        - 5\n        - 7" in out
    monkeypatch.setattr(spec, "caller_user", lambda: None)  # root: the image's user
    code, out, _ = run(argv)
    assert code == 0
    assert "runAsUser" not in out and "runAsNonRoot: true" in out


def test_help_and_version() -> None:
    code, out, _ = run(["--help"])
    assert code == 0 and "submit" in out
    code, out, _ = run(["submit", "--help"])
    assert code == 0 and "exit status" in out
    code, _, err = run(["frobnicate"])
    assert code == exitcodes.USAGE and "invalid choice" in err
    assert len(err.splitlines()) == 1
