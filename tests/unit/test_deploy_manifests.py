"""deploy/ rendered offline with ``kubectl kustomize``: names, least privilege, pod shape.

The launcher's Role lists its worker pods by name (pods/exec resourceNames); those names follow
the worker count and the job's namePrefix, so every kustomization is rendered and checked here:
resourceNames equal the worker pod names exactly, for the base and each overlay.
"""

from __future__ import annotations

import re

import pytest

from devcluster.manifests import DEPLOY, DIRS, Job, job

LAUNCHER_ENV = {
    "OMPI_MCA_plm_rsh_agent": "/opt/mpi/bin/kubexec",
    "OMPI_MCA_orte_default_hostfile": "/opt/mpi/etc/hostfile",
    "PRTE_MCA_plm_ssh_agent": "/opt/mpi/bin/kubexec",
    "PRTE_MCA_prte_default_hostfile": "/opt/mpi/etc/hostfile",
    "HYDRA_LAUNCHER_EXEC": "/opt/mpi/bin/kubexec",
    "HYDRA_HOST_FILE": "/opt/mpi/etc/hostfile.hydra",
    "I_MPI_HYDRA_BOOTSTRAP_EXEC": "/opt/mpi/bin/kubexec",
    "I_MPI_HYDRA_HOST_FILE": "/opt/mpi/etc/hostfile.hydra",
}


RESTRICTED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
POD_FAILURE_POLICY = {
    "rules": [
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
    ]
}


def search_domain(j: Job) -> str:
    """``<service>.<namespace>.svc.cluster.local``: what the overlays' wiring writes."""
    (service,) = j.of_kind("Service")
    return f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"


@pytest.fixture(scope="module", params=DIRS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, Job]:
    directory: str = request.param
    return directory, job(directory)


def test_pods_exec_resource_names_are_the_worker_pods(rendered: tuple[str, Job]) -> None:
    directory, j = rendered
    (rule,) = j.rules_for("pods/exec")
    assert sorted(rule["verbs"]) == ["create", "get"]
    expected = j.worker_pod_names
    if expected is None:
        # Indexed Job pods are named <job>-<index>-<random>: no list can name them in advance.
        assert directory == "overlays/indexed"
        assert "resourceNames" not in rule
    else:
        assert rule["resourceNames"] == expected, directory


def test_other_resource_names_follow_the_job_name(rendered: tuple[str, Job]) -> None:
    _, j = rendered
    kind = j.workers["kind"]
    (owner_rule,) = j.rules_for("statefulsets" if kind == "StatefulSet" else "jobs")
    # get: the waiter's spec.replicas; patch + delete: the own-workers sidecar.
    assert owner_rule["verbs"] == (["get", "patch", "delete"] if kind == "StatefulSet" else ["get"])
    assert owner_rule["resourceNames"] == [j.workers["metadata"]["name"]]
    named = [r for r in j.rules_for("configmaps") if "resourceNames" in r]
    assert [r["resourceNames"] for r in named] == [[j.hostfile_configmap]]
    assert sorted(named[0]["verbs"]) == ["get", "patch", "update"]


def test_least_privilege(rendered: tuple[str, Job]) -> None:
    _, j = rendered
    kinds = {o["kind"] for o in j.objects}
    assert not kinds & {"ClusterRole", "ClusterRoleBinding"}
    allowed = {
        ("", "pods"): {"get", "list", "watch"},
        ("", "pods/exec"): {"create", "get"},
        ("", "configmaps"): {"get", "update", "patch", "create"},
        ("apps", "statefulsets"): {"get", "patch", "delete"},
        ("batch", "jobs"): {"get"},
    }
    for rule in j.role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                assert set(rule["verbs"]) <= allowed[(group, resource)], rule
        assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"]
    unnamed_create = [r for r in j.rules_for("configmaps") if "resourceNames" not in r]
    assert [r["verbs"] for r in unnamed_create] == [["create"]]
    (binding,) = j.of_kind("RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": j.role["metadata"]["name"],
    }
    namespace = binding["metadata"]["namespace"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": j.service_account, "namespace": namespace}
    ]
    assert [sa["metadata"]["name"] for sa in j.of_kind("ServiceAccount")] == [j.service_account]


def test_worker_pods(rendered: tuple[str, Job]) -> None:
    directory, j = rendered
    spec = j.workers["spec"]
    pod = spec["template"]["spec"]
    (service,) = j.of_kind("Service")
    assert service["spec"]["clusterIP"] == "None"
    if j.workers["kind"] == "StatefulSet":
        assert spec["podManagementPolicy"] == "Parallel"
        assert spec["serviceName"] == service["metadata"]["name"]
    else:
        assert spec["completionMode"] == "Indexed"
        assert pod["subdomain"] == service["metadata"]["name"]
    # The Service selects this job's pods only.
    job_label = service["spec"]["selector"]["k8smpi.dev/job"]
    assert spec["template"]["metadata"]["labels"]["k8smpi.dev/job"] == job_label
    assert pod["automountServiceAccountToken"] is False
    assert pod["shareProcessNamespace"] is True  # the pause container is PID 1 and reaps
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (c,) = pod["containers"]
    assert c["command"] == ["sleep", "infinity"]
    # Pod Security "restricted": no capability (IPC_LOCK never reaches a non-root uid's
    # effective set anyway), no escalation, the runtime's seccomp profile.
    assert c["securityContext"] == RESTRICTED
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # The seed's search path: short host names resolve from pod to pod.
    assert pod["dnsConfig"] == {"searches": [search_domain(j)]}
    (shm,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm"]
    (vol,) = [v for v in pod["volumes"] if v["name"] == shm["name"]]
    assert vol["emptyDir"]["medium"] == "Memory"
    limits = c["resources"]["limits"]
    if directory in ("base", "overlays/gpu-ib"):
        assert limits["nvidia.com/gpu"] == 4
        assert limits["rdma/hca"] == 1
    else:
        assert "nvidia.com/gpu" not in limits


def test_launcher_job(rendered: tuple[str, Job]) -> None:
    _, j = rendered
    spec = j.launcher["spec"]
    pod = spec["template"]["spec"]
    # Runs once: a failing waiter or mpirun fails the Job; a disrupted pod is replaced.
    assert spec["backoffLimit"] == 0
    assert spec["podFailurePolicy"] == POD_FAILURE_POLICY
    assert spec["activeDeadlineSeconds"] > 0
    assert pod["restartPolicy"] == "Never"
    (service,) = j.of_kind("Service")
    # launcher.<service> resolves (Hydra's proxies dial back), also before the pod is Ready.
    assert pod["hostname"] == "launcher"
    assert pod["subdomain"] == service["metadata"]["name"]
    assert service["spec"]["publishNotReadyAddresses"] is True
    assert pod["dnsConfig"] == {"searches": [search_domain(j)]}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for c in pod["initContainers"] + pod["containers"]:
        assert c["securityContext"] == RESTRICTED, c["name"]
    kind = "statefulset" if j.workers["kind"] == "StatefulSet" else "job"
    for name in ("waiter", "hydra-hostfile"):
        env = j.init_env(name)
        assert env["K8SMPI_SELECT_KIND"] == kind
        assert env["K8SMPI_WORKERS"] == j.workers["metadata"]["name"]
    assert j.init_env("waiter")["K8SMPI_HOSTFILE_CONFIGMAP"] == j.hostfile_configmap
    # The workers are the Job's: a sidecar owns the StatefulSet and deletes it at the end.
    sidecars = [c for c in pod["initContainers"] if c.get("restartPolicy") == "Always"]
    if j.workers["kind"] == "StatefulSet":
        (owner,) = sidecars
        assert pod["initContainers"][0] is owner
        assert owner["command"] == [
            "k8smpi-job",
            "own-workers",
            "--statefulset=$(K8SMPI_WORKERS)",
        ]
        env = {e["name"]: e.get("value") for e in owner["env"]}
        assert env["K8SMPI_WORKERS"] == j.workers["metadata"]["name"]
        assert "K8SMPI_POD_NAME" in env
    else:
        assert sidecars == []
    (waiter,) = [c for c in pod["initContainers"] if c["name"] == "waiter"]
    assert waiter["command"][0] == "k8s-waitfor"
    assert "--resolve-self" in waiter["command"]
    own_name = {
        "name": "K8SMPI_POD_NAME",
        "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
    }
    assert own_name in waiter["env"]
    assert "/waiter:" in waiter["image"]
    (main,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert {k: env[k] for k in LAUNCHER_ENV} == LAUNCHER_ENV
    # kubexec's scope in the launcher: its own pod's job label, which the workers carry too,
    # given as KUBEXEC_SELECTOR (the kubelet expands $(K8SMPI_JOB), defined before it).
    job_label = spec["template"]["metadata"]["labels"]["k8smpi.dev/job"]
    assert j.workers["spec"]["template"]["metadata"]["labels"]["k8smpi.dev/job"] == job_label
    names = [e["name"] for e in main["env"]]
    assert names.index("K8SMPI_JOB") < names.index("KUBEXEC_SELECTOR")
    (job_env,) = [e for e in main["env"] if e["name"] == "K8SMPI_JOB"]
    assert job_env["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.labels['k8smpi.dev/job']"}}
    assert env["KUBEXEC_SELECTOR"] == "k8smpi.dev/job=$(K8SMPI_JOB)"
    # No GPU for the launcher, and none visible (CUDA images default to all of the node's).
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert not any("gpu" in k for k in main.get("resources", {}).get("limits", {}))
    assert not any("gpu" in k for k in main.get("resources", {}).get("requests", {}))
    mounts = {m["mountPath"]: m["name"] for m in main["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/opt/mpi/etc"]]["emptyDir"] == {}
    script_cm = volumes[mounts["/opt/batch"]]["configMap"]["name"]
    (cm,) = [c for c in j.of_kind("ConfigMap") if c["metadata"]["name"] == script_cm]
    assert "mpirun" in cm["data"]["batch.sh"]


def test_batch_scripts_have_no_kubernetes_flags() -> None:
    for script in DEPLOY.rglob("batch.sh"):
        text = "\n".join(
            line for line in script.read_text().splitlines() if not line.lstrip().startswith("#")
        )
        assert "mpirun" in text
        assert not re.search(r"kubexec|kubectl|--mca|plm_|KUBERNETES", text), script


def test_the_launcher_pod_is_pod_security_restricted(rendered: tuple[str, Job]) -> None:
    # The rules of the "restricted" level that the pod itself must state (the apiserver
    # checks them all in tests/e2e/test_deploy.py).
    _, j = rendered
    pod = j.launcher["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    for container in pod["initContainers"] + pod["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert not context.get("privileged")
