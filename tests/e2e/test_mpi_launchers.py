"""The four MPI launchers of the e2e tier run a real job on this machine.

``devcluster/mpi/install.sh`` (run by ``make mpi`` before pytest) installs Open MPI 4.1 (Debian),
Open MPI 5.0, MPICH and Intel MPI (PyPI), builds ``devcluster/mpi/allreduce.c`` against each and
writes one env file per flavour. These tests read those env files (a missing one is a failure,
never a skip), check that each flavour is isolated and reports the version its env file
records, and run 4 ranks through ``devcluster/mpi/run-local.sh``, the invocation humans use.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest

from devcluster.mpijobs import (
    FLAVOURS,
    RUN_LOCAL,
    Result,
    assert_allreduce_output,
    env_file,
    mpi_cache_dir,
    path_entries,
    query,
    run_job,
    sourced_env,
)

NP = 4
RUN_TIMEOUT_S = 120.0

pytestmark = pytest.mark.e2e


def reported_version(flavour: str, env: dict[str, str]) -> str:
    """The version that the flavour's own launcher (or mpichversion) reports."""
    launcher = env["MPI_LAUNCHER"]
    if flavour in ("openmpi4", "openmpi5"):
        res = query([launcher, "--version"], env)
        pattern = r"\(Open MPI\) (\d[^\s]*)"
    elif flavour == "mpich":
        res = query([str(Path(launcher).parent / "mpichversion")], env)
        pattern = r"^MPICH Version:\s+(\d[^\s]*)"
    else:
        res = query([launcher, "-V"], env)
        pattern = r"Intel\(R\) MPI Library .*Version (\d[^\s]*)"
    assert res.returncode == 0, f"{flavour}: version query failed:\n{res.describe()}"
    match = re.search(pattern, res.stdout + res.stderr, re.MULTILINE)
    assert match, f"{flavour}: no version matching {pattern!r} in:\n{res.describe()}"
    return match.group(1)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_env_file_isolates_the_flavour(flavour: str) -> None:
    """Only this flavour's MPI is on PATH, even after sourcing every other env file first."""
    others = [f for f in FLAVOURS if f != flavour]
    env = sourced_env(*others, flavour)
    cache = str(mpi_cache_dir())
    assert env.get("MPI_FLAVOUR") == flavour, f"MPI_FLAVOUR={env.get('MPI_FLAVOUR')!r}"
    for name in ("MPI_LAUNCHER", "MPI_TEST_PROGRAM"):
        value = env.get(name, "")
        assert Path(value).is_absolute(), f"{name}={value!r} is not an absolute path"
        assert os.access(value, os.X_OK), f"{name}={value!r} is not executable"
        assert value.startswith(cache + os.sep), f"{name}={value!r} is outside {cache}"
    flavour_dir = Path(env["MPI_TEST_PROGRAM"]).parent
    found = shutil.which("mpirun", path=env["PATH"])
    assert found == env["MPI_LAUNCHER"], f"mpirun on PATH is {found}, not {env['MPI_LAUNCHER']}"
    for var in ("PATH", "LD_LIBRARY_PATH"):
        foreign = [
            p
            for p in path_entries(env, var)
            if p.startswith(cache + os.sep) and not Path(p).is_relative_to(flavour_dir)
        ]
        assert not foreign, f"{var} still holds other flavours' directories: {foreign}"


def test_debian_openmpi_is_not_confused_with_the_others() -> None:
    """openmpi4 is Debian's Open MPI by its own name; nothing else touches the alternatives."""
    env = sourced_env("openmpi4")
    launcher = Path(env["MPI_LAUNCHER"])
    target = launcher.readlink() if launcher.is_symlink() else launcher
    assert target == Path("/usr/bin/mpirun.openmpi"), (
        f"openmpi4's launcher {launcher} -> {target}, not Debian's /usr/bin/mpirun.openmpi "
        "(never the /usr/bin/mpirun alternative, which another MPI package may own)"
    )
    cache = str(mpi_cache_dir())
    for name in ("mpirun", "mpiexec", "mpi"):
        res = query(["update-alternatives", "--list", name], dict(os.environ))
        into_cache = [line for line in res.stdout.splitlines() if line.startswith(cache)]
        assert not into_cache, f"Debian alternative {name} points into the cache: {into_cache}"
    for flavour in ("openmpi5", "mpich", "impi"):
        bin_dir = Path(sourced_env(flavour)["MPI_LAUNCHER"]).parent
        shadowing = sorted(
            p.name for p in bin_dir.iterdir() if p.name.startswith(("python", "pip"))
        )
        assert not shadowing, f"sourcing {flavour}.env would shadow {shadowing} from {bin_dir}"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_env_file_version_is_what_the_launcher_reports(flavour: str) -> None:
    env = sourced_env(flavour)
    recorded = env.get("MPI_VERSION", "")
    assert recorded, f"{env_file(flavour)} sets no MPI_VERSION"
    reported = reported_version(flavour, env)
    assert reported == recorded, (
        f"{flavour}: MPI_VERSION={recorded} in {env_file(flavour)}, but the launcher reports "
        f"{reported}; rerun install.sh"
    )
    versions_txt = (mpi_cache_dir() / "versions.txt").read_text()
    assert re.search(rf"^{flavour}\s+{re.escape(recorded)}\s", versions_txt, re.MULTILINE), (
        f"versions.txt does not list {flavour} {recorded}:\n{versions_txt}"
    )


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_allreduce_with_four_ranks(flavour: str) -> None:
    env_file(flavour)
    res = run_job(["bash", str(RUN_LOCAL), flavour, str(NP)], dict(os.environ), RUN_TIMEOUT_S)
    assert_allreduce_output(res, NP)


def test_intel_mpi_over_libfabric_tcp() -> None:
    """Ranks on different pods need OFI: Intel MPI with Debian's libfabric and the tcp provider."""
    env_file("impi")
    env = dict(os.environ, I_MPI_FABRICS="ofi", FI_PROVIDER="tcp", I_MPI_DEBUG="5")
    res = run_job(["bash", str(RUN_LOCAL), "impi", str(NP)], env, RUN_TIMEOUT_S)
    stdout = "\n".join(line for line in res.stdout.splitlines() if not line.startswith("["))
    assert_allreduce_output(Result(res.argv, res.returncode, stdout + "\n", res.stderr), NP)
    assert "libfabric provider: tcp" in res.stdout + res.stderr, (
        f"Intel MPI did not use libfabric's tcp provider:\n{res.describe()}"
    )
