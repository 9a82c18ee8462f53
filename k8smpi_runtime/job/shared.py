"""What an MPI job is made of, defined once: names, paths, each flavour's environment, RBAC.

``k8smpi-job render`` builds its manifests from these, and ``tests/unit/test_job_deploy_agree.py``
checks deploy/ (the readable kustomize reference) against the same definitions, so the two cannot
drift apart where they overlap.

Names follow the seed talk and deploy/: a job named ``my`` has workers ``my-cnode-<i>``, the
headless Service ``my-hpc-cluster``, the launcher Job, ServiceAccount and Role ``my-launcher``,
the hostfile ConfigMap ``my-hostfile`` and the batch script's ConfigMap ``my-batch``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from k8smpi_runtime import __version__
from k8smpi_runtime.kubexec import envhelp

JSON = dict[str, Any]

# -- labels ------------------------------------------------------------------------------------

JOB_LABEL = "k8smpi.dev/job"
"""On every object and pod of a job: its name. Selectors carry it, so two jobs never mix."""
ROLE_LABEL = "k8smpi.dev/role"
"""``worker`` or ``launcher`` on the pod templates."""
SHAPE_LABEL = "k8smpi.dev/shape"
"""``statefulset`` or ``jobset`` on the objects k8smpi-job renders (status reads it)."""
MANAGED_BY = ("app.kubernetes.io/managed-by", "k8smpi-job")

# -- fixed paths in the images (images/ and deploy/ use the same) ------------------------------

AGENT = "/opt/mpi/bin/kubexec"
MPI_ETC = "/opt/mpi/etc"
BATCH_DIR = "/opt/batch"
BATCH_KEY = "batch.sh"
HOSTFILE_KEY = "hostfile"

WAITER_IMAGE = f"localhost/k8smpi/waiter:{__version__}-bookworm"
"""The waiter image ``make images`` tags (package version, Debian suite)."""

# -- names -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Names:
    """Every name of one job's objects, from the job's name."""

    job: str

    @property
    def workers(self) -> str:
        """The worker StatefulSet (pods ``<workers>-<i>``), or the JobSet's worker job."""
        return f"{self.job}-cnode"

    @property
    def service(self) -> str:
        return f"{self.job}-hpc-cluster"

    @property
    def launcher(self) -> str:
        """The launcher Job (or the JobSet's launcher job), its ServiceAccount, Role, binding."""
        return f"{self.job}-launcher"

    @property
    def hostfile(self) -> str:
        return f"{self.job}-hostfile"

    @property
    def batch(self) -> str:
        return f"{self.job}-batch"

    def worker_pods(self, count: int) -> list[str]:
        """The StatefulSet's pod names, ``<workers>-0 .. <workers>-<count-1>``."""
        return [f"{self.workers}-{i}" for i in range(count)]


LAUNCHER_HOSTNAME = "launcher"
"""The launcher pod's hostname in the seed shape: ``launcher.<service>`` resolves (Hydra and
Intel MPI proxies dial back to the launcher by the name it reports)."""

# -- MPI flavours ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Flavour:
    """One MPI family: the launcher's environment and the hostfile it reads."""

    name: str
    title: str
    #: Agent variables: mpirun starts its remote daemons through these (kubexec).
    agent_env: tuple[tuple[str, str], ...]
    #: Hostfile variables: mpirun reads its hosts from these.
    hostfile_env: tuple[tuple[str, str], ...]
    #: hostfile-gen's format (``--format``).
    hostfile_format: str
    hostfile_path: str
    #: Whether remote daemons dial back to the launcher by its host name (Hydra does).
    dials_back: bool
    #: The variable that sets ranks per host where the hostfile's counts are ignored.
    ranks_per_host_env: str | None = None

    def launcher_env(self, *, kubexec: bool = True, hostfile: bool = True) -> list[tuple[str, str]]:
        return [*(self.agent_env if kubexec else ()), *(self.hostfile_env if hostfile else ())]


HOSTFILE = f"{MPI_ETC}/hostfile"
HYDRA_HOSTFILE = f"{MPI_ETC}/hostfile.hydra"


def agent_env(family: str) -> tuple[tuple[str, str], ...]:
    """kubexec-env's exports for ``family`` without tree spawn (only the launcher calls the
    API, so workers need no token), the agent at its fixed path in the images."""
    return tuple(
        (name, value)
        for name, value, _ in envhelp.exports(family, agent=AGENT, tree=False)
        # The hostfile names pods (kubexec's names), never FQDNs: nothing for ORTE to keep.
        if name != "OMPI_MCA_orte_keep_fqdn_hostnames"
    )


_OPENMPI4_HOSTFILE = (("OMPI_MCA_orte_default_hostfile", HOSTFILE),)
# 5.0 reads PRRTE's spelling (it ignores the OMPI_MCA_ ones from the environment).
_OPENMPI5_HOSTFILE = (("PRTE_MCA_prte_default_hostfile", HOSTFILE),)

FLAVOURS: dict[str, Flavour] = {
    f.name: f
    for f in (
        # Either Open MPI: both spellings, each version reads its own (the images set both too).
        Flavour(
            name="openmpi",
            title="Open MPI 4.1 or 5",
            agent_env=agent_env("openmpi4") + agent_env("openmpi5"),
            hostfile_env=_OPENMPI4_HOSTFILE + _OPENMPI5_HOSTFILE,
            hostfile_format="openmpi",
            hostfile_path=HOSTFILE,
            dials_back=False,
        ),
        Flavour(
            name="openmpi4",
            title="Open MPI 4.1 (ORTE)",
            agent_env=agent_env("openmpi4"),
            hostfile_env=_OPENMPI4_HOSTFILE,
            hostfile_format="openmpi",
            hostfile_path=HOSTFILE,
            dials_back=False,
        ),
        Flavour(
            name="openmpi5",
            title="Open MPI 5 (PRRTE)",
            agent_env=agent_env("openmpi5"),
            hostfile_env=_OPENMPI5_HOSTFILE,
            hostfile_format="openmpi",
            hostfile_path=HOSTFILE,
            dials_back=False,
        ),
        Flavour(
            name="mpich",
            title="MPICH (Hydra)",
            agent_env=agent_env("mpich"),
            hostfile_env=(("HYDRA_HOST_FILE", HYDRA_HOSTFILE),),
            hostfile_format="hydra",
            hostfile_path=HYDRA_HOSTFILE,
            dials_back=True,
        ),
        Flavour(
            name="intel",
            title="Intel MPI (Hydra)",
            agent_env=agent_env("intel"),
            hostfile_env=(("I_MPI_HYDRA_HOST_FILE", HYDRA_HOSTFILE),),
            hostfile_format="hydra",
            hostfile_path=HYDRA_HOSTFILE,
            dials_back=True,
            # Intel MPI's mpirun places I_MPI_PERHOST ranks per host (default: every core),
            # whatever the host file's counts say.
            ranks_per_host_env="I_MPI_PERHOST",
        ),
    )
}

# -- the launcher's permissions ----------------------------------------------------------------


def launcher_rules(
    names: Names,
    *,
    worker_pods: list[str] | None,
    worker_kind: str = "statefulset",
    pods_exec: bool = True,
    hostfile: bool = True,
    own_workers: bool = True,
) -> list[JSON]:
    """The launcher Role's rules: the least the waiter, kubexec and the worker owner need.

    ``worker_pods``: the pods kubexec may exec into, by name; None where their names are not
    known in advance (Job and JobSet pods end in a random suffix): then the rule covers the
    namespace's pods. ``worker_kind``: ``statefulset`` (the seed shape: the waiter reads
    ``spec.replicas``; the sidecar adopts and deletes it) or ``job`` (the JobSet's worker Job).
    ``pods_exec``: into the workers (kubexec, the waiter's exec probe and preflight).
    """
    rules: list[JSON] = [
        # k8s-waitfor, hostfile-gen, kubexec: one list + one watch of the pods, a GET by name.
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    ]
    if pods_exec:
        rule: JSON = {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]}
        if worker_pods is not None:
            rule["resourceNames"] = list(worker_pods)
        rules.append(rule)
    if hostfile:
        rules += [
            {
                "apiGroups": [""],
                "resources": ["configmaps"],
                "verbs": ["get", "update", "patch"],
                "resourceNames": [names.hostfile],
            },
            # Recreate the hostfile ConfigMap if someone deleted it (create has no name).
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]},
        ]
    if worker_kind == "statefulset":
        # get: the waiter reads spec.replicas; patch + delete: the launcher's sidecar adopts the
        # workers (ownerReference) and deletes them when the launcher's main container ends.
        verbs = ["get", "patch", "delete"] if own_workers else ["get"]
        rules.append(
            {
                "apiGroups": ["apps"],
                "resources": ["statefulsets"],
                "verbs": verbs,
                "resourceNames": [names.workers],
            }
        )
    else:
        rules.append(
            {
                "apiGroups": ["batch"],
                "resources": ["jobs"],
                "verbs": ["get"],
                "resourceNames": [jobset_child(names.job, "cnode")],
            }
        )
    return rules


def jobset_child(jobset: str, replicated_job: str, index: int = 0) -> str:
    """The name JobSet gives a child Job: ``<jobset>-<replicatedJob>-<index>``."""
    return f"{jobset}-{replicated_job}-{index}"


# -- Kueue -------------------------------------------------------------------------------------

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_POD_GROUP_LABEL = "kueue.x-k8s.io/pod-group-name"
KUEUE_POD_GROUP_COUNT = "kueue.x-k8s.io/pod-group-total-count"
KUEUE_RETRIABLE = "kueue.x-k8s.io/retriable-in-group"
KUEUE_GATE = "kueue.x-k8s.io/admission"
"""The scheduling gate Kueue puts on the pods of a group until it admits the whole group."""
