"""The seed talk's shape, for any cluster: StatefulSet + headless Service + ConfigMaps + Job.

- Workers: a StatefulSet ``<job>-cnode`` (stable names ``<job>-cnode-<i>``, all started at
  once), its pods' DNS names through the headless Service ``<job>-hpc-cluster``.
- Launcher: a Job ``<job>-launcher`` whose pod has hostname ``launcher`` in that Service's
  subdomain (the Service publishes not-ready addresses, so the name resolves while the pod is
  still in its init containers: Hydra's proxies dial back to it).
- Failure: ``backoffLimit: 0`` and a pod failure policy: a non-zero exit of the waiter or of the
  script fails the Job once (mpirun's exit status stays in the launcher container's terminated
  state); a pod lost to a disruption is replaced.
- Ownership: the launcher's first init container is a native sidecar (``k8smpi-job
  own-workers``) that gives the StatefulSet an ownerReference to the launcher Job as soon as the
  pod starts, and deletes it when the script has ended (the kubelet stops sidecars after the
  main container). The Job's ``ttlSecondsAfterFinished`` deletes the Job later, and with it
  anything it owns: the backstop when the sidecar could not delete the workers.
- Kueue (``--queue``): the workers and the launcher form one Kueue pod group (``<job>``, workers
  + 1 pods): Kueue admits all of them at once or none (each pod is created with a scheduling
  gate that Kueue removes when the whole group fits the queue's quota).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from k8smpi_runtime.job import pods, shared

if TYPE_CHECKING:
    from k8smpi_runtime.job.spec import JobSpec

JSON = dict[str, Any]


def _kueue(spec: JobSpec) -> tuple[dict[str, str], dict[str, str]]:
    """Pod-template labels and annotations that make workers + launcher one Kueue pod group."""
    if not spec.queue:
        return {}, {}
    return (
        {shared.KUEUE_QUEUE_LABEL: spec.queue, shared.KUEUE_POD_GROUP_LABEL: spec.name},
        {
            shared.KUEUE_POD_GROUP_COUNT: str(spec.workers + 1),
            # The group is over when the launcher has ended and the workers are deleted; a
            # failed pod is not replaced (the Job fails instead).
            shared.KUEUE_RETRIABLE: "false",
        },
    )


def manifests(spec: JobSpec) -> list[JSON]:
    names = spec.names
    kueue_labels, kueue_annotations = _kueue(spec)
    worker_labels = pods.labels(spec, "worker")
    launcher_labels = pods.labels(spec, "launcher")
    rules = shared.launcher_rules(
        names,
        worker_pods=names.worker_pods(spec.workers),
        worker_kind="statefulset",
        pods_exec=spec.kubexec or spec.preflight,
        hostfile=spec.hostfile,
    )
    objects = [*pods.rbac(spec, rules), *pods.configmaps(spec)]
    if spec.service:
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": pods.metadata(spec, names.service),
                "spec": {
                    "clusterIP": "None",
                    # Names resolve before pods are Ready: the launcher's while it waits.
                    "publishNotReadyAddresses": True,
                    "selector": {shared.JOB_LABEL: spec.name},
                },
            }
        )
    objects.append(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": pods.metadata(spec, names.workers),
            "spec": {
                "replicas": spec.workers,
                "podManagementPolicy": "Parallel",
                "serviceName": names.service,
                "selector": {"matchLabels": worker_labels},
                "template": pods.worker_template(
                    spec,
                    restart_never=False,
                    pod_labels={**worker_labels, **kueue_labels},
                    annotations={**kueue_annotations},
                ),
            },
        }
    )
    launcher_annotations = {**dict(spec.launcher_annotations), **kueue_annotations}
    objects.append(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": pods.metadata(spec, names.launcher),
            "spec": {
                "backoffLimit": 0,
                "podFailurePolicy": pods.POD_FAILURE_POLICY,
                "ttlSecondsAfterFinished": spec.keep_for,
                "template": pods.launcher_template(
                    spec,
                    select=f"--statefulset={names.workers}",
                    pod_labels={**launcher_labels, **kueue_labels},
                    annotations=launcher_annotations,
                    own_workers=names.workers,
                    hostname=shared.LAUNCHER_HOSTNAME if spec.service else None,
                    subdomain=names.service if spec.service else None,
                ),
            },
        }
    )
    return objects
