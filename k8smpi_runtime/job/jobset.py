"""The JobSet shape (sigs.k8s.io/jobset), where JobSet is installed: one object for the pods.

- One JobSet ``<job>`` with two replicated jobs: ``cnode`` (an Indexed Job of the workers, host
  names ``<job>-cnode-0-<i>``) and ``launcher`` (one pod: the waiter, then the script). JobSet
  creates the headless Service ``<job>-hpc-cluster`` (not-ready addresses published).
- It ends when the launcher does (success policy on ``launcher``; any failed Job fails it, no
  restart): JobSet then deletes the still-running workers itself, so no sidecar is needed.
  ``ttlSecondsAfterFinished`` deletes the finished JobSet later.
- The launcher's Job has the same ``backoffLimit: 0`` and pod failure policy as the seed shape.
- The worker pods' names end in a random suffix, so the launcher's pods/exec rule cannot list
  them in advance: it covers the namespace's pods (``k8smpi-job submit`` narrows it to the
  workers once they exist). Run such jobs in a namespace of their own otherwise.
- Kueue (``--queue``): the queue label on the JobSet; Kueue admits the whole JobSet (both
  replicated jobs, one Workload) at once or keeps it suspended, with no pod created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from k8smpi_runtime.job import pods, shared

if TYPE_CHECKING:
    from k8smpi_runtime.job.spec import JobSpec

JSON = dict[str, Any]

API_VERSION = "jobset.x-k8s.io/v1alpha2"
WORKERS = "cnode"
LAUNCHER = "launcher"


def manifests(spec: JobSpec) -> list[JSON]:
    names = spec.names
    worker_job = shared.jobset_child(spec.name, WORKERS)
    rules = shared.launcher_rules(
        names,
        worker_pods=None,
        worker_kind="job",
        pods_exec=spec.kubexec or spec.preflight,
        hostfile=spec.hostfile,
    )
    objects = [*pods.rbac(spec, rules), *pods.configmaps(spec)]
    meta = pods.metadata(spec, spec.name)
    if spec.queue:
        meta["labels"][shared.KUEUE_QUEUE_LABEL] = spec.queue
    workers: JSON = {
        "completionMode": "Indexed",
        "completions": spec.workers,
        "parallelism": spec.workers,
        "backoffLimit": 0,
        "template": pods.worker_template(
            spec,
            restart_never=True,
            pod_labels=pods.labels(spec, "worker"),
            annotations={},
        ),
    }
    launcher: JSON = {
        "completions": 1,
        "parallelism": 1,
        "backoffLimit": 0,
        "podFailurePolicy": pods.POD_FAILURE_POLICY,
        "template": pods.launcher_template(
            spec,
            select=f"--job={worker_job}",
            pod_labels=pods.labels(spec, "launcher"),
            annotations=dict(spec.launcher_annotations),
            own_workers=None,
            # JobSet sets both: <job>-launcher-0-0 in the Service's subdomain.
            hostname=None,
            subdomain=None,
        ),
    }
    jobset_spec: JSON = {
        "ttlSecondsAfterFinished": spec.keep_for,
        "successPolicy": {"operator": "All", "targetReplicatedJobs": [LAUNCHER]},
        "failurePolicy": {"maxRestarts": 0},
    }
    if spec.service:
        jobset_spec["network"] = {
            "enableDNSHostnames": True,
            "subdomain": names.service,
            "publishNotReadyAddresses": True,
        }
    else:
        jobset_spec["network"] = {"enableDNSHostnames": False}
    jobset_spec["replicatedJobs"] = [
        {"name": WORKERS, "replicas": 1, "template": {"spec": workers}},
        {"name": LAUNCHER, "replicas": 1, "template": {"spec": launcher}},
    ]
    objects.append(
        {"apiVersion": API_VERSION, "kind": "JobSet", "metadata": meta, "spec": jobset_spec}
    )
    return objects
