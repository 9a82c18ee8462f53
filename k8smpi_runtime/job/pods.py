"""The worker and launcher pod templates, the same in both shapes. Pure: spec in, dicts out.

Decisions every pod follows (README, "What k8smpi-job renders"):

- Pod Security ``restricted``: non-root (the caller's ids by default), no privilege escalation,
  every capability dropped, the runtime's default seccomp profile. No ``IPC_LOCK``: for a
  non-root uid it never reaches the effective set, and ``baseline`` already refuses it; locked
  memory (InfiniBand registration) comes from the node's container runtime limit
  (``LimitMEMLOCK=infinity``), not from the pod.
- ``/dev/shm`` is a memory-backed ``emptyDir`` (the runtime's default is 64 MiB).
- Workers get no API token, share their process namespace (the pause container reaps the
  orphans of finished daemons) and sleep until mpirun starts daemons in them through kubexec.
- The DNS search path names the job's Service, as the seed's ``dnsConfig.searches`` does, so
  short host names (``<job>-cnode-3``, ``launcher``) resolve from every pod.
- The launcher asks for no GPU and hides the node's (``NVIDIA_VISIBLE_DEVICES=void``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from k8smpi_runtime.job import shared

if TYPE_CHECKING:
    from k8smpi_runtime.job.spec import JobSpec

JSON = dict[str, Any]

POD_NAME_ENV = {
    "name": "K8SMPI_POD_NAME",
    "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
}
"""The pod's own name (the waiter exempts its own pod, and finds its DNS name, by it)."""


def duration(seconds: int) -> str:
    """``600`` -> ``10m``, ``5400`` -> ``90m``, ``7200`` -> ``2h``: the waiter's syntax."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


def labels(spec: JobSpec, role: str | None = None) -> dict[str, str]:
    out = {shared.JOB_LABEL: spec.name}
    if role is not None:
        out[shared.ROLE_LABEL] = role
    return out


def object_labels(spec: JobSpec) -> dict[str, str]:
    """On every object k8smpi-job renders."""
    return {
        shared.JOB_LABEL: spec.name,
        shared.SHAPE_LABEL: spec.shape,
        shared.MANAGED_BY[0]: shared.MANAGED_BY[1],
    }


def metadata(spec: JobSpec, name: str, **extra: Any) -> JSON:
    meta: JSON = {"name": name, "namespace": spec.namespace, "labels": object_labels(spec)}
    meta.update(extra)
    return meta


def pod_security(spec: JobSpec) -> JSON:
    sc: JSON = {}
    if spec.user is not None:
        sc["runAsUser"] = spec.user.uid
        sc["runAsGroup"] = spec.user.gid
        if spec.user.groups:
            sc["supplementalGroups"] = list(spec.user.groups)
    sc["runAsNonRoot"] = True
    sc["seccompProfile"] = {"type": "RuntimeDefault"}
    return sc


CONTAINER_SECURITY: JSON = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def dns_config(spec: JobSpec) -> JSON | None:
    if not (spec.service and spec.dns):
        return None
    return {"searches": [f"{spec.names.service}.{spec.namespace}.svc.{spec.cluster_domain}"]}


def image(spec: JobSpec, ref: str) -> JSON:
    """A container's image, with the job's pull policy when it sets one."""
    out: JSON = {"image": ref}
    if spec.image_pull_policy:
        out["imagePullPolicy"] = spec.image_pull_policy
    return out


def _env(pairs: list[tuple[str, str]] | tuple[tuple[str, str], ...]) -> list[JSON]:
    return [{"name": k, "value": v} for k, v in pairs]


def _common_spec(spec: JobSpec) -> JSON:
    pod: JSON = {"enableServiceLinks": False, "securityContext": pod_security(spec)}
    dns = dns_config(spec)
    if dns is not None:
        pod["dnsConfig"] = dns
    if spec.node_selector:
        pod["nodeSelector"] = dict(spec.node_selector)
    if spec.tolerations:
        pod["tolerations"] = [dict(t) for t in spec.tolerations]
    return pod


# -- workers -----------------------------------------------------------------------------------


def worker_resources(spec: JobSpec) -> JSON:
    amounts: dict[str, str | int] = {}
    if spec.cpu is not None:
        amounts["cpu"] = spec.cpu
    if spec.memory is not None:
        amounts["memory"] = spec.memory
    for name, count in spec.resources:
        amounts[name] = count
    # Requests = limits: the scheduler reserves what the ranks may use (extended resources
    # allow nothing else).
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def worker_template(
    spec: JobSpec, *, restart_never: bool, pod_labels: dict[str, str], annotations: dict[str, str]
) -> JSON:
    container: JSON = {
        "name": "worker",
        **image(spec, spec.image),
        # mpirun's daemons arrive through kubexec; until then (and after) the pod just sleeps.
        "command": ["sleep", "infinity"],
        "securityContext": CONTAINER_SECURITY,
    }
    if spec.env:
        container["env"] = _env(spec.env)
    resources = worker_resources(spec)
    if resources:
        container["resources"] = resources
    container["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]  # noqa: S108
    pod: JSON = {
        # Workers never call the API: mpirun runs without tree spawn from the launcher.
        "automountServiceAccountToken": False,
        # PID 1 is then the pause container, which reaps orphaned daemons' zombies.
        "shareProcessNamespace": True,
        **_common_spec(spec),
    }
    if restart_never:
        pod["restartPolicy"] = "Never"
    pod["containers"] = [container]
    pod["volumes"] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": spec.shm}}]
    meta: JSON = {"labels": pod_labels}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": pod}


# -- launcher ----------------------------------------------------------------------------------


def waiter_command(spec: JobSpec, select: str) -> list[str]:
    """The waiter's command line: wait for the workers, then write the hostfile."""
    argv = [
        "k8s-waitfor",
        select,
        f"--timeout={duration(spec.wait_timeout)}",
    ]
    if spec.kubexec:
        # RBAC and the worker containers are proven here, before mpirun depends on them.
        argv.append("--exec-probe")
    if spec.preflight:
        # GPUs, driver against the image's CUDA, HCAs, limits: in every worker, before mpirun.
        argv.append("--preflight")
    if not spec.dns:
        argv.append("--no-dns")
    elif spec.flavour.dials_back:
        # Hydra's proxies dial back to the launcher's own name: it must resolve too.
        argv.append("--resolve-self")
    if spec.hostfile:
        if spec.slots is not None:
            argv.append(f"--slots={spec.slots}")
        else:
            argv.append(f"--resource={spec.slots_resource}")
        argv += [
            f"--format={spec.flavour.hostfile_format}",
            f"--hostfile-out={spec.flavour.hostfile_path}",
            f"--configmap={spec.names.hostfile}",
        ]
    argv.append("--progress=log")
    return argv


def launcher_env(spec: JobSpec) -> list[JSON]:
    pairs = spec.flavour.launcher_env(kubexec=spec.kubexec, hostfile=spec.hostfile)
    per_worker = spec.slots_per_worker
    if spec.flavour.ranks_per_host_env and per_worker is not None:
        pairs.append((spec.flavour.ranks_per_host_env, str(per_worker)))
    # Open MPI's rsh launcher names the local shell from the passwd entry, else $SHELL, and
    # warns in the job's output when neither says (a uid without a passwd entry).
    pairs.append(("SHELL", "/bin/sh"))
    # The launcher asks for no GPU; CUDA base images default to every GPU of the node.
    pairs.append(("NVIDIA_VISIBLE_DEVICES", "void"))
    pairs.append(("K8SMPI_JOB", spec.name))
    if spec.kubexec:
        # kubexec's scope, the workers' job label, written out: otherwise kubexec reads the
        # label from its own pod, a GET on every call.
        pairs.append(("KUBEXEC_SELECTOR", f"{shared.JOB_LABEL}={spec.name}"))
    pairs.append(("K8SMPI_NODES", str(spec.workers)))
    if per_worker is not None:
        pairs.append(("K8SMPI_SLOTS_PER_NODE", str(per_worker)))
        pairs.append(("K8SMPI_NP", str(per_worker * spec.workers)))
    if spec.hostfile:
        pairs.append(("K8SMPI_HOSTFILE", spec.flavour.hostfile_path))
    pairs += list(spec.env)
    return _env(pairs)


def batch_command(spec: JobSpec) -> list[str]:
    """The script by its own ``#!`` line when it has one, else through ``sh``."""
    path = f"{shared.BATCH_DIR}/{shared.BATCH_KEY}"
    return [path] if spec.script.startswith("#!") else ["sh", path]


def launcher_template(
    spec: JobSpec,
    *,
    select: str,
    pod_labels: dict[str, str],
    annotations: dict[str, str],
    own_workers: str | None,
    hostname: str | None,
    subdomain: str | None,
) -> JSON:
    """The launcher pod: [sidecar,] waiter, then the batch script.

    ``own_workers``: the worker StatefulSet the sidecar ties to this Job and deletes when the
    script has ended (seed shape); None in a JobSet, which ends its workers itself.
    """
    small = {"requests": {"cpu": "100m", "memory": "128Mi"}}
    init: list[JSON] = []
    if own_workers is not None:
        init.append(
            {
                "name": "own-workers",
                **image(spec, spec.waiter_image),
                # A native sidecar: started first, stopped (SIGTERM) after the script ends.
                "restartPolicy": "Always",
                "command": ["k8smpi-job", "own-workers", f"--statefulset={own_workers}"],
                "env": [POD_NAME_ENV],
                "resources": small,
                "securityContext": CONTAINER_SECURITY,
            }
        )
    # The hostfile's emptyDir (not there with mpiOptions.hostfile off: the image's own
    # /opt/mpi/etc stays visible then).
    mpi_etc = [{"name": "mpi-etc", "mountPath": shared.MPI_ETC}] if spec.hostfile else []
    waiter: JSON = {
        "name": "waiter",
        **image(spec, spec.waiter_image),
        "command": waiter_command(spec, select),
        "env": [POD_NAME_ENV],
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "securityContext": CONTAINER_SECURITY,
        # Its last lines land in the pod's status when it fails (submit shows them).
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    if mpi_etc:
        waiter["volumeMounts"] = mpi_etc
    init.append(waiter)
    main: JSON = {
        "name": "launcher",
        **image(spec, spec.image),
        "command": batch_command(spec),
        "env": launcher_env(spec),
        "resources": {"requests": {"cpu": spec.launcher_cpu, "memory": spec.launcher_memory}},
        "securityContext": CONTAINER_SECURITY,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        # mpirun reads the hostfile the waiter wrote into the shared emptyDir (a ConfigMap
        # volume would reach the pod only after the kubelet's sync period).
        "volumeMounts": [
            *({**m, "readOnly": True} for m in mpi_etc),
            {"name": "batch", "mountPath": shared.BATCH_DIR, "readOnly": True},
        ],
    }
    pod: JSON = {
        "serviceAccountName": spec.names.launcher,
        "restartPolicy": "Never",
        # The run-time limit, counted from the pod's start (not from the submission: time in
        # a queue does not count), like Slurm's --time.
        "activeDeadlineSeconds": spec.time_limit,
    }
    if hostname is not None:
        pod["hostname"] = hostname
    if subdomain is not None:
        pod["subdomain"] = subdomain
    pod.update(_common_spec(spec))
    pod["initContainers"] = init
    pod["containers"] = [main]
    pod["volumes"] = [
        *({"name": m["name"], "emptyDir": {}} for m in mpi_etc),
        {
            "name": "batch",
            "configMap": {
                "name": spec.names.batch,
                # Executable, so a script with a #! line runs with its own interpreter.
                "defaultMode": 0o555,
            },
        },
    ]
    meta: JSON = {"labels": pod_labels}
    if annotations:
        meta["annotations"] = annotations
    return {"metadata": meta, "spec": pod}


POD_FAILURE_POLICY: JSON = {
    "rules": [
        # A launcher pod lost to a node drain or preemption: the Job starts another.
        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget"}]},
        # The waiter or mpirun failed: the job fails now, once, without a rerun.
        {"action": "FailJob", "onExitCodes": {"operator": "NotIn", "values": [0]}},
    ]
}


# -- the objects beside the pods ---------------------------------------------------------------


def rbac(spec: JobSpec, rules: list[JSON]) -> list[JSON]:
    name = spec.names.launcher
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": metadata(spec, name)},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(spec, name),
            "rules": rules,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(spec, name),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name}],
        },
    ]


def configmaps(spec: JobSpec) -> list[JSON]:
    out: list[JSON] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(spec, spec.names.batch),
            "data": {shared.BATCH_KEY: spec.script},
        }
    ]
    if spec.hostfile:
        # Filled by the waiter (for people and tools; mpirun reads the emptyDir copy).
        out.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": metadata(spec, spec.names.hostfile),
                "data": {shared.HOSTFILE_KEY: ""},
            }
        )
    return out


def kueue_pod_labels(spec: JobSpec) -> dict[str, str]:
    return {shared.KUEUE_QUEUE_LABEL: spec.queue} if spec.queue else {}
