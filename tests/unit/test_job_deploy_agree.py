"""k8smpi-job render and deploy/ agree where they overlap.

deploy/overlays/gpu-ib (job ``my``: 4 workers x 4 GPUs + 1 HCA, Open MPI) is rendered with
``kubectl kustomize`` and compared with ``k8smpi-job render`` of the same job: the names of every
object, each MPI flavour's launcher environment (deploy/ sets every flavour's at once), the
launcher's RBAC rules, the waiter's arguments, the worker and launcher pod shapes. The pieces
come from one place, :mod:`k8smpi_runtime.job.shared`.

The decisions of issue 10 item 3 (the launcher's hostname, not-ready addresses, the failure
policy, workers owned by the job, no IPC_LOCK, no GPU in the launcher, the DNS search path) are
taken in both, the same way.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from devcluster.manifests import DEPLOY, Job, job
from k8smpi_runtime.job import render, shared, spec

if TYPE_CHECKING:
    from collections.abc import Callable

JSON = dict[str, Any]
EXPANSION = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@pytest.fixture(scope="module")
def deploy() -> Job:
    return job("overlays/gpu-ib")


def rendered(**extra: Any) -> list[JSON]:
    inputs = {
        "name": "my",
        "script": str(DEPLOY / "overlays" / "gpu-ib" / "batch.sh"),
        "image": "localhost/k8smpi/base:x",
        "workers": 4,
        "gpus": 4,
        "resources": {"rdma/hca": 1},
        "namespace": "hpc",
        "user": "1000:0",
        **extra,
    }
    return render.manifests(spec.build(inputs))


@pytest.fixture(scope="module")
def ours() -> Job:
    return Job(rendered())


def _names(j: Job) -> set[tuple[str, str]]:
    out = set()
    for o in j.objects:
        name = o["metadata"]["name"]
        if o["kind"] == "ConfigMap" and "batch.sh" in o.get("data", {}):
            name = re.sub(r"-[a-z0-9]{10}$", "", name)  # kustomize's content hash
        out.add((o["kind"], name))
    return out


def test_object_names(deploy: Job, ours: Job) -> None:
    assert _names(ours) == _names(deploy)
    names = shared.Names("my")
    assert deploy.workers["metadata"]["name"] == names.workers
    assert deploy.one("Service")["metadata"]["name"] == names.service
    assert deploy.launcher["metadata"]["name"] == names.launcher
    assert deploy.hostfile_configmap == names.hostfile
    assert deploy.worker_pod_names == names.worker_pods(4)


def _main_env(j: Job) -> dict[str, str]:
    (main,) = j.launcher["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", "") for e in main["env"]}


@pytest.mark.parametrize("flavour", sorted(shared.FLAVOURS))
def test_each_flavours_environment(deploy: Job, flavour: str) -> None:
    env = _main_env(deploy)
    expected = dict(shared.FLAVOURS[flavour].launcher_env())
    assert {k: env.get(k) for k in expected} == expected
    (launcher,) = [o for o in rendered(mpi=flavour) if o["kind"] == "Job"]
    main = launcher["spec"]["template"]["spec"]["containers"][0]
    ours = {e["name"]: e.get("value") for e in main["env"]}
    assert {k: ours.get(k) for k in expected} == expected


def _rules(j: Job) -> list[JSON]:
    return [dict(r) for r in j.role["rules"]]


def test_rbac_rules(deploy: Job, ours: Job) -> None:
    theirs = _rules(deploy)
    mine = _rules(ours)
    # The same rules in the same order, but for what the workers' owner (the sidecar) adds.
    assert len(theirs) == len(mine)
    for t, m in zip(theirs, mine, strict=True):
        if m["resources"] == ["statefulsets"]:
            assert t["resourceNames"] == m["resourceNames"]
            assert set(t["verbs"]) <= set(m["verbs"])
        else:
            assert t == m
    names = shared.Names("my")
    owner_rule = theirs[-1]
    assert owner_rule["resources"] == ["statefulsets"]
    expected = shared.launcher_rules(
        names, worker_pods=names.worker_pods(4), own_workers="patch" in owner_rule["verbs"]
    )
    assert theirs == expected


def _waiter_args(j: Job) -> set[str]:
    spec_ = j.launcher["spec"]["template"]["spec"]
    (waiter,) = [c for c in spec_["initContainers"] if c["name"] == "waiter"]
    env = {e["name"]: e.get("value", "") for e in waiter.get("env", [])}
    args = {EXPANSION.sub(lambda m: env[m.group(1)], w) for w in waiter["command"]}
    # openmpi is hostfile-gen's default format: saying it or not is the same.
    return args | {"--format=openmpi"} if not any(a.startswith("--format") for a in args) else args


def test_waiter_arguments(deploy: Job, ours: Job) -> None:
    """The same, but deploy/'s launcher serves every MPI at once (Hydra's included, whose
    proxies dial back to the launcher's name): its waiter also resolves its own name, as
    k8smpi-job's does for the Hydra flavours."""
    assert _waiter_args(deploy) - {"--resolve-self"} == _waiter_args(ours)
    assert "--resolve-self" in _waiter_args(deploy)
    (intel,) = [o for o in rendered(mpi="intel") if o["kind"] == "Job"]
    assert "--resolve-self" in _waiter_args(Job([intel]))


def test_worker_pods(deploy: Job, ours: Job) -> None:
    def shape(j: Job) -> JSON:
        sts = j.workers["spec"]
        pod = sts["template"]["spec"]
        (c,) = pod["containers"]
        (shm,) = [v for v in pod["volumes"] if v["name"] == "dshm"]
        return {
            "policy": sts["podManagementPolicy"],
            "service": sts["serviceName"],
            "token": pod["automountServiceAccountToken"],
            "share": pod["shareProcessNamespace"],
            "links": pod["enableServiceLinks"],
            "nonroot": pod["securityContext"]["runAsNonRoot"],
            "command": c["command"],
            "limits": {k: int(v) for k, v in c["resources"]["limits"].items()},
            "shm": shm["emptyDir"]["medium"],
            "mounts": c["volumeMounts"],
        }

    assert shape(deploy) == shape(ours)


def test_launcher_pod(deploy: Job, ours: Job) -> None:
    def shape(j: Job) -> JSON:
        pod = j.launcher["spec"]["template"]["spec"]
        (main,) = pod["containers"]
        return {
            "restart": pod["restartPolicy"],
            "sa": pod["serviceAccountName"],
            "subdomain": pod["subdomain"],
            "mounts": sorted(m["mountPath"] for m in main["volumeMounts"]),
            "volumes": sorted(
                (v["name"], "configMap" if "configMap" in v else "emptyDir") for v in pod["volumes"]
            ),
        }

    assert shape(deploy) == shape(ours)


# -- decisions of issue 10 item 3, taken in both -----------------------------------------------


def _launcher_spec(j: Job) -> JSON:
    return dict(j.launcher["spec"])


def _hostname(j: Job) -> object:
    return _launcher_spec(j)["template"]["spec"].get("hostname")


def _not_ready_addresses(j: Job) -> object:
    return j.one("Service")["spec"].get("publishNotReadyAddresses")


def _failure_policy(j: Job) -> object:
    s = _launcher_spec(j)
    return (s.get("backoffLimit"), s.get("podFailurePolicy"))


def _owner_sidecar(j: Job) -> object:
    init = _launcher_spec(j)["template"]["spec"]["initContainers"]
    return [
        (c["name"], c.get("restartPolicy"), c["command"][:2])
        for c in init
        if c.get("restartPolicy")
    ]


def _capabilities(j: Job) -> object:
    (c,) = j.workers["spec"]["template"]["spec"]["containers"]
    return c["securityContext"].get("capabilities")


def _launcher_gpus(j: Job) -> object:
    return _main_env(j).get("NVIDIA_VISIBLE_DEVICES")


def _searches(j: Job) -> object:
    """The search path, its namespace part left out (deploy/ is applied with -n NAMESPACE)."""
    found = (j.workers["spec"]["template"]["spec"].get("dnsConfig") or {}).get("searches")
    return [re.sub(r"^([^.]+)\.[^.]+\.svc\.", r"\1.NAMESPACE.svc.", s) for s in found or []]


DECISIONS: dict[str, Callable[[Job], object]] = {
    "launcher-hostname": _hostname,
    "publish-not-ready-addresses": _not_ready_addresses,
    "fail-once-policy": _failure_policy,
    "workers-owned-by-the-job": _owner_sidecar,
    "no-ipc-lock": _capabilities,
    "launcher-without-gpus": _launcher_gpus,
    "dns-search-path": _searches,
}


@pytest.mark.parametrize("decision", sorted(DECISIONS))
def test_decision_taken_in_both(deploy: Job, ours: Job, decision: str) -> None:
    read = DECISIONS[decision]
    assert read(ours) not in (None, [], (None, None))
    assert read(deploy) == read(ours)


def test_deploy_reference_files_exist() -> None:
    assert Path(DEPLOY / "overlays" / "gpu-ib" / "kustomization.yaml").exists()
