"""k8smpi-job render: golden files for each shape and MPI flavour, and what the YAML must hold.

Regenerate the golden files after an intended change with
``UPDATE_GOLDEN=1 pytest tests/unit/test_job_render.py`` and review the diff.
"""

from __future__ import annotations

import io
import os
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest
import yaml

from k8smpi_runtime import __version__
from k8smpi_runtime.job import cli, render, shared, spec, yamlout

GOLDEN = Path(__file__).parent / "golden" / "job"
JOB_FILE = GOLDEN / "job.yaml"
VERSION = "@VERSION@"  # in the golden files, so a release does not rewrite them all

CASES: dict[str, list[str]] = {
    **{
        f"{shape}-{flavour}": ["--shape", shape, "--mpi", flavour]
        for shape in spec.SHAPES
        for flavour in shared.FLAVOURS
    },
    "statefulset-openmpi5-kueue": ["--mpi", "openmpi5", "--queue", "team-a"],
    "jobset-openmpi5-kueue": ["--shape", "jobset", "--mpi", "openmpi5", "--queue", "team-a"],
    "statefulset-openmpi4-mpioptions-off": [
        "--mpi",
        "openmpi4",
        "--no-hostfile",
        "--no-service",
        "--no-kubexec",
        "--no-preflight",
        "--user",
        "image",
        "--time",
        "2h",
    ],
}


def rendered(args: list[str]) -> str:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli.main(["render", "-f", str(JOB_FILE), *args])
    assert code == 0
    return out.getvalue()


def objects(args: list[str]) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered(args)) if d]


@pytest.mark.parametrize("case", sorted(CASES))
def test_golden(case: str) -> None:
    text = rendered(CASES[case]).replace(__version__, VERSION)
    path = GOLDEN / f"{case}.yaml"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.write_text(text)
    expected = path.read_text()
    assert text == expected, f"{case} differs from its golden file (UPDATE_GOLDEN=1 to rewrite)"


def test_every_golden_file_is_a_case() -> None:
    on_disk = {p.stem for p in GOLDEN.glob("*.yaml")} - {"job"}
    assert on_disk == set(CASES)


@pytest.mark.parametrize("case", sorted(CASES))
def test_yaml_reads_back_as_the_objects(case: str) -> None:
    """What the emitter writes is exactly the objects (PyYAML reads YAML 1.1, as kubectl)."""
    args = ["-f", str(JOB_FILE), *CASES[case]]
    parsed = cli.build_parser().parse_args(["render", *args])
    job = cli.job_spec(parsed)
    assert objects(CASES[case]) == render.manifests(job)


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def test_seed_shape_computes_what_users_kept_in_sync() -> None:
    docs = objects(["--mpi", "intel", "-N", "3"])
    (role,) = by_kind(docs, "Role")
    (sts,) = by_kind(docs, "StatefulSet")
    (job,) = by_kind(docs, "Job")
    (svc,) = by_kind(docs, "Service")
    (exec_rule,) = [r for r in role["rules"] if r["resources"] == ["pods/exec"]]
    assert exec_rule["resourceNames"] == [f"allreduce-cnode-{i}" for i in range(3)]
    assert sts["spec"]["replicas"] == 3
    pod = job["spec"]["template"]["spec"]
    assert pod["hostname"] == "launcher"
    assert pod["subdomain"] == svc["metadata"]["name"] == sts["spec"]["serviceName"]
    assert svc["spec"]["publishNotReadyAddresses"] is True
    searches = ["allreduce-hpc-cluster.hpc.svc.cluster.local"]
    assert pod["dnsConfig"]["searches"] == searches
    assert sts["spec"]["template"]["spec"]["dnsConfig"]["searches"] == searches
    waiter = pod["initContainers"][1]
    assert waiter["command"] == [
        "k8s-waitfor",
        "--statefulset=allreduce-cnode",
        "--timeout=10m",
        "--exec-probe",
        "--preflight",
        "--resolve-self",
        "--resource=nvidia.com/gpu",
        "--format=hydra",
        "--hostfile-out=/opt/mpi/etc/hostfile.hydra",
        "--configmap=allreduce-hostfile",
        "--progress=log",
    ]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["I_MPI_HYDRA_HOST_FILE"] == "/opt/mpi/etc/hostfile.hydra"
    assert env["I_MPI_PERHOST"] == "4"  # Intel MPI ignores the host file's counts
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert (env["K8SMPI_NODES"], env["K8SMPI_SLOTS_PER_NODE"], env["K8SMPI_NP"]) == ("3", "4", "12")
    assert "OMPI_MCA_plm_rsh_agent" not in env


def test_kubexec_takes_only_the_jobs_pods() -> None:
    """KUBEXEC_SELECTOR = the pods' own job label, in both shapes; not there without kubexec."""
    for shape in spec.SHAPES:
        docs = objects(["--shape", shape])
        owner = docs[-1]
        if owner["kind"] == "JobSet":
            template = owner["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]
        else:
            template = owner["spec"]["template"]
        env = {e["name"]: e["value"] for e in template["spec"]["containers"][0]["env"]}
        assert template["metadata"]["labels"]["k8smpi.dev/job"] == "allreduce"
        assert env["KUBEXEC_SELECTOR"] == "k8smpi.dev/job=allreduce"
    (job,) = by_kind(objects(["--no-kubexec"]), "Job")
    env_names = {e["name"] for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert "KUBEXEC_SELECTOR" not in env_names


def _waiter(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (job,) = by_kind(docs, "Job")
    inits: list[dict[str, Any]] = job["spec"]["template"]["spec"]["initContainers"]
    (waiter,) = [c for c in inits if c["name"] == "waiter"]
    return waiter


def _exec_rule(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (role,) = by_kind(docs, "Role")
    return [r for r in role["rules"] if r["resources"] == ["pods/exec"]]


def test_preflight_in_the_waiter_and_its_off_switch(tmp_path: Path) -> None:
    """On by default (k8s-waitfor --preflight); off with --no-preflight or the spec key. The
    waiter's pods/exec rule stays while either the preflight or kubexec needs it."""
    assert "--preflight" in _waiter(objects([]))["command"]
    off = objects(["--no-preflight"])
    assert "--preflight" not in _waiter(off)["command"]
    assert "--exec-probe" in _waiter(off)["command"]
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(
        JOB_FILE.read_text().replace("script: batch.sh", f"script: {JOB_FILE.parent}/batch.sh")
        + "mpiOptions: {preflight: false}\n"
    )
    parsed = cli.build_parser().parse_args(["render", "-f", str(spec_file)])
    assert "--preflight" not in _waiter(render.manifests(cli.job_spec(parsed)))["command"]
    # Without kubexec the preflight still execs into the workers: the rule stays.
    no_kubexec = objects(["--no-kubexec"])
    assert "--preflight" in _waiter(no_kubexec)["command"]
    assert [r["resourceNames"] for r in _exec_rule(no_kubexec)] == [
        [f"allreduce-cnode-{i}" for i in range(4)]
    ]
    assert _exec_rule(objects(["--no-kubexec", "--no-preflight"])) == []


def test_image_pull_policy_on_every_container() -> None:
    for shape in spec.SHAPES:
        docs = objects(["--shape", shape, "--image-pull-policy", "Never"])
        containers = [
            c
            for d in docs
            for t in _templates(d)
            for c in t["spec"].get("initContainers", []) + t["spec"]["containers"]
        ]
        assert len(containers) == (3 if shape == "jobset" else 4)
        assert {c["imagePullPolicy"] for c in containers} == {"Never"}
    default = [c for d in objects([]) for t in _templates(d) for c in t["spec"]["containers"]]
    assert all("imagePullPolicy" not in c for c in default)


def _templates(d: dict[str, Any]) -> list[dict[str, Any]]:
    if d["kind"] in ("StatefulSet", "Job"):
        return [d["spec"]["template"]]
    if d["kind"] == "JobSet":
        return [rj["template"]["spec"]["template"] for rj in d["spec"]["replicatedJobs"]]
    return []


def test_failure_policy_and_ownership() -> None:
    docs = objects([])
    (job,) = by_kind(docs, "Job")
    assert job["spec"]["backoffLimit"] == 0
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert rules[0] == {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]}
    assert rules[1]["action"] == "FailJob"
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    pod = job["spec"]["template"]["spec"]
    sidecar = pod["initContainers"][0]
    assert sidecar["restartPolicy"] == "Always"
    assert sidecar["command"] == ["k8smpi-job", "own-workers", "--statefulset=allreduce-cnode"]
    (role,) = by_kind(docs, "Role")
    (sts_rule,) = [r for r in role["rules"] if r["resources"] == ["statefulsets"]]
    assert sts_rule == {
        "apiGroups": ["apps"],
        "resources": ["statefulsets"],
        "verbs": ["get", "patch", "delete"],
        "resourceNames": ["allreduce-cnode"],
    }


def test_pods_pass_pod_security_restricted() -> None:
    """No IPC_LOCK, non-root, nothing added, RuntimeDefault seccomp: every pod, both shapes."""
    for shape in spec.SHAPES:
        docs = objects(["--shape", shape])
        templates = []
        for d in docs:
            if d["kind"] in ("StatefulSet", "Job"):
                templates.append(d["spec"]["template"])
            if d["kind"] == "JobSet":
                templates += [
                    rj["template"]["spec"]["template"] for rj in d["spec"]["replicatedJobs"]
                ]
        assert len(templates) == 2
        for t in templates:
            pod = t["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True
            assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
            for c in pod.get("initContainers", []) + pod["containers"]:
                sc = c["securityContext"]
                assert sc == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
            assert "hostPID" not in pod and "hostNetwork" not in pod


def test_launcher_asks_for_no_gpu() -> None:
    for shape in spec.SHAPES:
        text = rendered(["--shape", shape])
        docs = [d for d in yaml.safe_load_all(text) if d]
        owner = docs[-1]
        if owner["kind"] == "JobSet":
            pod = owner["spec"]["replicatedJobs"][1]["template"]["spec"]["template"]["spec"]
        else:
            pod = owner["spec"]["template"]["spec"]
        for c in pod["initContainers"] + pod["containers"]:
            assert set(c["resources"]["requests"]) == {"cpu", "memory"}
            assert "limits" not in c["resources"]


def test_kueue_seed_shape_is_one_pod_group() -> None:
    docs = objects(["--queue", "team-a", "-N", "3"])
    (sts,) = by_kind(docs, "StatefulSet")
    (job,) = by_kind(docs, "Job")
    for t in (sts["spec"]["template"], job["spec"]["template"]):
        assert t["metadata"]["labels"][shared.KUEUE_QUEUE_LABEL] == "team-a"
        assert t["metadata"]["labels"][shared.KUEUE_POD_GROUP_LABEL] == "allreduce"
        assert t["metadata"]["annotations"][shared.KUEUE_POD_GROUP_COUNT] == "4"
    # The owners themselves carry no queue label: Kueue manages the pods as one group.
    for owner in (sts, job):
        assert shared.KUEUE_QUEUE_LABEL not in owner["metadata"]["labels"]


def test_jobset_shape() -> None:
    docs = objects(["--shape", "jobset", "--queue", "team-a"])
    assert [d["kind"] for d in docs] == [
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
        "ConfigMap",
        "JobSet",
    ]
    jobset = docs[-1]
    assert jobset["metadata"]["labels"][shared.KUEUE_QUEUE_LABEL] == "team-a"
    assert jobset["spec"]["successPolicy"] == {
        "operator": "All",
        "targetReplicatedJobs": ["launcher"],
    }
    assert jobset["spec"]["network"]["subdomain"] == "allreduce-hpc-cluster"
    workers, launcher = jobset["spec"]["replicatedJobs"]
    assert workers["template"]["spec"]["parallelism"] == 4
    waiter = launcher["template"]["spec"]["template"]["spec"]["initContainers"][0]
    assert waiter["name"] == "waiter"
    assert "--job=allreduce-cnode-0" in waiter["command"]
    (role,) = by_kind(docs, "Role")
    (exec_rule,) = [r for r in role["rules"] if r["resources"] == ["pods/exec"]]
    assert "resourceNames" not in exec_rule  # Job pods have random suffixes
    (job_rule,) = [r for r in role["rules"] if r["resources"] == ["jobs"]]
    assert job_rule["resourceNames"] == ["allreduce-cnode-0"]


def test_script_without_shebang_runs_through_sh(tmp_path: Path) -> None:
    script = tmp_path / "run.sh"
    script.write_text("mpirun hostname\n")
    docs = objects([str(script), "--name", "x"])
    (job,) = by_kind(docs, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "sh",
        "/opt/batch/batch.sh",
    ]
    (cm,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"] == "x-batch"]
    assert cm["data"] == {"batch.sh": "mpirun hostname\n"}


# -- the emitter ---------------------------------------------------------------------------------

TRICKY = [
    "yes",
    "No",
    "on",
    "y",
    "N",
    "null",
    "~",
    "true",
    "",
    "1",
    "0x1F",
    "1e3",
    "1:20",
    "01",
    ".5",
    "-1",
    "- a",
    "a: b",
    "a #b",
    "#x",
    "@x",
    "`x",
    "*x",
    "&x",
    "!x",
    "%x",
    "{x}",
    "[x]",
    "x:",
    "=",
    "<<",
    "'q'",
    '"q"',
    "tab\there",
    "multi\nline\n",
    "no trailing newline\nsecond",
    "two trailing\n\n",
    "  leading spaces\nx\n",
    "blank-with-space\n  \nx\n",
    "ünïcödé",
    "ctrl\x01char",
    "\r\n",
    "8Gi",
    "500m",
    "1E",
    "--timeout=$(X)",
    "a,b",
    "localhost/k8smpi/cpu:0.1.0",
    "https://example.invalid/x",
]


@pytest.mark.parametrize("value", TRICKY)
def test_emitter_round_trips(value: str) -> None:
    doc = {"k": value, "list": [value, {"nested": value}], value or "empty": 1}
    assert yaml.safe_load(yamlout.dump(doc)) == doc


def test_emitter_types_and_empty_containers() -> None:
    doc: dict[str, Any] = {
        "a": None,
        "b": True,
        "c": False,
        "d": 3,
        "e": {},
        "f": [],
        "g": [[1, 2], []],
    }
    assert yaml.safe_load(yamlout.dump(doc)) == doc
    with pytest.raises(TypeError):
        yamlout.dump({"x": object()})
