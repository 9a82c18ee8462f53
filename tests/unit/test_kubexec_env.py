"""kubexec-env: the exports per MPI family (each is launched for real in test_kubexec_mpi.py)."""

from __future__ import annotations

import subprocess

import pytest

from k8smpi_runtime.kubexec import envhelp


def exported(text: str) -> dict[str, str]:
    """What a POSIX sh has in its environment after evaluating ``text``."""
    script = f"{text}\nenv -0"
    proc = subprocess.run(["sh", "-c", script], capture_output=True, check=True, env={}, timeout=10)
    pairs = (item.partition("=") for item in proc.stdout.decode().split("\0") if item)
    return {k: v for k, _, v in pairs if k not in ("PWD", "SHLVL", "_", "OLDPWD")}


@pytest.mark.parametrize(
    ("family", "expected"),
    [
        (
            "openmpi4",
            {"OMPI_MCA_plm_rsh_agent": "kubexec", "OMPI_MCA_orte_keep_fqdn_hostnames": "true"},
        ),
        ("openmpi5", {"PRTE_MCA_plm_ssh_agent": "kubexec"}),
        (
            "mpich",
            {
                "HYDRA_LAUNCHER": "rsh",
                "HYDRA_LAUNCHER_EXEC": "kubexec",
                "HYDRA_LAUNCHER_EXTRA_ARGS": "--no-forward-stdin",
            },
        ),
        (
            "intel",
            {
                "I_MPI_HYDRA_BOOTSTRAP": "ssh",
                "I_MPI_HYDRA_BOOTSTRAP_EXEC": "kubexec",
                "I_MPI_HYDRA_BOOTSTRAP_EXEC_EXTRA_ARGS": "--no-forward-stdin",
            },
        ),
    ],
)
def test_exports_per_family(family: str, expected: dict[str, str]) -> None:
    assert exported(envhelp.render(envhelp.exports(family))) == expected


def test_options_and_quoting(capsys: pytest.CaptureFixture[str]) -> None:
    assert envhelp.main(["impi", "--agent", "/opt/mpi bin/kubexec", "--no-tree-spawn",
                         "--namespace", "team-a"]) == 0  # fmt: skip
    got = exported(capsys.readouterr().out)
    assert got["I_MPI_HYDRA_BOOTSTRAP_EXEC"] == "/opt/mpi bin/kubexec"
    assert got["I_MPI_HYDRA_BRANCH_COUNT"] == "0"
    assert got["KUBEXEC_NAMESPACE"] == "team-a"
    no_tree = exported(envhelp.render(envhelp.exports("openmpi4", tree=False)))
    assert no_tree["OMPI_MCA_plm_rsh_no_tree_spawn"] == "1"
    no_tree5 = exported(envhelp.render(envhelp.exports("openmpi5", tree=False)))
    assert no_tree5["PRTE_MCA_plm_ssh_no_tree_spawn"] == "1"


def test_unknown_family_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        envhelp.main(["lam"])
    assert info.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
