"""The four MPI launchers start their daemons in 4 pods through kubexec, and leave nothing behind.

The launcher runs on this machine (as root, like a launcher pod's ``mpirun``) with the admin
kubeconfig. Worker pods run as root with a service account allowed what kubexec needs, and
with kubexec on their PATH (as an image that installs it would have): with tree spawn, remote
daemons start the next daemons through kubexec from inside the pods, with the pods' own
service-account credentials. The apiserver's audit log shows who exec'd what into which pod.

Worker pods add their Service's domain to their DNS search list (``dnsConfig.searches``), so
the short hostnames the launchers pass around (Intel MPI's tree, Hydra's control host)
resolve from pod to pod; the launcher's host name resolves through the machine's /etc/hosts.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devcluster.client import Cluster, wait_for
from devcluster.mpijobs import (
    RANK_LINE,
    Result,
    assert_allreduce_output,
    run_job,
    sourced_env,
)
from devcluster.workloads import (
    KUBEXEC,
    KUBEXEC_ENV,
    REPO,
    kubexec_rbac,
    running_pods,
    statefulset,
)
from k8smpi_runtime.kubexec import remote
from tests.e2e.podexec_idle import short_stream_idle_timeout

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.timeout(600)

NP = 4
WORKERS = tuple(f"mpiw-{i}" for i in range(NP))
SERVICE = "mpi"
SA = "mpi"
JOB_TIMEOUT_S = 120.0
POD_PATH = f"{KUBEXEC.parent}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""PATH inside the worker pods: podexec's default with kubexec's folder in front."""
DAEMONS = {
    "openmpi4": "orted",
    "openmpi5": "prted",
    "mpich": "hydra_pmi_proxy",
    "impi": "hydra_bstrap_proxy",
}


@dataclass(frozen=True)
class Mpi:
    cluster: Cluster
    namespace: str
    domain: str

    def fqdn(self, pod: str) -> str:
        return f"{pod}.{SERVICE}.{self.namespace}.svc.{self.domain}"

    @property
    def short_hosts(self) -> list[str]:
        return [f"{pod}.{SERVICE}" for pod in WORKERS]

    @property
    def sa_user(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{SA}"


@pytest.fixture(scope="module")
def mpi(cluster: Cluster) -> Iterator[Mpi]:
    namespace = cluster.create_namespace("kubexec-mpi")
    domain = cluster.state.get("cluster_domain", "cluster.local")
    try:
        objects = statefulset(
            "mpiw", service=SERVICE, replicas=NP, env={"PATH": POD_PATH}, service_account=SA
        )
        objects[1]["spec"]["template"]["spec"]["dnsConfig"] = {
            "searches": [f"{SERVICE}.{namespace}.svc.{domain}"]
        }
        cluster.apply([*kubexec_rbac(SA, pods=WORKERS), *objects], namespace)
        running_pods(cluster, namespace, "app=mpiw", NP)
        yield Mpi(cluster, namespace, domain)
    finally:
        leftovers = pod_processes()
        for pid in leftovers:
            _kill(pid)
        cluster.delete_namespace(namespace)


# -- what happened, from the audit log and /proc ----------------------------------------------


@dataclass(frozen=True)
class Exec:
    pod: str
    user: str
    mode: str
    """The wrapper's mode: lifeline, forward or tty (the command itself travels on stdin and
    is in no log; kubexec's only execs in these tests start the launchers' daemons)."""
    uri_length: int


def execs(cluster: Cluster, namespace: str) -> list[Exec]:
    found = []
    for event in cluster.exec_events(namespace):
        query = urllib.parse.urlsplit(event["requestURI"]).query
        words = urllib.parse.parse_qs(query).get("command", [])
        mode = ""
        if words[:3] == ["/bin/sh", "-c", remote.ENTRY] and len(words) > 6:
            mode = words[6]
        elif words[:3] == ["/bin/sh", "-c", remote.TTY_WRAPPER]:
            mode = "tty"
        user = event["user"]["username"]
        found.append(Exec(event["objectRef"]["name"], user, mode, len(event["requestURI"])))
    return found


def daemon_execs(mpi: Mpi, before: int, daemon: str) -> dict[str, list[Exec]]:
    """The execs since ``before`` (which started ``daemon``), by pod; waits for all 4 pods."""

    def by_pod() -> dict[str, list[Exec]] | None:
        found: dict[str, list[Exec]] = {}
        for e in execs(mpi.cluster, mpi.namespace)[before:]:
            if e.pod in WORKERS and e.mode:
                found.setdefault(e.pod, []).append(e)
        return found if sorted(found) == list(WORKERS) else None

    return wait_for(by_pod, timeout=15, what=f"{daemon} execs into each of {WORKERS}")


def pod_processes() -> list[int]:
    """Processes running in the worker pods (podexec gives them HOSTNAME=<pod hostname>)."""
    wanted = {f"HOSTNAME={pod}".encode() for pod in WORKERS}
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state not in ("Z", "X") and wanted.intersection(environ):
            found.append(int(entry.name))
    return found


def describe(pids: list[int]) -> list[str]:
    out = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:100]
        except OSError:
            continue
        out.append(f"{pid}: {argv.decode(errors='replace')}")
    return out


def kubexec_agents(namespace: str) -> list[int]:
    """kubexec processes on this machine (outside the pods) aimed at the worker pods."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        words = argv.split(b"\0")
        is_kubexec = len(words) > 1 and words[1].endswith(b"/kubexec")
        if is_kubexec and b"mpiw-" in argv and f"KUBEXEC_NAMESPACE={namespace}".encode() in environ:
            found.append(int(entry.name))
    return found


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def hosts_of(res: Result) -> set[str]:
    return {m.group(4) for line in res.stdout.splitlines() if (m := RANK_LINE.fullmatch(line))}


# -- launching ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    flavour: str
    args: Callable[[Mpi, Path], list[str]]
    env: Callable[[Mpi], dict[str, str]] = lambda _m: {}
    tree: bool | None = None
    """True: some daemons were started from inside pods (by the pods' service account);
    False: every daemon was started by the launcher; None: not checked."""
    works: bool = True
    """False: the launcher must fail without starting any daemon (a documented non-way)."""
    completes: bool = True
    """False: the daemons start in the pods, but the job cannot finish on the devcluster."""
    notes: str = ""
    unset: tuple[str, ...] = field(default=())


def launcher_env(
    mpi: Mpi, flavour: str, extra: dict[str, str], unset: tuple[str, ...] = ()
) -> dict[str, str]:
    env = sourced_env(flavour)
    env = {
        k: v
        for k, v in env.items()
        if not k.startswith(("KUBEXEC_", "OMPI_MCA_", "PRTE_MCA_", "HYDRA_", "I_MPI_HYDRA"))
    }
    env["KUBECONFIG"] = str(mpi.cluster.kubeconfig)
    env["PATH"] = f"{KUBEXEC.parent}:{env['PATH']}"
    env["KUBEXEC_NAMESPACE"] = mpi.namespace
    if flavour in ("openmpi4", "openmpi5"):
        env["OMPI_ALLOW_RUN_AS_ROOT"] = env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    if flavour == "impi":
        env["I_MPI_FABRICS"] = "ofi"
        env["FI_PROVIDER"] = "tcp"
    env.update(extra)
    for name in unset:
        env.pop(name, None)
    return env


def ompi_hosts(m: Mpi) -> list[str]:
    return ["--host", ",".join(f"{h}:1" for h in m.short_hosts)]


def hydra_hosts(m: Mpi) -> list[str]:
    return ["-hosts", ",".join(m.short_hosts)]


def fqdn_hostfile(m: Mpi, tmp: Path) -> list[str]:
    path = tmp / "hostfile"
    path.write_text("".join(f"{m.fqdn(pod)} slots=1\n" for pod in WORKERS))
    return ["--hostfile", str(path)]


CASES = [
    Case(
        "openmpi4-tree-spawn",
        "openmpi4",
        lambda m, _t: ["-np", "4", *ompi_hosts(m)],
        lambda _m: {"OMPI_MCA_plm_rsh_agent": "kubexec", "OMPI_MCA_routed_radix": "1"},
        tree=True,
        notes="radix 1: a chain, so 3 of the 4 daemons are started from inside pods",
    ),
    Case(
        "openmpi4-no-tree-spawn",
        "openmpi4",
        lambda m, _t: ["-np", "4", *ompi_hosts(m)],
        lambda _m: {
            "OMPI_MCA_plm_rsh_agent": "kubexec",
            "OMPI_MCA_plm_rsh_no_tree_spawn": "1",
            "OMPI_MCA_routed_radix": "1",
        },
        tree=False,
    ),
    Case(
        "openmpi4-fqdn-hostfile",
        "openmpi4",
        fqdn_hostfile,
        lambda _m: {
            "OMPI_MCA_plm_rsh_agent": "kubexec",
            "OMPI_MCA_orte_keep_fqdn_hostnames": "true",
            "OMPI_MCA_routed_radix": "1",
        },
        tree=True,
        unset=("KUBEXEC_NAMESPACE",),
        notes="the namespace comes from the FQDN only",
    ),
    Case(
        "openmpi4-absolute-agent",
        "openmpi4",
        lambda m, _t: ["-np", "4", *ompi_hosts(m)],
        lambda _m: {"OMPI_MCA_plm_rsh_agent": str(KUBEXEC), "OMPI_MCA_routed_radix": "1"},
        tree=True,
    ),
    Case(
        "openmpi4-bin-shim-agent",
        "openmpi4",
        lambda m, _t: ["-np", "4", *ompi_hosts(m)],
        lambda _m: {
            "OMPI_MCA_plm_rsh_agent": str(REPO / "bin" / "kubexec"),
            "OMPI_MCA_routed_radix": "1",
        },
        tree=True,
        notes="bin/kubexec, the fixed-path shim, in the launcher and in the pods",
    ),
    Case(
        "openmpi5-prte-env",
        "openmpi5",
        lambda m, _t: ["-np", "4", *ompi_hosts(m)],
        lambda _m: {"PRTE_MCA_plm_ssh_agent": "kubexec"},
        tree=False,
    ),
    Case(
        "openmpi5-mca-flag-tree",
        "openmpi5",
        lambda m, _t: [
            "--mca",
            "plm_ssh_agent",
            "kubexec",
            "--prtemca",
            "routed_radix",
            "1",
            "-np",
            "4",
            *ompi_hosts(m),
        ],
        tree=True,
    ),
    Case(
        "openmpi5-ompi-env-is-ignored",
        "openmpi5",
        lambda m, _t: ["-np", "4", *ompi_hosts(m)],
        lambda _m: {"OMPI_MCA_plm_rsh_agent": "kubexec"},
        works=False,
        notes="5.0.11: OMPI_MCA_plm_rsh_agent is not translated; PRRTE runs ssh",
    ),
    Case(
        "mpich-rsh",
        "mpich",
        lambda m, _t: ["-launcher", "rsh", "-launcher-exec", "kubexec", "-n", "4", *hydra_hosts(m)],
        tree=False,
    ),
    Case(
        "mpich-ssh",
        "mpich",
        lambda m, _t: ["-launcher", "ssh", "-launcher-exec", "kubexec", "-n", "4", *hydra_hosts(m)],
        tree=False,
    ),
    Case(
        "impi-default-branch",
        "impi",
        lambda m, _t: ["-n", "4", "-ppn", "1", *hydra_hosts(m)],
        lambda _m: {"I_MPI_HYDRA_BOOTSTRAP": "ssh", "I_MPI_HYDRA_BOOTSTRAP_EXEC": "kubexec"},
        tree=False,
        notes="the default tree only branches beyond 16 hosts",
    ),
    Case(
        "impi-branch-count-0",
        "impi",
        lambda m, _t: ["-n", "4", "-ppn", "1", *hydra_hosts(m)],
        lambda _m: {
            "I_MPI_HYDRA_BOOTSTRAP": "ssh",
            "I_MPI_HYDRA_BOOTSTRAP_EXEC": "kubexec",
            "I_MPI_HYDRA_BRANCH_COUNT": "0",
        },
        tree=False,
    ),
    Case(
        "impi-branch-count-2-tree",
        "impi",
        lambda m, _t: ["-n", "4", "-ppn", "1", *hydra_hosts(m)],
        lambda _m: {
            "I_MPI_HYDRA_BOOTSTRAP": "ssh",
            "I_MPI_HYDRA_BOOTSTRAP_EXEC": "kubexec",
            "I_MPI_HYDRA_BRANCH_COUNT": "2",
        },
        tree=True,
        completes=False,
        notes=(
            "the tree's proxies start through kubexec inside the pods, then connect to their "
            "parent by pod host name, i.e. the pod IP, which the devcluster never routes"
        ),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_launcher_starts_daemons_in_every_pod(mpi: Mpi, case: Case, tmp_path: Path) -> None:
    assert pod_processes() == [], describe(pod_processes())
    env = launcher_env(mpi, case.flavour, case.env(mpi), case.unset)
    argv = [env["MPI_LAUNCHER"], *case.args(mpi, tmp_path), env["MPI_TEST_PROGRAM"]]
    before = len(execs(mpi.cluster, mpi.namespace))
    res = run_job(argv, env, JOB_TIMEOUT_S)
    daemon = DAEMONS[case.flavour]
    if not case.works:
        assert res.returncode != 0, res.describe()
        time.sleep(1)
        started = [e for e in execs(mpi.cluster, mpi.namespace)[before:] if e.pod in WORKERS]
        assert started == [], started
        return
    if case.completes:
        assert_allreduce_output(res, NP)
        assert hosts_of(res) == set(WORKERS), res.describe()
    by_pod = daemon_execs(mpi, before, daemon)
    users = {e.user for pod_execs in by_pod.values() for e in pod_execs}
    if case.tree is True:
        assert mpi.sa_user in users, f"no daemon was started from inside a pod: {by_pod}"
    elif case.tree is False:
        assert users == {"kubernetes-admin"}, f"daemons started from pods: {by_pod}"
    # Daemons and ranks are gone once the launcher is.
    wait_for(lambda: not pod_processes(), timeout=15, what="no daemon or rank in the pods")


# -- aborts ------------------------------------------------------------------------------------

ABORTS: dict[str, Callable[[Mpi], tuple[list[str], dict[str, str]]]] = {
    "openmpi4": lambda m: (
        ["--host", ",".join(f"{h}:1" for h in m.short_hosts), "-np", "4"],
        {"OMPI_MCA_plm_rsh_agent": "kubexec"},
    ),
    "openmpi5": lambda m: (
        ["--host", ",".join(f"{h}:1" for h in m.short_hosts), "-np", "4"],
        {"PRTE_MCA_plm_ssh_agent": "kubexec"},
    ),
    "mpich": lambda m: (
        ["-launcher", "ssh", "-launcher-exec", "kubexec", "-n", "4", *hydra_hosts(m)],
        {},
    ),
    "impi": lambda m: (
        ["-n", "4", "-ppn", "1", *hydra_hosts(m)],
        {"I_MPI_HYDRA_BOOTSTRAP": "ssh", "I_MPI_HYDRA_BOOTSTRAP_EXEC": "kubexec"},
    ),
}


def ranks_running(seconds: str) -> Callable[[], bool]:
    def check() -> bool:
        hosts: set[bytes] = set()
        for pid in pod_processes():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", seconds.encode()]:
                hosts.update(e for e in environ if e.startswith(b"HOSTNAME="))
        return len(hosts) == NP

    return check


def wait_gone(timeout: float) -> list[str]:
    """Poll until the pods are empty; what is left after ``timeout`` (empty: nothing)."""
    deadline = time.monotonic() + timeout
    while (left := pod_processes()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return describe(left)


def session_members(sid: int) -> list[int]:
    """Processes of session ``sid`` (the launcher and its agents), outside the pods."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[3]) == sid:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("how", ["kill-launcher", "kill-9-one-kubexec", "launcher-pod-gone"])
@pytest.mark.parametrize("flavour", list(ABORTS))
def test_abort_leaves_no_daemon_or_rank(mpi: Mpi, flavour: str, how: str) -> None:
    assert pod_processes() == [], describe(pod_processes())
    args, extra = ABORTS[flavour](mpi)
    # A short re-attach window: a launcher-side agent killed (or its pod gone) leaves its
    # daemon for the window, the pod's margin and the grace (3 + 5 + 5 s) before the teardown.
    env = launcher_env(mpi, flavour, {**extra, "KUBEXEC_REATTACH": "3"})
    seconds = str(3000 + secrets.randbelow(1000))
    proc = subprocess.Popen(
        [env["MPI_LAUNCHER"], *args, "sleep", seconds],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        wait_for(ranks_running(seconds), timeout=60, what=f"4 ranks (sleep {seconds}) in the pods")
        agents = kubexec_agents(mpi.namespace)
        assert agents, "no kubexec agent running on this machine"
        session = session_members(proc.pid)
        if how == "kill-launcher":
            # The launcher's own processes (Intel's mpirun is a script around mpiexec.hydra),
            # not its agents: a crashed mpirun.
            victims = [pid for pid in session if pid not in agents]
        elif how == "launcher-pod-gone":
            victims = session  # every process, agents included: the launcher pod vanished
        else:
            victims = agents[:1]
        for pid in victims:
            _kill(pid)
        start = time.monotonic()
        left = wait_gone(30)
        took = time.monotonic() - start
        if left:
            sockets = subprocess.run(["ss", "-tnp"], capture_output=True, text=True, check=False)
            hydra = [
                line for line in sockets.stdout.splitlines() if "hydra" in line or "mpiexec" in line
            ]
            agents_left = describe(kubexec_agents(mpi.namespace))
            raise AssertionError(
                f"{flavour} {how}: left in the pods: {left}\nsockets: {hydra}\n"
                f"agents: {agents_left}"
            )
        if how == "kill-9-one-kubexec":
            # The launcher notices its daemon's loss and gives up (it must not hang).
            rc = proc.wait(timeout=60)
            assert proc.stdout is not None
            print(f"{flavour}: launcher exited {rc} after losing a daemon:")
            print(proc.stdout.read().decode(errors="replace")[-1500:])
        wait_for(lambda: not kubexec_agents(mpi.namespace), timeout=30, what="the agents to exit")
    finally:
        leftovers = pod_processes()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        for pid in leftovers:
            _kill(pid)
    print(f"{flavour} {how}: pods empty {took:.1f}s after the kill")


# -- kubexec-env -------------------------------------------------------------------------------

ENV_FAMILIES = {"openmpi4": "openmpi4", "openmpi5": "openmpi5", "mpich": "mpich", "intel": "impi"}


@pytest.mark.parametrize("family", list(ENV_FAMILIES))
def test_kubexec_env_is_all_a_launcher_needs(mpi: Mpi, family: str) -> None:
    """``eval "$(kubexec-env FAMILY --namespace NS)"``, then the launcher's plain command line."""
    flavour = ENV_FAMILIES[family]
    assert pod_processes() == [], describe(pod_processes())
    env = launcher_env(mpi, flavour, {}, unset=("KUBEXEC_NAMESPACE",))
    if flavour in ("openmpi4", "openmpi5"):
        args = ["-np", "4", *ompi_hosts(mpi)]
    else:
        args = ["-n", "4", "-ppn", "1", *hydra_hosts(mpi)]
    script = 'eval "$("$0" "$1" --namespace "$2")" && shift 2 && exec "$@"'
    argv = [
        "sh", "-c", script, str(KUBEXEC_ENV), family, mpi.namespace,
        env["MPI_LAUNCHER"], *args, env["MPI_TEST_PROGRAM"],
    ]  # fmt: skip
    before = len(execs(mpi.cluster, mpi.namespace))
    res = run_job(argv, env, JOB_TIMEOUT_S)
    assert_allreduce_output(res, NP)
    assert hosts_of(res) == set(WORKERS), res.describe()
    by_pod = daemon_execs(mpi, before, DAEMONS[flavour])
    # One exec per daemon: Hydra's agents run with --no-forward-stdin, no lifeline exec.
    new = execs(mpi.cluster, mpi.namespace)[before:]
    assert {e.mode for e in new} == {"lifeline"}, new
    assert all(len(v) == 1 for v in by_pod.values()), by_pod
    wait_for(lambda: not pod_processes(), timeout=15, what="no daemon or rank in the pods")


# -- silent daemons outlive the runtime's idle timeout (issue 10 item 5) --------------------------

IDLE_TIMEOUT_S = 3
SILENT_JOB = {
    # The agent stays connected for the job's life (tree spawn from mpirun, no --daemonize).
    "openmpi4": lambda m: (
        ["-np", "4", *ompi_hosts(m)],
        {"OMPI_MCA_plm_rsh_agent": "kubexec -o ServerAliveInterval=1"},
    ),
    "mpich": lambda m: (
        ["-launcher", "rsh", "-launcher-exec", "kubexec", "-n", "4", *hydra_hosts(m)],
        {"HYDRA_LAUNCHER_EXTRA_ARGS": "--no-forward-stdin -o ServerAliveInterval=1"},
    ),
}


@pytest.fixture(scope="module")
def short_idle(mpi: Mpi) -> Iterator[None]:
    with short_stream_idle_timeout(mpi.cluster, IDLE_TIMEOUT_S):
        yield


@pytest.mark.restarts_cluster
@pytest.mark.parametrize("flavour", list(SILENT_JOB))
def test_a_job_whose_daemons_are_silent_for_10x_the_idle_timeout_completes(
    mpi: Mpi, short_idle: None, flavour: str
) -> None:
    assert pod_processes() == [], describe(pod_processes())
    args, extra = SILENT_JOB[flavour](mpi)
    env = launcher_env(mpi, flavour, extra)
    quiet = 10 * IDLE_TIMEOUT_S
    res = run_job([env["MPI_LAUNCHER"], *args, "sleep", str(quiet)], env, JOB_TIMEOUT_S)
    assert res.returncode == 0, res.describe()
    wait_for(lambda: not pod_processes(), timeout=15, what="no daemon or rank in the pods")
