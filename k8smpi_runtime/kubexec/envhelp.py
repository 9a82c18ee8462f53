"""``kubexec-env``: what to export so that an MPI family's launcher starts its daemons with kubexec.

A separate command, because ``kubexec`` itself keeps ssh's grammar (``kubexec --print-env x``
would read as options before a host)::

    eval "$(kubexec-env openmpi4)"        # then mpirun as usual
    kubexec-env --help

Each family, as tested on the devcluster (tests/e2e/test_kubexec_mpi.py):

- ``openmpi4`` (ORTE): ``OMPI_MCA_plm_rsh_agent``; ``OMPI_MCA_orte_keep_fqdn_hostnames=true``
  so FQDN hostfile entries reach kubexec whole (ORTE shortens them otherwise).
- ``openmpi5`` (PRRTE): ``PRTE_MCA_plm_ssh_agent``. ``OMPI_MCA_plm_rsh_agent`` in the
  environment is ignored by 5.0.x (PRRTE then runs ``ssh``); ``--mca plm_ssh_agent`` on the
  command line also works.
- ``mpich`` (Hydra): ``HYDRA_LAUNCHER=rsh`` + ``HYDRA_LAUNCHER_EXEC``.
- ``intel`` (Intel MPI's Hydra): ``I_MPI_HYDRA_BOOTSTRAP=ssh`` + ``I_MPI_HYDRA_BOOTSTRAP_EXEC``.

Hydra gives its agents a stdin pipe that nobody writes to; ``--no-forward-stdin`` (through
the launchers' extra-args variables) spares kubexec reading and framing a stdin that never
carries anything. Tree spawn (remote daemons starting the next ones through kubexec)
needs kubexec and RBAC for the pods' service account in the worker pods, and, for Intel MPI,
worker host names that resolve from pod to pod; ``--no-tree-spawn`` turns it off.
"""

from __future__ import annotations

import argparse
import shlex
import sys

FLAVOURS = ("openmpi4", "openmpi5", "mpich", "intel")
ALIASES = {"impi": "intel", "ompi4": "openmpi4", "ompi5": "openmpi5"}


def exports(
    flavour: str, *, agent: str = "kubexec", namespace: str | None = None, tree: bool = True
) -> list[tuple[str, str, str]]:
    """``(name, value, why)`` for ``flavour``, in the order to print them."""
    flavour = ALIASES.get(flavour, flavour)
    out: list[tuple[str, str, str]] = []
    if flavour == "openmpi4":
        out.append(("OMPI_MCA_plm_rsh_agent", agent, "ORTE starts orted through kubexec"))
        out.append(
            (
                "OMPI_MCA_orte_keep_fqdn_hostnames",
                "true",
                "FQDN hostfile entries reach kubexec whole (namespace from the name)",
            )
        )
        if not tree:
            out.append(("OMPI_MCA_plm_rsh_no_tree_spawn", "1", "only mpirun runs kubexec"))
    elif flavour == "openmpi5":
        out.append(
            (
                "PRTE_MCA_plm_ssh_agent",
                agent,
                "PRRTE starts prted through kubexec (5.0.x ignores OMPI_MCA_plm_rsh_agent)",
            )
        )
        if not tree:
            out.append(("PRTE_MCA_plm_ssh_no_tree_spawn", "1", "only mpirun runs kubexec"))
    elif flavour == "mpich":
        out.append(("HYDRA_LAUNCHER", "rsh", "Hydra's rsh launcher: no -x, plain argv"))
        out.append(("HYDRA_LAUNCHER_EXEC", agent, "the agent Hydra runs per host"))
        out.append(
            (
                "HYDRA_LAUNCHER_EXTRA_ARGS",
                "--no-forward-stdin",
                "the proxies read no stdin: nothing to frame and forward",
            )
        )
    elif flavour == "intel":
        out.append(("I_MPI_HYDRA_BOOTSTRAP", "ssh", "Intel MPI's ssh bootstrap (adds -q -x)"))
        out.append(("I_MPI_HYDRA_BOOTSTRAP_EXEC", agent, "the agent it runs per host"))
        out.append(
            (
                "I_MPI_HYDRA_BOOTSTRAP_EXEC_EXTRA_ARGS",
                "--no-forward-stdin",
                "the proxies read no stdin: nothing to frame and forward",
            )
        )
        if not tree:
            out.append(("I_MPI_HYDRA_BRANCH_COUNT", "0", "only mpiexec runs kubexec"))
    else:
        raise ValueError(f"unknown MPI family {flavour!r}")
    if namespace:
        out.append(("KUBEXEC_NAMESPACE", namespace, "namespace of host names without one"))
    return out


def render(items: list[tuple[str, str, str]]) -> str:
    lines = []
    for name, value, why in items:
        lines.append(f"# {why}")
        lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="kubexec-env",
        description="Print the shell exports that make an MPI launcher use kubexec "
        '(use: eval "$(kubexec-env FAMILY)").',
    )
    parser.add_argument("family", choices=sorted((*FLAVOURS, *ALIASES)), help="MPI family")
    parser.add_argument(
        "--agent",
        default="kubexec",
        help="kubexec as the launcher should run it: a name on PATH (default) or a path "
        "that exists in every image, e.g. /opt/mpi/bin/kubexec",
    )
    parser.add_argument("--namespace", help="also export KUBEXEC_NAMESPACE")
    parser.add_argument(
        "--no-tree-spawn",
        action="store_true",
        help="only the launcher runs kubexec (worker images need neither kubexec nor RBAC)",
    )
    args = parser.parse_args(argv)
    text = render(
        exports(
            args.family, agent=args.agent, namespace=args.namespace, tree=not args.no_tree_spawn
        )
    )
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
