"""deploy/ under Pod Security and with the exec-scope policy, judged by the real API server.

- The launcher's and the workers' pods pass Pod Security ``restricted`` in every shape
  (deploy/README.md says the same).
- ``deploy/policy``: a job's launcher may exec only into its own job's workers, enforced by the
  API server -- where RBAC cannot name them (overlays/indexed: Indexed Job pods have random
  names), a decoy pod with the job's host name is refused.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devcluster.client import JSON, Cluster
from devcluster.flow import namespaced
from devcluster.manifests import DEPLOY, DIRS, job
from devcluster.workloads import DEFAULT_NODES, running_pods

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(600)

LEVELS = ("restricted", "baseline", "privileged")
WORKER_LEVEL = {d: "restricted" for d in DIRS}
"""The lowest level the workers' pods pass: restricted (no capability: IPC_LOCK would not reach
a non-root uid anyway, tests/e2e/test_real_node_memlock.py; tests/e2e/test_deploy.py shows that
adding it would need privileged)."""


@pytest.fixture(scope="module")
def levels(cluster: Cluster) -> Iterator[dict[str, str]]:
    """A namespace per Pod Security level, enforced."""
    made = {}
    try:
        for level in LEVELS:
            name = cluster.create_namespace(f"psa-{level}")
            cluster.kubectl(
                "label", "namespace", name, f"pod-security.kubernetes.io/enforce={level}"
            )
            made[level] = name
        yield made
    finally:
        for name in made.values():
            cluster.delete_namespace(name)


def as_pod(template: JSON, name: str) -> JSON:
    spec = dict(template["spec"])
    spec["nodeSelector"] = DEFAULT_NODES
    spec.pop("serviceAccountName", None)  # not made in these namespaces; Pod Security ignores it
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"].get("labels", {})},
        "spec": spec,
    }


def admitted(cluster: Cluster, namespace: str, pod: JSON) -> tuple[bool, str]:
    proc = cluster.kubectl(
        "create", "--dry-run=server", "-n", namespace, "-f", "-",
        input=json.dumps(pod), check=False,
    )  # fmt: skip
    return proc.returncode == 0, proc.stderr.decode()


def lowest_level(cluster: Cluster, levels: dict[str, str], pod: JSON) -> str:
    for level in LEVELS:
        ok, _ = admitted(cluster, levels[level], pod)
        if ok:
            return level
    raise AssertionError(f"no Pod Security level admits {pod['metadata']['name']}")


@pytest.mark.parametrize("directory", DIRS)
def test_the_launcher_passes_pod_security_restricted(
    cluster: Cluster, levels: dict[str, str], directory: str
) -> None:
    j = job(directory)
    launcher = as_pod(j.launcher["spec"]["template"], "launcher-psa")
    ok, why = admitted(cluster, levels["restricted"], launcher)
    assert ok, why
    workers = as_pod(j.workers["spec"]["template"], "worker-psa")
    assert lowest_level(cluster, levels, workers) == WORKER_LEVEL[directory]


# -- the exec-scope policy ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def indexed(cluster: Cluster) -> Iterator[str]:
    """overlays/indexed applied in a namespace where deploy/policy is enforced, and a decoy
    pod given the first worker's host name and subdomain."""
    cluster.kubectl("apply", "-k", str(DEPLOY / "policy"))
    namespace = cluster.create_namespace("exec-scope")
    try:
        cluster.kubectl("label", "namespace", namespace, "k8smpi.dev/exec-scope=enforce")
        # deploy/ sets its namespace (hpc) itself: an overlay puts it in this one.
        with tempfile.TemporaryDirectory(prefix="k8smpi-exec-scope-") as tmp:
            cluster.kubectl(
                "apply", "-k", str(namespaced(Path(tmp), "overlays/indexed", namespace))
            )
        j = job("overlays/indexed")
        decoy = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "aaa", "labels": {"app": "decoy"}},
            "spec": {
                "hostname": j.worker_hostnames[0],
                "subdomain": j.of_kind("Service")[0]["metadata"]["name"],
                "nodeSelector": DEFAULT_NODES,
                "containers": [{"name": "main", "image": "k8smpi/cpu:dev"}],
            },
        }
        cluster.apply([decoy], namespace)
        running_pods(cluster, namespace, "k8smpi.dev/role=worker", j.worker_count)
        running_pods(cluster, namespace, "app=decoy", 1)
        yield namespace
    finally:
        cluster.delete_namespace(namespace)
        cluster.kubectl("delete", "-k", str(DEPLOY / "policy"), "--ignore-not-found")


def exec_as_launcher(cluster: Cluster, namespace: str, pod: str) -> tuple[int, str]:
    sa = f"system:serviceaccount:{namespace}:{job('overlays/indexed').service_account}"
    proc = cluster.kubectl("exec", "-n", namespace, f"--as={sa}", pod, "--", "true", check=False)
    return proc.returncode, proc.stderr.decode()


def test_the_policy_confines_the_launcher_to_its_workers(cluster: Cluster, indexed: str) -> None:
    workers = cluster.get("pods", "-n", indexed, "-l", "k8smpi.dev/role=worker")["items"]
    for pod in workers:
        code, err = exec_as_launcher(cluster, indexed, pod["metadata"]["name"])
        assert code == 0, err
    code, err = exec_as_launcher(cluster, indexed, "aaa")
    assert code != 0
    assert "may exec only into its job's workers (idxjob-cnode-*), not into pod aaa" in err, err
    # Its own RBAC alone would have allowed it: the overlay cannot name Indexed Job pods.
    sa = f"system:serviceaccount:{indexed}:idxjob-launcher"
    can = cluster.kubectl(
        "auth", "can-i", "create", "pods/aaa", "--subresource=exec", f"--as={sa}", "-n", indexed,
        check=False,
    )  # fmt: skip
    assert can.stdout.decode().strip() == "yes"
