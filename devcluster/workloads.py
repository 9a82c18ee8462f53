"""Worker pods for the kubexec e2e tests, pods for the real nodes, and ways to run kubexec and
look for leftovers.

Worker pods ask for no GPUs: other tests share the devcluster's 16.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from devcluster.client import JSON, Cluster, wait_for

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

REPO = Path(__file__).resolve().parents[1]
KUBEXEC = Path(sys.executable).parent / "kubexec"
"""The console script in the venv (``pip install -e .``)."""
KUBEXEC_ENV = Path(sys.executable).parent / "kubexec-env"
DEFAULT_NODES = {"k8smpi.dev/devcluster": "true"}
"""The devcluster's own nodes: extra nodes other tests add (and remove) are never used."""


def statefulset(
    name: str = "w",
    *,
    service: str = "hpc",
    replicas: int = 4,
    security_context: JSON | None = None,
    env: Mapping[str, str] | None = None,
    service_account: str | None = None,
) -> list[JSON]:
    """A headless Service and a StatefulSet of ``replicas`` pods labelled ``app=<name>``."""
    container: JSON = {"name": "main", "image": "k8smpi/cpu:dev", "command": ["sleep", "inf"]}
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    pod_spec: JSON = {"containers": [container], "nodeSelector": DEFAULT_NODES}
    if security_context:
        pod_spec["securityContext"] = security_context
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": service},
            "spec": {"clusterIP": "None", "selector": {"app": name}},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "podManagementPolicy": "Parallel",
                "serviceName": service,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
            },
        },
    ]


def kubexec_rbac(name: str, *, pods: Iterable[str] | None = None) -> list[JSON]:
    """A service account ``name`` with what kubexec needs: pods get/list, and pods/exec
    create/get on ``pods`` by name (None: on every pod of the namespace)."""
    exec_rule: JSON = {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]}
    if pods is not None:
        exec_rule["resourceNames"] = list(pods)
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": name},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
                exec_rule,
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name}],
        },
    ]


def real_node_image(cluster: Cluster, variant: str) -> str:
    """The tag of ``make images``' ``variant`` (cpu, waiter, example, pause) in the real nodes'
    containerd: imported by ``python3 -m devcluster up``."""
    info = cluster.state.get("real_nodes") or {}
    if not info.get("nodes"):
        raise AssertionError("the devcluster runs no real node (DEVCLUSTER_REAL_NODES=0?)")
    images: dict[str, str] = info["images"]
    if variant not in images:
        raise AssertionError(
            f"the {variant} image is not in the real node's containerd: run `make images`, then"
            " `make devcluster` (it imports what podman has)"
        )
    return images[variant]


def real_node_extra_image(cluster: Cluster, variant: str) -> str:
    """The tag of an image ``up`` does not import (``base-pypi``: ``make images-cuda``), put
    into every real node's containerd now from podman's store (again only after a rebuild)."""
    from devcluster import nodeimages  # noqa: PLC0415 - podman's side, only for this
    from devcluster.layout import DevclusterError  # noqa: PLC0415

    info = cluster.state.get("real_nodes") or {}
    if not info.get("nodes"):
        raise AssertionError("the devcluster runs no real node (DEVCLUSTER_REAL_NODES=0?)")
    try:
        return nodeimages.import_variant([n["ctr"] for n in info["nodes"]], variant)
    except DevclusterError as e:
        raise AssertionError(str(e)) from None


def real_node_pod(
    cluster: Cluster,
    name: str,
    *,
    image: str = "cpu",
    command: list[str] | None = None,
    labels: Mapping[str, str] | None = None,
    run_as: int | None = 4242,
    limits: Mapping[str, str | int] | None = None,
    **spec: Any,
) -> JSON:
    """A pod for a real node: one container from ``make images``' ``image`` variant (never
    pulled), the real node's selector and toleration, uid ``run_as`` (no passwd entry; None:
    the image's USER). ``spec`` adds pod spec fields (hostname, subdomain, ...)."""
    container: JSON = {
        "name": "main",
        "image": real_node_image(cluster, image),
        "imagePullPolicy": "Never",
        "command": command or ["sleep", "infinity"],
    }
    if limits:
        container["resources"] = {"limits": dict(limits)}
    pod_spec: JSON = {
        **cluster.state["real_nodes"]["placement"],
        "containers": [container],
        "terminationGracePeriodSeconds": 1,
        **spec,
    }
    if run_as is not None:
        pod_spec["securityContext"] = {"runAsUser": run_as, "runAsGroup": 0, "runAsNonRoot": True}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": pod_spec,
    }


def running_pods(cluster: Cluster, namespace: str, selector: str, count: int) -> list[JSON]:
    """Wait until ``count`` pods matching ``selector`` are Running and Ready with an IP."""

    def ready() -> list[JSON] | None:
        pods = cluster.get("pods", "-n", namespace, "-l", selector)["items"]
        ok = [
            p
            for p in pods
            if p["status"].get("phase") == "Running"
            and p["status"].get("podIP")
            and any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in p["status"].get("conditions", [])
            )
        ]
        return sorted(ok, key=lambda p: p["metadata"]["name"]) if len(ok) == count else None

    return wait_for(ready, timeout=120, what=f"{count} Running pods ({selector}) in {namespace}")


def kubexec_env(cluster: Cluster, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEXEC_")}
    env["KUBECONFIG"] = str(cluster.kubeconfig)
    env.update(extra or {})
    return env


def run_kubexec(
    cluster: Cluster,
    *args: str,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
    stdin: Any = subprocess.DEVNULL,
) -> subprocess.CompletedProcess[bytes]:
    """Run the kubexec console script; stdin is /dev/null unless ``input`` is given."""
    return subprocess.run(
        [str(KUBEXEC), *args],
        input=input,
        stdin=None if input is not None else stdin,
        capture_output=True,
        env=kubexec_env(cluster, env),
        timeout=timeout,
        check=False,
    )


def processes_with(token: str, *, exclude: Iterable[int] = (), cmdline: bool = False) -> list[str]:
    """Live processes (not zombies) whose environment (or command line) holds ``token``."""
    needle = token.encode()
    skip = {os.getpid(), *exclude}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state in ("Z", "X"):
            continue
        if needle in environ or (cmdline and needle in argv):
            words = argv.replace(b"\0", b" ")[:120].decode(errors="replace")
            found.append(f"{entry.name}:{words}")
    return found


TEARDOWN_S = 10.0
"""How long a pod's processes may take to go after their kubexec did (its grace is 5 s)."""


def wait_gone(
    token: str, timeout: float, *, exclude: Iterable[int] = (), cmdline: bool = False
) -> list[str]:
    """Poll until no process holds ``token``; what is left after ``timeout`` (empty: none)."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_with(token, exclude=exclude, cmdline=cmdline)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)
