"""deploy/ on the devcluster: every kustomization accepted, the base running, its RBAC proven.

- Every directory a user applies (the base and each overlay) passes the apiserver's validation
  and admission with ``kubectl apply -k DIR --dry-run=server``.
- The base is applied as is: its 4 workers (4 GPUs and an HCA each) become Ready, and the waiter's
  own command, run with the launcher's service-account token and the pod's DNS view, finds them
  Ready and resolvable, execs ``true`` in each (pods/exec) and writes the hostfile ConfigMap.
- ``kubectl auth can-i --as=system:serviceaccount:<ns>:launcher``: the launcher can exec into its
  workers and do what the waiter and kubexec need; it cannot exec into any other pod (another
  job's worker, a worker beyond the count, a stranger), read Secrets, change pods, or act in
  another namespace.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devcluster.client import Cluster
from devcluster.manifests import DEPLOY, DIRS, Job, job
from devcluster.workloads import running_pods

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(600)

WAITFOR = str(Path(sys.executable).parent / "k8s-waitfor")


@pytest.mark.parametrize("directory", DIRS)
def test_server_side_dry_run_accepts(cluster: Cluster, namespace: str, directory: str) -> None:
    rendered = job(directory)
    proc = cluster.kubectl(
        "apply", "-k", str(DEPLOY / directory), "--dry-run=server", "-n", namespace, "-o", "name"
    )
    accepted = sorted(proc.stdout.decode().split())
    expected = sorted(
        f"{o['kind'].lower()}.{_group(o)}/{o['metadata']['name']}".replace("./", "/")
        for o in rendered.objects
    )
    assert accepted == expected
    # A dry run creates nothing.
    assert cluster.get("statefulsets,jobs,roles", "-n", namespace)["items"] == []


def _group(obj: dict[str, object]) -> str:
    api = str(obj["apiVersion"])
    group, slash, _ = api.partition("/")
    return group if slash else ""


@dataclass(frozen=True)
class Applied:
    cluster: Cluster
    namespace: str
    job: Job

    @property
    def sa(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.job.service_account}"

    def can(self, *args: str, namespace: str | None = None) -> bool:
        proc = self.cluster.kubectl(
            "auth",
            "can-i",
            *args,
            f"--as={self.sa}",
            "-n",
            namespace or self.namespace,
            check=False,
        )
        answer = proc.stdout.decode().strip()
        assert answer in ("yes", "no"), proc.stderr.decode()
        return answer == "yes"


@pytest.fixture(scope="module")
def applied(cluster: Cluster) -> Iterator[Applied]:
    namespace = cluster.create_namespace("deploy-base")
    try:
        cluster.kubectl("apply", "-k", str(DEPLOY / "base"), "-n", namespace)
        yield Applied(cluster, namespace, job("base"))
    finally:
        cluster.delete_namespace(namespace)


def test_base_workers_become_ready(applied: Applied) -> None:
    j = applied.job
    pods = running_pods(
        applied.cluster, applied.namespace, "k8smpi.dev/role=worker", j.worker_count
    )
    assert [p["metadata"]["name"] for p in pods] == j.worker_pod_names
    for pod in pods:
        assert pod["spec"]["hostname"] == pod["metadata"]["name"]
        assert pod["spec"]["subdomain"] == "hpc-cluster"
        limits = pod["spec"]["containers"][0]["resources"]["limits"]
        assert limits == {"nvidia.com/gpu": "4", "rdma/hca": "1"}
    launcher = applied.cluster.get("pods", "-n", applied.namespace, "-l", "job-name=launcher")
    assert len(launcher["items"]) == 1
    assert launcher["items"][0]["spec"]["serviceAccountName"] == "launcher"


def test_waiter_runs_with_the_launcher_token(applied: Applied) -> None:
    """The waiter's command line, as the launcher's service account and with pod DNS."""
    c, ns, j = applied.cluster, applied.namespace, applied.job
    running_pods(c, ns, "k8smpi.dev/role=worker", j.worker_count)
    token = c.kubectl("create", "token", j.service_account, "-n", ns).stdout.decode().strip()
    kubeconfig = c.token_kubeconfig(token, ns)
    out = c.root / "tokens" / f"{ns}.hostfile" if c.root else None
    assert out is not None
    proc = c.run_with_pod_dns(
        ns,
        [
            WAITFOR,
            f"--kubeconfig={kubeconfig}",
            "--statefulset=cnode",
            "--timeout=90s",
            "--exec-probe",
            "--resource=nvidia.com/gpu",
            f"--hostfile-out={out}",
            "--configmap=hostfile",
            "--progress=none",
        ],
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [ln for ln in out.read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines == [f"cnode-{i} slots=4" for i in range(4)]
    cm = c.get("configmap", "hostfile", "-n", ns)
    assert cm["data"]["hostfile"] == out.read_text()
    # Every probe went to this job's workers, as the launcher.
    execs = c.exec_events(ns)
    assert {e["objectRef"]["name"] for e in execs} == set(j.worker_pod_names or [])
    assert {e["user"]["username"] for e in execs} == {applied.sa}


def test_launcher_can_do_its_work(applied: Applied) -> None:
    for pod in applied.job.worker_pod_names or []:
        assert applied.can("create", f"pods/{pod}", "--subresource=exec"), pod
        assert applied.can("get", f"pods/{pod}", "--subresource=exec"), pod
    for verb in ("get", "list", "watch"):
        assert applied.can(verb, "pods")
    for verb in ("get", "update", "patch"):
        assert applied.can(verb, "configmaps/hostfile")
    assert applied.can("create", "configmaps")
    assert applied.can("get", "statefulsets.apps/cnode")


def test_launcher_cannot_exec_outside_its_job(applied: Applied) -> None:
    for pod in ("cnode-4", "cpujob-cnode-0", "my-cnode-0", "launcher-abcde", "stranger"):
        assert not applied.can("create", f"pods/{pod}", "--subresource=exec"), pod
    # ... nor through the other ways into a container.
    for sub in ("attach", "portforward"):
        assert not applied.can("create", "pods/cnode-0", f"--subresource={sub}"), sub


def test_launcher_cannot_read_secrets_or_change_things(applied: Applied) -> None:
    for verb in ("get", "list", "watch"):
        assert not applied.can(verb, "secrets")
    assert not applied.can("get", "secrets/anything")
    assert not applied.can("create", "pods")
    assert not applied.can("delete", "pods/cnode-0")
    assert not applied.can("update", "configmaps/batch")
    assert not applied.can("get", "configmaps/other")
    assert not applied.can("get", "statefulsets.apps/other")
    assert not applied.can("patch", "statefulsets.apps/cnode")
    assert not applied.can("create", "serviceaccounts/launcher", "--subresource=token")
    assert not applied.can("update", "roles.rbac.authorization.k8s.io/launcher")


def test_launcher_cannot_act_in_another_namespace(applied: Applied) -> None:
    for other in ("default", "kube-system"):
        assert not applied.can("create", "pods/cnode-0", "--subresource=exec", namespace=other)
        assert not applied.can("list", "pods", namespace=other)
        assert not applied.can("get", "configmaps/hostfile", namespace=other)
    assert not applied.can("list", "pods", "--all-namespaces")
    assert not applied.can("list", "nodes")
