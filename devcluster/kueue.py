"""Kueue (sigs.k8s.io/kueue) beside the devcluster: gang admission for k8smpi-job's jobs.

What differs from a cluster install, and why (each was needed here):

- it manages only namespaces labelled ``k8smpi.dev/kueue=enabled`` (its
  ``managedJobsNamespaceSelector``, and the namespaceSelector of its webhooks for namespaced
  objects), and only jobs that carry a queue label: nothing else changes, even while it is down;
- only the integrations used here are on (``batch/job``, ``jobset.x-k8s.io/jobset``,
  ``statefulset``, which brings ``pod``), and only their webhooks are registered, so no create
  waits on a webhook path Kueue does not serve;
- it reads its metrics certificate from the fixed path ``/etc/kueue/metrics/certs``: it runs in
  a private mount namespace with an overlay over ``/etc`` that has that folder (the host's
  ``/etc`` is never written); ``VisibilityOnDemand`` is off (it reads another fixed path);
- a ResourceFlavor ``default`` and a ClusterQueue ``devcluster`` hold the kwok nodes' resources
  (every resource jobs request must be listed: one missing blocks admission);
- its ``/readyz`` says ok before its controllers run: :func:`wait_for_admission` waits for one
  real admission.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from devcluster.controlplane import kubectl
from devcluster.layout import DevclusterError

if TYPE_CHECKING:
    from pathlib import Path

    from devcluster.addons import AddonPorts
    from devcluster.layout import Layout

NAME = "kueue"
NAMESPACE = "kueue-system"
API = "kueue.x-k8s.io/v1beta2"
LABEL = "k8smpi.dev/kueue"
LABEL_VALUE = "enabled"
CLUSTER_QUEUE = "devcluster"
FRAMEWORKS = ("batch/job", "jobset.x-k8s.io/jobset", "statefulset", "pod")
#: The resources of those integrations: only their webhooks (and Kueue's own) are registered.
WEBHOOK_RESOURCES = frozenset({"jobs", "jobsets", "statefulsets", "pods"})
#: Quota of the ClusterQueue: what k8smpi-job's pods ask for.
COVERED = ("cpu", "memory", "nvidia.com/gpu", "rdma/hca")
PROBE_NAMESPACE = "k8smpi-kueue-probe"

JSON = dict[str, Any]


def opt_in() -> JSON:
    return {"matchLabels": {LABEL: LABEL_VALUE}}


def config(ports: AddonPorts, certs: Path) -> str:
    cfg = {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {
            "port": ports.of(NAME, "webhook"),
            "host": "127.0.0.1",
            "certDir": str(certs),
        },
        "metrics": {"bindAddress": f"127.0.0.1:{ports.of(NAME, 'metrics')}"},
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports.of(NAME, 'health')}"},
        "manageJobsWithoutQueueName": False,
        "managedJobsNamespaceSelector": opt_in(),
        "integrations": {"frameworks": list(FRAMEWORKS)},
        "featureGates": {"VisibilityOnDemand": False},
    }
    return json.dumps(cfg, indent=2) + "\n"


# The overlay's upper layer holds kueue/metrics/certs; the host's /etc is its lower layer.
WRAPPER = (
    'mount -t overlay overlay -o "lowerdir=/etc,upperdir=$0/upper,workdir=$0/work" /etc '
    '&& exec "$@"'
)


def private_etc(root: Path, certs: Path) -> Path:
    """The overlay's folders, with the metrics certificate where Kueue looks for it."""
    etc = root / "kueue-etc"
    metrics = etc / "upper" / "kueue" / "metrics" / "certs"
    metrics.mkdir(parents=True, exist_ok=True)
    (etc / "work").mkdir(exist_ok=True)
    for name in ("tls.crt", "tls.key"):
        (metrics / name).write_bytes((certs / name).read_bytes())
    (metrics / "tls.key").chmod(0o600)
    return etc


def argv(lay: Layout, binary: Path, config_file: Path, etc: Path) -> list[str]:
    return [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        WRAPPER,
        str(etc),
        str(binary),
        f"--kubeconfig={lay.component_kubeconfig(NAME)}",
        f"--config={config_file}",
    ]


def namespace(name: str, labels: dict[str, str] | None = None) -> JSON:
    meta: JSON = {"name": name}
    if labels:
        meta["labels"] = labels
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": meta}


def _total(quantity: str, count: int) -> str:
    if quantity.endswith("Ki"):
        return f"{int(quantity[:-2]) * count}Ki"
    if quantity.endswith("k"):
        return str(int(quantity[:-1]) * 1000 * count)
    return str(int(quantity) * count)


def cluster_queue(count: int, resources: dict[str, str]) -> list[JSON]:
    """A ResourceFlavor and a ClusterQueue holding ``count`` nodes' ``resources``."""
    quotas = [{"name": r, "nominalQuota": _total(resources[r], count)} for r in COVERED]
    return [
        {"apiVersion": API, "kind": "ResourceFlavor", "metadata": {"name": "default"}},
        {
            "apiVersion": API,
            "kind": "ClusterQueue",
            "metadata": {"name": CLUSTER_QUEUE},
            "spec": {
                "namespaceSelector": {},
                "resourceGroups": [
                    {
                        "coveredResources": list(COVERED),
                        "flavors": [{"name": "default", "resources": quotas}],
                    }
                ],
            },
        },
    ]


def namespace_objects(name: str, queue: str = "hpc") -> list[JSON]:
    """What a namespace needs to queue jobs here: the opt-in label and a LocalQueue.

    Not named ``default``: Kueue (0.17: always) queues every job of a namespace that has a
    LocalQueue of that name, each object on its own -- k8smpi-job's seed shape, whose workers
    and launcher Kueue must see as one pod group, then refuses the namespace.
    """
    return [
        namespace(name, {LABEL: LABEL_VALUE}),
        {
            "apiVersion": API,
            "kind": "LocalQueue",
            "metadata": {"name": queue, "namespace": name},
            "spec": {"clusterQueue": CLUSTER_QUEUE},
        },
    ]


def _probe_job() -> JSON:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": "probe",
            "namespace": PROBE_NAMESPACE,
            "labels": {"kueue.x-k8s.io/queue-name": "probe"},
        },
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    # Admitted, never placed: it only has to be unsuspended.
                    "nodeSelector": {"k8smpi.dev/no-such-node": "true"},
                    "containers": [
                        {"name": "c", "image": "none", "resources": {"requests": {"cpu": "1m"}}}
                    ],
                }
            },
        },
    }


def wait_for_admission(lay: Layout, timeout: float = 90) -> None:
    """One tiny queued Job admitted (unsuspended) by Kueue: its controllers really run."""
    objects = namespace_objects(PROBE_NAMESPACE, queue="probe")
    doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    kubectl(lay, "apply", "-f", "-", stdin=doc)
    delete = ("delete", "job", "probe", "-n", PROBE_NAMESPACE, "--ignore-not-found", "--wait=true")
    kubectl(lay, *delete)
    kubectl(lay, "create", "-f", "-", stdin=json.dumps(_probe_job()))
    deadline = time.monotonic() + timeout
    try:
        while True:
            got = json.loads(
                kubectl(lay, "get", "job", "probe", "-n", PROBE_NAMESPACE, "-o", "json")
            )
            if got["spec"].get("suspend") is False:
                return
            if time.monotonic() > deadline:
                raise DevclusterError(
                    f"Kueue admitted nothing within {timeout:.0f}s; see {lay.logs / 'kueue.log'}"
                )
            time.sleep(0.5)
    finally:
        kubectl(lay, *delete, "--cascade=foreground")
