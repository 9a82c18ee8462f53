"""The launcher's side of MPI: its agent variables for the MPI in the image, and its hostfile.

The agent variable per MPI family comes from ``kubexec-env``
(:mod:`k8smpi_runtime.kubexec.envhelp`): Open MPI 4.1 reads ``OMPI_MCA_plm_rsh_agent``;
Open MPI 5's PRRTE reads ``PRTE_MCA_plm_ssh_agent`` and ignores the former; MPICH's Hydra
``HYDRA_LAUNCHER_EXEC``; Intel MPI ``I_MPI_HYDRA_BOOTSTRAP_EXEC``. The MPI in the image is the
one versions.json records (``detected.openmpi``), else told by the environment (``I_MPI_ROOT``).
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

from k8smpi_runtime import hosts
from k8smpi_runtime.kubexec import envhelp
from k8smpi_runtime.preflight.model import ABSENT, FAIL, OK, SKIP, WARN, Finding
from k8smpi_runtime.selection import SelectionError, hostfile_hosts, pod_name

if TYPE_CHECKING:
    from collections.abc import Sequence

    from k8smpi_runtime.preflight.host import Host
    from k8smpi_runtime.preflight.image import Image
    from k8smpi_runtime.selection import Pod

#: Where each launcher finds its default hostfile (the images set the first four).
HOSTFILE_VARS = (
    "K8SMPI_HOSTFILE",
    "OMPI_MCA_orte_default_hostfile",
    "PRTE_MCA_prte_default_hostfile",
    "HYDRA_HOST_FILE",
    "I_MPI_HYDRA_HOST_FILE",
)
NAMES = {
    "openmpi4": "Open MPI 4",
    "openmpi5": "Open MPI 5 (PRRTE)",
    "mpich": "MPICH (Hydra)",
    "intel": "Intel MPI",
}


def family(image: Image, env: dict[str, str]) -> tuple[str, str] | None:
    """(kubexec-env family, version text) of the MPI in the image."""
    version = str(image.detected.get("openmpi") or "")
    if version.startswith("4."):
        return "openmpi4", version
    if version.startswith("5."):
        return "openmpi5", version
    if env.get("I_MPI_ROOT"):
        return "intel", env["I_MPI_ROOT"]
    if image.detected.get("mpich"):
        return "mpich", str(image.detected["mpich"])
    return None


def _resolves(host: Host, value: str, path: str) -> bool:
    if "/" in value:
        target = host.path(value)
        return target.is_file() and os.access(target, os.X_OK)
    return host.live and shutil.which(value, path=path) is not None


def check_env(host: Host, image: Image) -> Finding:
    env = dict(host.env)
    found_family = family(image, env)
    if found_family is None:
        return Finding("mpi-env", ABSENT, "no MPI recorded in the image")
    name, version = found_family
    label = f"{NAMES[name]} {version}"
    exports = envhelp.exports(name, agent="kubexec")
    agent_var = next(var for var, value, _ in exports if value == "kubexec")
    value = env.get(agent_var)
    if not value:
        if name == "openmpi5" and env.get("OMPI_MCA_plm_rsh_agent"):
            return Finding(
                "mpi-env",
                FAIL,
                f"{label}: OMPI_MCA_plm_rsh_agent set, {agent_var} unset",
                f"{agent_var}=kubexec",
                "Open MPI 5 (PRRTE) ignores OMPI_MCA_plm_rsh_agent and runs ssh",
            )
        return Finding(
            "mpi-env",
            WARN,
            f"{label}: {agent_var} unset",
            f"{agent_var}=kubexec",
            f"mpirun will start its daemons with ssh unless the script names an agent: "
            f'eval "$(kubexec-env {name})"',
        )
    if not _resolves(host, value.split()[0], env.get("PATH", os.defpath)):
        return Finding(
            "mpi-env",
            FAIL,
            f"{label}: {agent_var}={value} (not an executable here)",
            "kubexec at that path",
            "the agent must exist in the launcher's image (and in the workers' for tree spawn)",
        )
    wrong = [
        f"{var}={env.get(var, '')}"
        for var, want, _ in exports
        if want != "kubexec" and var.endswith(("_LAUNCHER", "_BOOTSTRAP")) and env.get(var) != want
    ]
    if wrong:
        return Finding("mpi-env", FAIL, f"{label}: {', '.join(wrong)}", "see kubexec-env " + name)
    return Finding("mpi-env", OK, f"{label}: {agent_var}={value}")


def hostfile_path(host: Host, explicit: str | None) -> tuple[str, str] | None:
    if explicit:
        return explicit, "--check-hostfile"
    for var in HOSTFILE_VARS:
        if host.env.get(var):
            return host.env[var], f"${var}"
    return None


def check_hostfile(  # noqa: PLR0911 - one return per rule
    host: Host, explicit: str | None, pods: Sequence[Pod] | None, namespace: str | None
) -> Finding:
    where = hostfile_path(host, explicit)
    if where is None:
        return Finding("hostfile", SKIP, "no default hostfile configured")
    path, source = where
    text = host.read(path)
    if text is None:
        return Finding(
            "hostfile",
            FAIL,
            f"{path} ({source}) missing",
            "a hostfile",
            "mount the hostfile ConfigMap there (k8s-waitfor --configmap / hostfile-gen)",
        )
    try:
        names = hostfile_hosts(text)
    except SelectionError as e:
        return Finding("hostfile", FAIL, f"{path}: {e}", "a hostfile in any MPI dialect")
    if not names:
        return Finding(
            "hostfile",
            WARN,
            f"{path} names no host",
            "the job's pods",
            "mpirun would run every rank in this pod",
        )
    if pods is None:
        return Finding("hostfile", OK, f"{path}: {len(names)} hosts")
    unknown: list[str] = []
    matched: set[str] = set()
    for name in names:
        try:
            ref = hosts.parse_host(name)
        except hosts.HostError:
            unknown.append(name)
            continue
        if ref.namespace is not None and namespace is not None and ref.namespace != namespace:
            unknown.append(name)
            continue
        pod = hosts.find(ref, list(pods))
        if pod is None:
            unknown.append(name)
        else:
            matched.add(pod_name(pod))
    missing = [pod_name(p) for p in pods if pod_name(p) not in matched]
    found = f"{path}: {len(names)} hosts"
    if unknown:
        return Finding(
            "hostfile",
            FAIL,
            f"{found}; not pods of the job: {', '.join(unknown[:5])}",
            f"the {len(pods)} pods of the job",
            "a stale hostfile: regenerate it (k8s-waitfor --configmap, hostfile-gen)",
        )
    if missing:
        return Finding(
            "hostfile",
            WARN,
            f"{found}; leaves out {', '.join(missing[:5])}",
            f"the {len(pods)} pods of the job",
        )
    return Finding("hostfile", OK, f"{found}, all pods of the job")
