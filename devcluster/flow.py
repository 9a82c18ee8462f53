"""deploy/'s whole flow on the devcluster's kwok nodes: shared by the demo and its e2e test.

kwok nodes run no containers, so the launcher Job's two steps are exec'd into the launcher pod
(podexec runs them on this machine in the pod's view: its service-account token, namespace,
``KUBERNETES_SERVICE_HOST/PORT``, DNS, hostname and container env; it mounts no volumes and
ignores init containers):

1. the waiter init container's command, exactly as rendered, its hostfile written to a file
   instead of the emptyDir;
2. the batch script from the rendered ConfigMap, unchanged (plain ``mpirun``), on ``sh -s``'s
   stdin, with the launcher container's environment: the agent and the hostfile come from it.

The overlay (written per run) keeps the base and changes only what this machine needs: the MPI
launchers live under root's home, so pods run as root (``OMPI_ALLOW_RUN_AS_ROOT``), the agent and
the hostfile are paths on this machine, PATH finds the flavour's MPI, and Open MPI 5 does not
bind ranks to cores (every pod shares this machine's 2 cores).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import yaml

from devcluster.manifests import DEPLOY, Job
from devcluster.mpijobs import JobTimeout, sourced_env

BIN = Path(sys.executable).parent
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXPANSION = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def flow_overlay(tmp: Path, flavour: str, hostfile: Path) -> Path:
    """deploy/base, with this machine's paths and root; nothing else changed."""
    env = sourced_env(flavour)
    path = f"{Path(env['MPI_LAUNCHER']).parent}:{BIN}:{DEFAULT_PATH}"
    ld = env.get("LD_LIBRARY_PATH", "")
    root = {"runAsUser": 0, "runAsGroup": 0, "runAsNonRoot": False}
    launcher_env = {
        "PATH": path,
        "LD_LIBRARY_PATH": ld,
        "OMPI_ALLOW_RUN_AS_ROOT": "1",
        "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
        "OMPI_MCA_plm_rsh_agent": str(BIN / "kubexec"),
        "PRTE_MCA_plm_ssh_agent": str(BIN / "kubexec"),
        "OMPI_MCA_orte_default_hostfile": str(hostfile),
        "PRTE_MCA_prte_default_hostfile": str(hostfile),
        "MPI_TEST_PROGRAM": env["MPI_TEST_PROGRAM"],
        # All pods share this machine's 2 cores: 4 ranks per pod cannot bind a core each
        # (Open MPI 5 refuses; 4.1 binds only up to 2 ranks per node by default).
        "PRTE_MCA_hwloc_default_binding_policy": "none",
    }
    worker_env = {"PATH": path, "LD_LIBRARY_PATH": ld}

    def env_list(values: dict[str, str]) -> list[dict[str, str]]:
        return [{"name": k, "value": v} for k, v in values.items()]

    patches = [
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": "cnode"},
            "spec": {
                "template": {
                    "spec": {
                        "securityContext": root,
                        "containers": [{"name": "worker", "env": env_list(worker_env)}],
                    }
                }
            },
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "launcher"},
            "spec": {
                "template": {
                    "spec": {
                        "securityContext": root,
                        "containers": [{"name": "launcher", "env": env_list(launcher_env)}],
                    }
                }
            },
        },
    ]
    overlay = tmp / "overlay"
    overlay.mkdir()
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(DEPLOY / "base", overlay)],
        "patches": [{"patch": json.dumps(p)} for p in patches],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


def waiter_argv(j: Job, hostfile: Path) -> list[str]:
    """The waiter init container's command with its $(VAR)s expanded, as the kubelet would."""
    spec = j.launcher["spec"]["template"]["spec"]
    (waiter,) = [c for c in spec["initContainers"] if c["name"] == "waiter"]
    env = {e["name"]: e["value"] for e in waiter["env"]}
    argv = [EXPANSION.sub(lambda m: env[m.group(1)], word) for word in waiter["command"]]
    argv = [f"--hostfile-out={hostfile}" if a.startswith("--hostfile-out=") else a for a in argv]
    return [str(BIN / argv[0]), *argv[1:]]


class Ran:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr

    def __repr__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}--- stderr\n{self.stderr}"


def run_script(argv: list[str], script: str, timeout: float = 240) -> Ran:
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(script, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        raise JobTimeout(
            f"timed out after {timeout:.0f}s\n--- stdout\n{out}--- stderr\n{err}"
        ) from e
    return Ran(proc.returncode, out, err)
