"""deploy/'s whole flow on the devcluster's real node, as Kubernetes runs it: shared by
``make demo`` and the e2e tier.

A job is one of deploy/'s directories applied as shipped through an overlay written per run
(:func:`write_overlay`) that changes only what this machine needs:

- the namespace (deploy/ writes it into the pods' DNS search path: the overlay re-runs that
  wiring, as a user's overlay does);
- the images: the example user image ``make images`` built FROM the CPU image with the chosen
  MPI (workers and launcher) and the waiter image, by the tags the real node imported, with
  ``imagePullPolicy: Never`` (no registry here);
- placement: the real node's selector and toleration (it is tainted);
- settings the chosen MPI needs on a 2-core machine (:data:`LAUNCHER_ENV`), and whatever a
  test adds (a failing program, tree spawn).

Then Kubernetes runs it: the StatefulSet's workers, the launcher Job's init containers (the
waiter with the launcher's own token) and its main container (the batch script, calling plain
``mpirun``, whose daemons kubexec starts through pods/exec). :func:`wait_job` waits for the Job
to end and collects what a user would look at: the Job's conditions, the launcher pod's
container states and logs, and whether any pod of the job is left.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from devcluster.manifests import DEPLOY, Job, render
from devcluster.mpijobs import RANK_LINE
from devcluster.workloads import real_node_image
from images import build

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping
    from pathlib import Path

    from devcluster.client import JSON, Cluster

FLAVOURS = dict(
    zip(build.MPIS, ("Open MPI 4.1", "Open MPI 5.0", "MPICH", "Intel MPI"), strict=True)
)
"""The CPU image's MPI ARG values ``make images`` builds (``images.build.MPIS``), by name."""

LAUNCHER_ENV: dict[str, dict[str, str]] = {
    "openmpi4": {},
    # 4 ranks per pod on a 2-core machine: Open MPI 5 refuses to bind them a core each.
    "openmpi5": {"PRTE_MCA_hwloc_default_binding_policy": "none"},
    "mpich": {},
    "impi": {},
}
"""What each MPI needs in the launcher's environment on this machine (deploy/ sets the rest)."""

WORKER = "k8smpi.dev/role=worker"
LAUNCHER = "k8smpi.dev/role=launcher"


def image_key(flavour: str) -> str:
    """The real node's name for the example image with ``flavour``'s MPI
    (``devcluster.nodeimages.workload_tags``)."""
    return "example" if flavour == build.MPIS[0] else f"example-{flavour}"


def pod_patch(api_version: str, kind: str, name: str, pod_spec: JSON) -> JSON:
    """A kustomize ``patches:`` item: a strategic merge patch of an object's pod template
    (lists merge by container name; the containers it names come first)."""
    body = {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"name": name},
        "spec": {"template": {"spec": pod_spec}},
    }
    return {"patch": json.dumps(body)}


def write_overlay(
    tmp: Path,
    cluster: Cluster,
    namespace: str,
    *,
    source: str = "base",
    flavour: str = "openmpi4",
    launcher_env: Mapping[str, str | None] | None = None,
    patches: Iterable[JSON] = (),
    preflight: bool = False,
) -> Path:
    """An overlay of ``deploy/<source>`` that places the job on the real node; its directory.

    ``launcher_env`` adds to the launcher container's environment (None removes a variable);
    ``patches`` are more kustomize patches (``{"patch": ...}`` items). The waiter's preflight
    is off unless ``preflight``: the real node advertises ``nvidia.com/gpu`` but has no GPU, so
    the preflight rightly fails every job of deploy/base there.
    """
    rendered = Job(render(source))
    placement = cluster.state["real_nodes"]["placement"]
    waiter = real_node_image(cluster, "waiter")
    app = real_node_image(cluster, image_key(flavour))
    images: dict[str, str] = {}
    pod_patches: list[JSON] = []
    for obj in (rendered.workers, rendered.launcher):
        spec = obj["spec"]["template"]["spec"]
        patch: JSON = {**placement}
        for kind in ("initContainers", "containers"):
            for c in spec.get(kind) or []:
                name = c["image"].rsplit(":", 1)[0]
                images[name] = waiter if name.endswith("/waiter") else app
                entry: JSON = {"name": c["name"], "imagePullPolicy": "Never"}
                if c["name"] == "waiter" and not preflight:
                    entry["env"] = [{"name": "K8SMPI_PREFLIGHT", "value": "no-preflight"}]
                patch.setdefault(kind, []).append(entry)
        pod_patches.append(patch)
    env = {**LAUNCHER_ENV[flavour], **(launcher_env or {})}
    if env:
        pod_patches[1]["containers"][0]["env"] = [
            {"name": k, "value": v} if v is not None else {"name": k, "$patch": "delete"}
            for k, v in env.items()
        ]
    return namespaced(
        tmp,
        source,
        namespace,
        images=[
            {"name": name, "newName": tag.rsplit(":", 1)[0], "newTag": tag.rsplit(":", 1)[1]}
            for name, tag in images.items()
        ],
        patches=[
            *(
                pod_patch(obj["apiVersion"], obj["kind"], obj["metadata"]["name"], patch)
                for obj, patch in zip(
                    (rendered.workers, rendered.launcher), pod_patches, strict=True
                )
            ),
            *patches,
        ],
    )


def namespaced(
    tmp: Path,
    source: str,
    namespace: str,
    *,
    images: Iterable[JSON] = (),
    patches: Iterable[JSON] = (),
) -> Path:
    """An overlay of ``deploy/<source>`` in ``namespace`` (kustomize's ``namespace:`` and deploy/'s
    replacement that writes it into the DNS search path), with ``images`` and ``patches``; its
    directory, ``tmp``."""
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY / source, tmp)],
        "namespace": namespace,
        "images": list(images),
        "patches": list(patches),
        "replacements": namespace_wiring(),
    }
    (tmp / "kustomization.yaml").write_text(yaml.safe_dump(kustomization, sort_keys=False))
    return tmp


def namespace_wiring() -> list[JSON]:
    """deploy/'s replacement that writes the namespace into the pods' DNS search path
    (``<service>.<namespace>.svc.<domain>``): every overlay that sets ``namespace:`` needs it."""
    targets = [
        {
            "select": {"kind": kind},
            "fieldPaths": ["spec.template.spec.dnsConfig.searches.0"],
            "options": {"delimiter": ".", "index": 1},
        }
        for kind in ("StatefulSet", "Job")
    ]
    return [{"source": {"kind": "Service", "fieldPath": "metadata.namespace"}, "targets": targets}]


# -- running it --------------------------------------------------------------------------------


@dataclass
class Outcome:
    """How a job ended, as a user sees it with kubectl."""

    job: JSON
    launcher_pods: list[JSON]
    logs: dict[str, str] = field(default_factory=dict)
    """``container -> log`` of the (last) launcher pod."""
    workers: dict[str, JSON] = field(default_factory=dict)
    """Every worker pod seen while the job ran, as last seen (they are gone at the end)."""
    seconds: float = 0.0

    @property
    def condition(self) -> str:
        """``Complete``, ``Failed`` or ``""`` (still running)."""
        for c in self.job.get("status", {}).get("conditions", []):
            if c["type"] in ("Complete", "Failed") and c["status"] == "True":
                return str(c["type"])
        return ""

    @property
    def reason(self) -> str:
        for c in self.job.get("status", {}).get("conditions", []):
            if c["type"] == "Failed" and c["status"] == "True":
                return f"{c.get('reason', '')}: {c.get('message', '')}"
        return ""

    @property
    def pod(self) -> JSON:
        return self.launcher_pods[-1]

    def terminated(self, container: str) -> JSON:
        """The container's terminated state in the last launcher pod ({} if it never ended)."""
        status = self.pod.get("status", {})
        for s in status.get("initContainerStatuses", []) + status.get("containerStatuses", []):
            if s["name"] == container:
                return dict(s.get("state", {}).get("terminated") or {})
        return {}

    def ranks(self) -> list[tuple[int, int, int, str]]:
        """(rank, size, sum, host) per rank line of the launcher's log."""
        found = [RANK_LINE.fullmatch(line) for line in self.logs.get("launcher", "").splitlines()]
        return sorted(
            (int(m.group(1)), int(m.group(2)), int(m.group(3)), m.group(4)) for m in found if m
        )

    def describe(self) -> str:
        """Everything collected, for a failing test's message."""
        states = (
            {
                s["name"]: s.get("state")
                for s in self.pod.get("status", {}).get("initContainerStatuses", [])
                + self.pod.get("status", {}).get("containerStatuses", [])
            }
            if self.launcher_pods
            else {}
        )
        logs = "\n".join(f"--- {c}\n{text}" for c, text in self.logs.items())
        return (
            f"job {self.condition or 'running'} {self.reason}\n"
            f"launcher pods: {[p['metadata']['name'] for p in self.launcher_pods]}\n"
            f"states: {json.dumps(states, indent=1)}\n{logs}"
        )


def launcher_job(cluster: Cluster, namespace: str) -> JSON | None:
    """The launcher Job (the one Job whose pod template is the launcher's)."""
    for job in cluster.get("jobs", "-n", namespace)["items"]:
        labels = job["spec"]["template"]["metadata"].get("labels", {})
        if labels.get("k8smpi.dev/role") == "launcher":
            return dict(job)
    return None


def pods(cluster: Cluster, namespace: str, selector: str) -> list[JSON]:
    items: list[JSON] = cluster.get("pods", "-n", namespace, "-l", selector)["items"]
    return sorted(items, key=lambda p: (p["metadata"]["creationTimestamp"], p["metadata"]["name"]))


def logs(cluster: Cluster, namespace: str, pod: str, container: str) -> str:
    proc = cluster.kubectl("logs", "-n", namespace, pod, "-c", container, check=False)
    return proc.stdout.decode(errors="replace")


def wait_job(
    cluster: Cluster,
    namespace: str,
    timeout: float,
    *,
    tick: Callable[[JSON, list[JSON]], None] | None = None,
) -> Outcome:
    """Wait until the launcher Job is Complete or Failed (or ``timeout``); collect the rest.

    ``tick(job, pods)`` is called at every poll with the Job and the namespace's pods.
    """
    started = time.monotonic()
    job: JSON = {}
    workers: dict[str, JSON] = {}
    while time.monotonic() - started < timeout:
        job = launcher_job(cluster, namespace) or {}
        everything: list[JSON] = cluster.get("pods", "-n", namespace)["items"]
        for pod in everything:
            if pod["metadata"].get("labels", {}).get("k8smpi.dev/role") == "worker":
                workers[pod["metadata"]["name"]] = pod
        if tick is not None:
            tick(job, everything)
        if Outcome(job, []).condition:
            break
        time.sleep(0.5)
    outcome = Outcome(
        job,
        pods(cluster, namespace, LAUNCHER),
        workers=workers,
        seconds=time.monotonic() - started,
    )
    if outcome.launcher_pods:
        name = outcome.pod["metadata"]["name"]
        for container in ("own-workers", "waiter", "hydra-hostfile", "launcher"):
            outcome.logs[container] = logs(cluster, namespace, name, container)
    return outcome


def wait_workers_gone(cluster: Cluster, namespace: str, timeout: float) -> list[str]:
    """Poll until no worker pod is left; the names still there after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        left = [p["metadata"]["name"] for p in pods(cluster, namespace, WORKER)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


def launch(cluster: Cluster, overlay: Path, namespace: str) -> None:
    cluster.kubectl("apply", "-k", str(overlay), "-n", namespace)


def short(value: Any, limit: int = 160) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
