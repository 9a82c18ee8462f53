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
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MPI_SRC = REPO / "devcluster" / "mpi"
INSTALL = MPI_SRC / "install.sh"
RUN_LOCAL = MPI_SRC / "run-local.sh"

FLAVOURS = ("openmpi4", "openmpi5", "mpich", "impi")
NP = 4
RUN_TIMEOUT_S = 120.0
QUERY_TIMEOUT_S = 30.0

RANK_LINE = re.compile(r"rank=(\d+) size=(\d+) sum=(\d+) host=(\S+)")

pytestmark = pytest.mark.e2e


def mpi_cache_dir() -> Path:
    """``${K8SMPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8smpi}/mpi``, as install.sh has it."""
    cache = os.environ.get("K8SMPI_CACHE") or ""
    if not cache:
        xdg = os.environ.get("XDG_CACHE_HOME") or str(Path(os.environ["HOME"]) / ".cache")
        cache = str(Path(xdg) / "k8smpi")
    return Path(cache).absolute() / "mpi"


@dataclass(frozen=True)
class Result:
    """What a finished command left behind."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"$ {' '.join(self.argv)}\nexit {self.returncode}\n"
            f"--- stdout\n{self.stdout}--- stderr\n{self.stderr}"
        )


def run_job(argv: list[str], env: dict[str, str], timeout: float) -> Result:
    """Run ``argv`` in its own session; on timeout kill the whole session and fail.

    MPI launchers leave ranks and daemons holding the output pipes, so a plain
    ``subprocess.run(timeout=...)``, which kills only its direct child, could still hang.
    """
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        pytest.fail(
            f"timed out after {timeout:.0f}s: {' '.join(argv)}\n--- stdout\n{out}--- stderr\n{err}",
            pytrace=False,
        )
    return Result(argv, proc.returncode, out, err)


def query(argv: list[str], env: dict[str, str]) -> Result:
    """A quick command that starts no MPI job (a version query, sourcing an env file)."""
    proc = subprocess.run(
        argv,
        capture_output=True,
        stdin=subprocess.DEVNULL,
        env=env,
        text=True,
        timeout=QUERY_TIMEOUT_S,
        check=False,
    )
    return Result(argv, proc.returncode, proc.stdout, proc.stderr)


def env_file(flavour: str) -> Path:
    """The flavour's env file; fails (never skips) when install.sh has not written it."""
    path = mpi_cache_dir() / "env" / f"{flavour}.env"
    if not path.is_file():
        pytest.fail(
            f"{path} is missing: run `bash {INSTALL.relative_to(REPO)}` (make mpi) before the e2e "
            "tier; the MPI launchers are part of it and are never skipped",
            pytrace=False,
        )
    return path


def sourced_env(*flavours: str) -> dict[str, str]:
    """The environment after sourcing the env files of ``flavours`` in order, with POSIX sh."""
    files = [str(env_file(f)) for f in flavours]
    script = 'for f in "$@"; do . "$f" || exit 1; done; exec env -0'
    res = query(["sh", "-c", script, "sh", *files], dict(os.environ))
    assert res.returncode == 0, f"sourcing {files} failed:\n{res.describe()}"
    pairs = (item.partition("=") for item in res.stdout.split("\0") if item)
    return {name: value for name, _, value in pairs}


def path_entries(env: dict[str, str], name: str) -> list[str]:
    return [p for p in env.get(name, "").split(":") if p]


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


def assert_allreduce_output(res: Result, np: int) -> None:
    """Exit 0 and exactly one ``rank=R size=NP sum=NP(NP+1)/2 host=H`` line per rank."""
    assert res.returncode == 0, f"the MPI job failed:\n{res.describe()}"
    lines = res.stdout.splitlines()
    assert len(lines) == np, f"expected {np} output lines, got {len(lines)}:\n{res.describe()}"
    parsed = [RANK_LINE.fullmatch(line) for line in lines]
    assert all(parsed), f"unexpected output line(s):\n{res.describe()}"
    ranks = sorted(int(m.group(1)) for m in parsed if m)
    assert ranks == list(range(np)), f"ranks {ranks}, expected 0..{np - 1}:\n{res.describe()}"
    expected = (str(np), str(np * (np + 1) // 2))
    wrong = [m.group(0) for m in parsed if m and (m.group(2), m.group(3)) != expected]
    assert not wrong, f"expected size={expected[0]} sum={expected[1]}, got {wrong}"


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
