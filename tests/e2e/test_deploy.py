"""deploy/ on the devcluster's API server: every kustomization accepted, Pod Security, RBAC.

- Every directory a user applies (the base and each overlay), in a namespace of the test's
  (an overlay that sets it, as a user's does), passes the apiserver's validation and admission
  with ``kubectl apply -k DIR --dry-run=server``; where Pod Security ``restricted`` is enforced,
  the worker with IPC_LOCK added is refused (tests/e2e/test_deploy_hardening.py shows every
  shape's pods pass ``restricted`` as shipped).
- ``kubectl auth can-i --as=system:serviceaccount:<ns>:launcher``: the launcher can exec into its
  workers and do what the waiter, kubexec and the own-workers sidecar need; it cannot exec into
  any other pod (another job's worker, a worker beyond the count, a stranger), read Secrets,
  change other objects, or act in another namespace.

These need no pod to run: the whole flow, run by Kubernetes, is tests/e2e/test_deploy_flow.py.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devcluster.client import Cluster
from devcluster.flow import namespaced
from devcluster.manifests import DIRS, Job, render

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("directory", DIRS)
def test_server_side_dry_run_accepts(
    cluster: Cluster, namespace: str, directory: str, tmp_path: Path
) -> None:
    overlay = namespaced(tmp_path, directory, namespace)
    rendered = Job(render(str(overlay)))
    proc = cluster.kubectl("apply", "-k", str(overlay), "--dry-run=server", "-o", "name")
    accepted = sorted(proc.stdout.decode().split())
    expected = sorted(
        f"{o['kind'].lower()}.{_group(o)}/{o['metadata']['name']}".replace("./", "/")
        for o in rendered.objects
    )
    assert accepted == expected
    # A dry run creates nothing.
    assert cluster.get("statefulsets,jobs,roles", "-n", namespace)["items"] == []


def restricted(cluster: Cluster, namespace: str) -> None:
    labels = [f"pod-security.kubernetes.io/{mode}=restricted" for mode in ("enforce", "warn")]
    cluster.kubectl("label", "namespace", namespace, *labels)


def test_ipc_lock_would_violate_restricted(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """Why deploy/ adds no IPC_LOCK: restricted refuses it (and a non-root uid gains nothing
    from it anyway: tests/e2e/test_real_node_memlock.py)."""
    restricted(cluster, namespace)
    ipc_lock = {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": "cnode"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "worker",
                            "securityContext": {"capabilities": {"add": ["IPC_LOCK"]}},
                        }
                    ]
                }
            }
        },
    }
    overlay = namespaced(tmp_path, "base", namespace, patches=[{"patch": json.dumps(ipc_lock)}])
    proc = cluster.kubectl("apply", "-k", str(overlay), "--dry-run=server")
    warning = proc.stderr.decode()
    assert 'would violate PodSecurity "restricted:latest"' in warning
    assert "IPC_LOCK" in warning


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
        with tempfile.TemporaryDirectory(prefix="k8smpi-deploy-") as tmp:
            overlay = namespaced(Path(tmp), "base", namespace)
            cluster.kubectl("apply", "-k", str(overlay))
            yield Applied(cluster, namespace, Job(render(str(overlay))))
    finally:
        cluster.delete_namespace(namespace)


def test_launcher_can_do_its_work(applied: Applied) -> None:
    for pod in applied.job.worker_pod_names or []:
        assert applied.can("create", f"pods/{pod}", "--subresource=exec"), pod
        assert applied.can("get", f"pods/{pod}", "--subresource=exec"), pod
    for verb in ("get", "list", "watch"):
        assert applied.can(verb, "pods")
    for verb in ("get", "update", "patch"):
        assert applied.can(verb, "configmaps/hostfile")
    assert applied.can("create", "configmaps")
    # The waiter reads spec.replicas; the own-workers sidecar owns and deletes the workers.
    for verb in ("get", "patch", "delete"):
        assert applied.can(verb, "statefulsets.apps/cnode")


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
    assert not applied.can("patch", "statefulsets.apps/other")
    assert not applied.can("delete", "statefulsets.apps/other")
    assert not applied.can("update", "statefulsets.apps/cnode")
    assert not applied.can("create", "statefulsets.apps")
    assert not applied.can("create", "serviceaccounts/launcher", "--subresource=token")
    assert not applied.can("update", "roles.rbac.authorization.k8s.io/launcher")


def test_launcher_cannot_act_in_another_namespace(applied: Applied) -> None:
    for other in ("default", "kube-system"):
        assert not applied.can("create", "pods/cnode-0", "--subresource=exec", namespace=other)
        assert not applied.can("list", "pods", namespace=other)
        assert not applied.can("get", "configmaps/hostfile", namespace=other)
    assert not applied.can("list", "pods", "--all-namespaces")
    assert not applied.can("list", "nodes")
