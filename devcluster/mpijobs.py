"""The e2e tier's MPI launchers: their env files, and running a job to its end.

``devcluster/mpi/install.sh`` (``make mpi``) installs Open MPI 4.1 (Debian), Open MPI 5.0, MPICH
and Intel MPI (PyPI), builds ``devcluster/mpi/allreduce.c`` against each and writes one env file
per flavour. Shared by the e2e tests, the demo and the benchmarks.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MPI_SRC = REPO / "devcluster" / "mpi"
INSTALL = MPI_SRC / "install.sh"
RUN_LOCAL = MPI_SRC / "run-local.sh"

FLAVOURS = ("openmpi4", "openmpi5", "mpich", "impi")
QUERY_TIMEOUT_S = 30.0

RANK_LINE = re.compile(r"rank=(\d+) size=(\d+) sum=(\d+) host=(\S+)")
"""What the test program prints once per rank."""


class MpiMissing(Exception):
    """An MPI launcher of the e2e tier is not installed (``make mpi`` did not run)."""


class JobTimeout(Exception):
    """A job ran past its time; its whole session was killed."""


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
    except subprocess.TimeoutExpired as e:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        raise JobTimeout(
            f"timed out after {timeout:.0f}s: {' '.join(argv)}\n--- stdout\n{out}--- stderr\n{err}"
        ) from e
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
        raise MpiMissing(
            f"{path} is missing: run `bash {INSTALL.relative_to(REPO)}` (make mpi) first; "
            "the MPI launchers are part of the e2e tier and are never skipped"
        )
    return path


def sourced_env(*flavours: str) -> dict[str, str]:
    """The environment after sourcing the env files of ``flavours`` in order, with POSIX sh."""
    files = [str(env_file(f)) for f in flavours]
    script = 'for f in "$@"; do . "$f" || exit 1; done; exec env -0'
    res = query(["sh", "-c", script, "sh", *files], dict(os.environ))
    if res.returncode != 0:
        raise MpiMissing(f"sourcing {files} failed:\n{res.describe()}")
    pairs = (item.partition("=") for item in res.stdout.split("\0") if item)
    return {name: value for name, _, value in pairs}


def path_entries(env: dict[str, str], name: str) -> list[str]:
    return [p for p in env.get(name, "").split(":") if p]


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
