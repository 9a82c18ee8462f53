"""kubexec beside ``kubectl exec``: one call cold, one call through a master, and a fan-out.

On the devcluster (``make devcluster``), in a namespace of its own, with pods on the
devcluster's own nodes (no GPUs asked for); ``make bench-kubexec`` installs the ``bench``
extra (matplotlib, psutil) and runs::

    .venv/bin/python bench/kubexec_bench.py                  # 30 calls; fan-out 16, 64, 256
    .venv/bin/python bench/kubexec_bench.py --calls 50 --fanout 16,64 --fanout-runs 5
    .venv/bin/python bench/kubexec_bench.py --mpirun 16,64   # also mpirun daemon start
    .venv/bin/python bench/kubexec_bench.py --real-node --fanout 16   # the real node's pods
    .venv/bin/python bench/kubexec_bench.py --calls 0 --fanout '' --mpirun 16,64  # mpirun only
    .venv/bin/python bench/kubexec_bench.py --real-node --calls 0 --fanout '' --mpirun 4,16

Every comparison runs its contestants interleaved in one run (so they share the machine's
load, which is printed with each figure: this 2-core machine is shared), over the same pods:

1. **One call, cold**: ``kubexec <pod> true`` against ``kubectl exec <pod> -- true``, N times
   each: median and p95 wall time, median peak RSS and CPU (``wait4``). kubexec as the dev
   venv has it (editable, ``editable_mode=compat``), installed from a wheel as the images have
   it, and through ``bin/kubexec`` (the images' ``/opt/mpi/bin/kubexec``). Twice: from this
   machine with a YAML kubeconfig as kubectl writes it (client certificate), and from inside a
   pod with its service-account token, which is where launchers run kubexec. From this machine
   there is no job scope: a pod name costs one request, the exec. In the pod, kubexec takes
   only the job's pods (the pods carry ``k8smpi.dev/job=bench``) as in a launcher of deploy/ or
   k8smpi-job: with ``KUBEXEC_SELECTOR`` set (as they set it) the pod is looked up (one list)
   before the exec, on the same connection; ``kubexec-own-label`` is the same call without it
   (kubexec reads its own pod's label first: one GET more).
2. **One call, warm**: the same call with ``-o ControlMaster=auto -o ControlPersist=...``, the
   master already running: the client's own wall, RSS and CPU (the master's session process
   does the API work; its CPU is in the fan-out figures).
3. **Fan-out**: N agents started at once (N = 16, 64, 256 pods, ``true``), as a launcher
   without a tree does: wall from the first start to the last exit, CPU of everything the call
   costs on this side (the agents, and for the master its session processes), and the peak
   memory of those processes together (psutil). kubexec cold, kubexec with a master, kubectl.
4. **Curves**: wall time against N for the three, ``bench/figures/kubexec-fanout.png``, from
   ``bench/figures/kubexec.json`` (both committed; ``--out`` writes elsewhere).
5. (``--mpirun``) **mpirun daemon start** (Open MPI 4.1 in a launcher pod, ``hostname`` on each
   pod) with kubexec as the agent against mpi-operator v1's kubectl agent script, from the
   audit log: until the API server had answered every daemon's exec. Both agents run with
   Open MPI's defaults (tree spawn on; below its radix of 64 every daemon is the launcher's
   child). The runs alternate which agent goes first; the job wall is from mpirun's start in
   the pod to the end of the call that ran it. Also from the audit log: until the first
   daemon's exec (mpirun's own start and one agent's), and from the first to the last.

``--real-node`` puts the pods on the devcluster's real node (``make devcluster``): containers
of the CPU image, exec'd through kubelet, containerd and runc; one call and the fan-out from
this machine only (``bench/figures/kubexec-real-node.json``). With ``--mpirun`` the launcher
pod b-0 runs the image's mpirun (Debian's Open MPI 4.1) with the image's
``/opt/mpi/bin/kubexec`` or mpi-operator v1's script, both as v1 gives its launcher: the script
from a ConfigMap at ``/etc/mpi/kubexec.sh`` (mode 0555) and ``kubectl`` at
``/opt/kube/kubectl`` -- here the devcluster's own kubectl mounted read-only from this machine
(hostPath; v1 copies it in with an init container) -- in every pod, with the pods'
service-account token. The node has about 60 pod addresses and this machine's 2 cores: sizes
4 and 16 there.

``--calls 0`` skips the single calls, ``--fanout ''`` the fan-out; a run of only ``--mpirun``
writes ``kubexec-mpirun.json`` (``kubexec-mpirun-real-node.json``) instead of overwriting the
calls' and fan-out's figures.

Targets (issue 13): cold wall <= 1.0x and peak RSS <= 0.5x kubectl's; warm wall <= 0.5x; the
fan-out's wall and CPU <= 0.7x kubectl's at 64 and 256.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from devcluster.client import Cluster  # noqa: E402
from devcluster.workloads import (  # noqa: E402
    KUBEXEC,
    real_node_image,
    running_pods,
    statefulset,
)

FIGURES = REPO / "bench" / "figures"
INSTALLED = REPO / "bench" / "results" / "venv-installed"
"""A venv with the package installed from a wheel, as the images install it (rebuilt per run)."""
SHIM = REPO / "bin" / "kubexec"
JOB_LABEL = "k8smpi.dev/job"

KUBECTL_AGENT_IN_POD = "/etc/mpi/kubexec.sh"
"""Where mpi-operator v1 mounts its agent script (ConfigMap); ``/opt/kube``: its kubectl."""
KUBE_DIR = "/opt/kube"
KUBECTL_AGENT = """#!/bin/sh
# mpi-operator v1's kubexec.sh; -n added: this launcher is not in the pods' namespace.
POD_NAME=$1
shift
kubectl exec -n "$BENCH_NAMESPACE" ${POD_NAME} -- /bin/sh -c "$*"
"""

# What kubexec (and kubectl exec) need, for the pods' own service account.
RBAC: list[dict[str, Any]] = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "exec"},
        "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "exec"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "exec"},
        "subjects": [{"kind": "ServiceAccount", "name": "default"}],
    },
]


@dataclass
class Run:
    wall_s: float
    maxrss_kib: int
    cpu_s: float
    rc: int
    started_s: float = 0.0
    """mpirun only: seconds until the API server had started every daemon's exec."""
    first_s: float = 0.0
    """mpirun only: seconds until it had started the first (mpirun's own start before it)."""


def load() -> float:
    return round(os.getloadavg()[0], 2)


GNU_TIME = "/usr/bin/time"


def timed(argv: list[str], env: dict[str, str], timeout: float = 300) -> tuple[Run, bytes, bytes]:
    """Run ``argv``; wall time, CPU and peak RSS of it and its waited-for descendants.

    The peak RSS comes from GNU time, which forks the command from its own small process:
    Linux keeps a process's peak RSS across exec, so anything this (large) Python process
    forks and execs directly reports at least this process's RSS (kubexec's figures were
    stuck at the bench's own 28 MiB).
    """
    usage_file = None
    if Path(GNU_TIME).exists():
        fd, usage_file = tempfile.mkstemp(prefix="kubexec-bench-")
        os.close(fd)
        argv = [GNU_TIME, "-q", "-f", "%M", "-o", usage_file, *argv]
    start = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    deadline = start + timeout
    if proc.stdout is None:
        raise RuntimeError("no stdout pipe")
    # Output is small (one line per rank): read it, then reap with wait4 for the usage.
    out = proc.stdout.read()
    err = proc.stderr.read() if proc.stderr else b""
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            raise SystemExit(f"timed out: {' '.join(argv)}")
        time.sleep(0.001)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(f"! {' '.join(argv[:6])}... exited {proc.returncode}: {err[-500:]!r}\n")
    run = Run(wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, proc.returncode)
    if usage_file:
        words = Path(usage_file).read_text().split()
        Path(usage_file).unlink()
        if words:  # the command's own peak; the CPU stays wait4's (to the microsecond, GNU
            run.maxrss_kib = int(words[-1])  # time's own ~1 ms in it for every contestant)
    return run, out, err


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(runs: list[Run]) -> dict[str, float]:
    walls = [r.wall_s for r in runs]
    return {
        "n": len(runs),
        "started_median_s": statistics.median(r.started_s for r in runs),
        "first_median_s": statistics.median(r.first_s for r in runs),
        "spread_median_s": statistics.median(r.started_s - r.first_s for r in runs),
        "wall_median_s": statistics.median(walls),
        "wall_p95_s": pct(walls, 0.95),
        "maxrss_median_mib": statistics.median(r.maxrss_kib for r in runs) / 1024,
        "cpu_median_s": statistics.median(r.cpu_s for r in runs),
        "failures": sum(r.rc != 0 for r in runs),
    }


def compare(contestants: dict[str, list[str]], env: dict[str, str], calls: int) -> dict[str, Any]:
    """``calls`` runs of each, interleaved (the order rotates), after two warm-up rounds."""
    for _ in range(2):  # warm caches (pyc, page cache, the apiserver's token cache)
        for argv in contestants.values():
            timed(argv, env)
    runs: dict[str, list[Run]] = {name: [] for name in contestants}
    order = list(contestants.items())
    before = load()
    for i in range(calls):
        shift = i % len(order)
        for name, argv in order[shift:] + order[:shift]:
            runs[name].append(timed(argv, env)[0])
    result: dict[str, Any] = {name: summary(r) for name, r in runs.items()}
    result["load"] = [before, load()]
    return result


# -- contestants --------------------------------------------------------------------------------


def install_wheel_venv() -> Path:
    """``bench/results/venv-installed``: the package and its dependencies, not editable."""
    if not (INSTALLED / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(INSTALLED)], check=True)
    pip = [str(INSTALLED / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run(
        [*pip, "--disable-pip-version-check", "--force-reinstall", "--no-deps", str(REPO)],
        check=True,
    )
    subprocess.run([*pip, "--disable-pip-version-check", "pyyaml>=6", "tenacity>=8.2"], check=True)
    return INSTALLED


def kubexec_variants(installed: Path) -> dict[str, list[str]]:
    """The ways a kubexec call starts: dev venv, wheel install, the images' sh shim."""
    return {
        "kubexec": [str(KUBEXEC)],
        "kubexec-installed": [str(installed / "bin" / "kubexec")],
        "kubexec-shim": ["env", f"KUBEXEC_PYTHON={installed / 'bin' / 'python'}", str(SHIM)],
    }


def yaml_kubeconfig(cluster: Cluster, directory: Path) -> Path:
    """The devcluster's kubeconfig as kubectl writes one (YAML, client certificate inline)."""
    text = cluster.kubectl("config", "view", "--raw", "--flatten").stdout.decode()
    path = directory / "kubeconfig.yaml"
    path.write_text(text)
    path.chmod(0o600)
    return path


def one_call(
    cluster: Cluster, ns: str, *, calls: int, installed: Path, kubeconfig: Path, control: str
) -> dict[str, Any]:
    """From this machine, with a YAML kubeconfig (client certificate), into pod b-0."""
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    master = ["-o", "ControlMaster=auto", "-o", "ControlPersist=600", "-S", control]
    contestants = {
        name: [*argv, "--namespace", ns, "b-0", "true"]
        for name, argv in kubexec_variants(installed).items()
    }
    contestants["kubexec-master"] = [str(KUBEXEC), *master, "--namespace", ns, "b-0", "true"]
    contestants["kubectl"] = [cluster.kubectl_path, "exec", "-n", ns, "b-0", "--", "true"]
    try:
        return compare(contestants, env, calls)
    finally:
        stop_master(master, env)


def one_call_in_pod(cluster: Cluster, ns: str, calls: int, installed: Path) -> dict[str, Any]:
    """From inside pod b-0 (its service-account token: the launcher pod's case) into b-1."""
    argv = [
        str(KUBEXEC), "--namespace", ns, "-n", "b-0",
        sys.executable, str(Path(__file__).resolve()), "--in-pod-calls", str(calls),
        "--in-pod-installed", str(installed), "--in-pod-kubectl", cluster.kubectl_path,
    ]  # fmt: skip
    proc = subprocess.run(
        argv,
        capture_output=True,
        env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"in-pod calls failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.decode().splitlines()[-1])
    return result


def in_pod(calls: int, installed: Path, kubectl: str) -> dict[str, Any]:
    """Runs in pod b-0: every contestant against b-1 with the pod's own credentials."""
    with tempfile.TemporaryDirectory() as tmp:
        master = ["-o", "ControlMaster=auto", "-o", "ControlPersist=600", "-S", f"{tmp}/m"]
        contestants = {
            name: [*argv, "b-1", "true"] for name, argv in kubexec_variants(installed).items()
        }
        own_label = ["env", "-u", "KUBEXEC_SELECTOR", str(KUBEXEC), "b-1", "true"]
        contestants["kubexec-own-label"] = own_label
        contestants["kubexec-master"] = [str(KUBEXEC), *master, "b-1", "true"]
        contestants["kubectl"] = [kubectl, "exec", "b-1", "--", "true"]
        try:
            return compare(contestants, dict(os.environ), calls)
        finally:
            stop_master(master, dict(os.environ))


def stop_master(options: list[str], env: dict[str, str]) -> None:
    subprocess.run(
        [str(KUBEXEC), *options, "-O", "exit", "x"], env=env, capture_output=True, check=False
    )


# -- fan-out --------------------------------------------------------------------------------------


def fan_out(
    argvs: list[list[str]], env: dict[str, str], master_pid: int | None
) -> dict[str, float]:
    """Start every argv at once; wall until the last exited, CPU and peak memory of the lot."""
    import psutil  # noqa: PLC0415 - the bench extra

    master = psutil.Process(master_pid) if master_pid else None
    master_cpu = _cpu(master) if master else 0.0
    machine = _machine_cpu()
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        for argv in argvs
    ]
    left = {p.pid for p in procs}
    cpu, failures, peak = 0.0, 0, 0
    handles: dict[int, Any] = {}
    next_sample = 0.0
    while left:
        if time.perf_counter() >= next_sample:  # sampling costs CPU the agents need: 20/s
            peak = max(peak, _tree_rss(psutil, handles, left, master_pid))
            next_sample = time.perf_counter() + 0.05
        while left:
            pid, status, usage = os.wait4(-1, os.WNOHANG)
            if not pid:
                break
            if pid in left:
                left.discard(pid)
                cpu += usage.ru_utime + usage.ru_stime
                failures += os.waitstatus_to_exitcode(status) != 0
        time.sleep(0.005)
    wall = time.perf_counter() - start
    shares = [b - a for a, b in zip(machine, _machine_cpu(), strict=True)]
    for proc in procs:
        proc.returncode = 0  # reaped above
    if master is not None:
        time.sleep(0.6)  # the master reaps its session processes within 0.5 s
        cpu += _cpu(master) - master_cpu
    total = sum(shares) or 1
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_mib": peak / 2**20,
        "failures": failures,
        # The machine's CPU while it ran: "nice" is mostly other people's builds here.
        "machine_idle_pct": 100 * shares[3] / total,
        "machine_nice_pct": 100 * shares[1] / total,
    }


def _machine_cpu() -> list[int]:
    """user, nice, system, idle, ... jiffies of the whole machine (/proc/stat)."""
    with Path("/proc/stat").open() as f:
        return [int(x) for x in f.readline().split()[1:]]


def _cpu(proc: Any) -> float:
    """A process's CPU, its reaped children's included."""
    t = proc.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def _tree_rss(psutil: Any, handles: dict[int, Any], pids: set[int], master: int | None) -> int:
    """The agents' resident memory and, with a master, its session processes' (its children,
    from /proc/<pid>/task/*/children: psutil's children() scans every process on the machine)."""
    wanted = set(pids)
    if master:
        for task in Path(f"/proc/{master}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                wanted.update(int(pid) for pid in task.read_text().split())
    total = 0
    for pid in wanted:
        with contextlib.suppress(psutil.Error, ValueError):
            if pid not in handles:
                handles[pid] = psutil.Process(pid)
            total += handles[pid].memory_info().rss
    return total


def fan_outs(
    cluster: Cluster, ns: str, *, sizes: list[int], runs: int, kubeconfig: Path, control: str
) -> dict[str, Any]:
    env = dict(os.environ, KUBECONFIG=str(kubeconfig))
    master = ["-o", "ControlMaster=auto", "-o", "ControlPersist=600", "-S", control]
    agents = {
        "kubectl": lambda pod: [cluster.kubectl_path, "exec", "-n", ns, pod, "--", "true"],
        "kubexec": lambda pod: [str(KUBEXEC), "--namespace", ns, pod, "true"],
        "kubexec-master": lambda pod: [str(KUBEXEC), *master, "--namespace", ns, pod, "true"],
    }
    subprocess.run(agents["kubexec-master"]("b-0"), env=env, check=True)  # the master, warm
    check = subprocess.run(
        [str(KUBEXEC), *master, "-O", "check", "x"], env=env, capture_output=True, check=True
    )
    master_pid = int(check.stderr.decode().split("=", 1)[1].split(")", 1)[0])
    results: dict[str, Any] = {}
    try:
        for n in sizes:
            pods = [f"b-{i}" for i in range(1, n + 1)]
            per: dict[str, list[dict[str, float]]] = {name: [] for name in agents}
            names = list(agents)
            before = load()
            for i in range(runs):
                shift = i % len(names)
                for name in names[shift:] + names[:shift]:
                    argvs = [agents[name](pod) for pod in pods]
                    pid = master_pid if name == "kubexec-master" else None
                    got = fan_out(argvs, env, pid)
                    per[name].append(got)
                    print(
                        f"    fan-out {n}, {name}: {got['wall_s']:.2f}s wall, "
                        f"{got['cpu_s']:.2f}s CPU, {got['peak_rss_mib']:.0f} MiB, "
                        f"{got['failures']:.0f} failed, load {load()}, machine idle "
                        f"{got['machine_idle_pct']:.0f}% nice {got['machine_nice_pct']:.0f}%",
                        flush=True,
                    )
            results[str(n)] = {
                name: {
                    "runs": len(r),
                    "wall_median_s": statistics.median(x["wall_s"] for x in r),
                    "wall_min_s": min(x["wall_s"] for x in r),
                    "wall_max_s": max(x["wall_s"] for x in r),
                    "cpu_median_s": statistics.median(x["cpu_s"] for x in r),
                    "peak_rss_median_mib": statistics.median(x["peak_rss_mib"] for x in r),
                    "failures": sum(x["failures"] for x in r),
                    "machine_nice_median_pct": statistics.median(x["machine_nice_pct"] for x in r),
                }
                for name, r in per.items()
            }
            results[str(n)]["load"] = [before, load()]
    finally:
        stop_master(master, env)
    return results


def draw(fanout: dict[str, Any], path: Path) -> None:
    """Wall time against N, median with the runs' range, one line per agent."""
    import matplotlib as mpl  # noqa: PLC0415 - the bench extra

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    sizes = sorted(int(n) for n in fanout)
    fig, (wall_ax, cpu_ax) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"kubectl": "s-", "kubexec": "o-", "kubexec-master": "^-"}
    labels = {
        "kubectl": "kubectl exec",
        "kubexec": "kubexec (cold)",
        "kubexec-master": "kubexec (ControlMaster)",
    }
    for name, style in styles.items():
        med = [fanout[str(n)][name]["wall_median_s"] for n in sizes]
        low = [m - fanout[str(n)][name]["wall_min_s"] for m, n in zip(med, sizes, strict=True)]
        high = [fanout[str(n)][name]["wall_max_s"] - m for m, n in zip(med, sizes, strict=True)]
        wall_ax.errorbar(sizes, med, yerr=[low, high], fmt=style, capsize=3, label=labels[name])
        cpu = [fanout[str(n)][name]["cpu_median_s"] for n in sizes]
        cpu_ax.plot(sizes, cpu, style, label=labels[name])
    loads = [x for n in sizes for x in fanout[str(n)]["load"]]
    for ax, what in ((wall_ax, "wall time until all exited (s)"), (cpu_ax, "CPU, all agents (s)")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(n) for n in sizes])
        ax.set_xlabel("agents started at once (pods, remote command: true)")
        ax.set_ylabel(what)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        "N agents at once on the devcluster (2 shared cores; load "
        f"{min(loads):.1f}-{max(loads):.1f}): median and range"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- mpirun ---------------------------------------------------------------------------------------


def host_launcher() -> str:
    """The Open MPI 4.1 mpirun that kwok pods run (podexec runs it on this machine)."""
    env_file = Path.home() / ".cache" / "k8smpi" / "mpi" / "env" / "openmpi4.env"
    if "K8SMPI_CACHE" in os.environ:
        env_file = Path(os.environ["K8SMPI_CACHE"]) / "mpi" / "env" / "openmpi4.env"
    sourced = subprocess.run(
        ["sh", "-c", '. "$0" && env -0', str(env_file)], capture_output=True, check=True
    ).stdout.decode()
    return dict(item.partition("=")[::2] for item in sourced.split("\0") if item)["MPI_LAUNCHER"]


def launches(
    cluster: Cluster, ns: str, sizes: list[int], repeat: int, *, real_node: bool
) -> dict[str, Any]:
    """mpirun in pod b-0 (the launcher pod: service-account token, pod DNS) on b-1..b-n."""
    host_env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if real_node:  # the image's mpirun, kubexec and (mounted) agent script
            launcher = "mpirun"
            agents = {"kubexec": "/opt/mpi/bin/kubexec", "kubectl-script": KUBECTL_AGENT_IN_POD}
        else:  # podexec runs the pods' commands on this machine
            launcher = host_launcher()
            script = Path(tmp) / "kubectl-agent.sh"
            script.write_text(KUBECTL_AGENT)
            script.chmod(0o755)
            Path(tmp).chmod(0o755)
            agents = {"kubexec": "kubexec", "kubectl-script": str(script)}
        for n in sizes:
            hosts = ",".join(f"b-{i}:1" for i in range(1, n + 1))

            def argv(agent: str, n: int = n, hosts: str = hosts) -> list[str]:
                settings = {
                    "OMPI_ALLOW_RUN_AS_ROOT": "1",
                    "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
                    "OMPI_MCA_plm_rsh_agent": agent,
                    "BENCH_NAMESPACE": ns,
                }
                exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in settings.items())
                # -u: the image's default hostfile (a mounted ConfigMap in deploy/) is absent.
                command = (
                    "echo BEGIN $(date +%s.%N) >&2; exec env -u OMPI_MCA_orte_default_hostfile "
                    f"{exports} {launcher} -np {n} --host {hosts} hostname"
                )
                return [str(KUBEXEC), "--namespace", ns, "-n", "b-0", command]

            runs: dict[str, list[Run]] = {name: [] for name in agents}
            callers: dict[str, set[str]] = {name: set() for name in agents}
            before = load()
            for agent in agents.values():  # warm-up: first execs (podexec makes a token), caches
                timed(argv(agent), host_env)
            for i in range(repeat):
                order = list(agents.items())
                for name, agent in order if i % 2 == 0 else reversed(order):
                    seen = len(exec_starts(cluster, ns))
                    run, out, err = timed(argv(agent), host_env)
                    end = time.time()
                    begin = float(err.split(b"BEGIN ", 1)[1].split()[0]) if b"BEGIN " in err else 0
                    execs = exec_starts(cluster, ns)[seen:]
                    starts = [when for when, _, _ in execs]
                    callers[name].update(f"{user} ({client})" for _, user, client in execs)
                    if len(starts) != n:
                        sys.stderr.write(
                            f"! {name}: {len(starts)} execs in the audit log, not {n}\n"
                        )
                        run.rc = run.rc or -2
                    run.started_s = max(starts, default=begin) - begin
                    run.first_s = min(starts, default=begin) - begin
                    run.wall_s = end - begin
                    print(
                        f"    {n} pods, {name}: daemons started {run.started_s:.2f}s "
                        f"(the first {run.first_s:.2f}s), "
                        f"job {run.wall_s:.2f}s, rc={run.rc}, load {load()}",
                        flush=True,
                    )
                    got = sorted(set(out.decode().split()))
                    if run.rc == 0 and len(got) != n:
                        sys.stderr.write(f"! {name}: {len(got)} hosts answered, not {n}\n")
                        run.rc = -1
                    runs[name].append(run)
            results[str(n)] = {name: summary(r) for name, r in runs.items()}
            results[str(n)]["load"] = [before, load()]
            # The daemons' execs as the API server saw them: the pod's token, which client.
            results[str(n)]["callers"] = {name: sorted(c) for name, c in callers.items()}
            print(f"  daemon execs by: {results[str(n)]['callers']}", flush=True)
            print(f"  launch on {n} pods done", flush=True)
    return results


def exec_starts(cluster: Cluster, ns: str) -> list[tuple[float, str, str]]:
    """When the API server started answering each exec into ``ns`` (epoch seconds), in order,
    with who asked (user, user agent); the launcher pod b-0's own exec left out."""
    starts = []
    for event in cluster.audit_events():
        ref = event.get("objectRef") or {}
        if (
            event.get("stage") == "ResponseStarted"
            and ref.get("subresource") == "exec"
            and ref.get("namespace") == ns
            and ref.get("name") != "b-0"
        ):
            stamp = event["stageTimestamp"].replace("Z", "+00:00")
            user = (event.get("user") or {}).get("username", "")
            agent = event.get("userAgent", "").split("/", 1)[0]
            starts.append((dt.datetime.fromisoformat(stamp).timestamp(), user, agent))
    return starts


# -- report ---------------------------------------------------------------------------------------


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report_calls(title: str, calls: dict[str, Any]) -> None:
    kc = calls["kubectl"]
    load_before, load_after = calls["load"]
    print(f"\none call, {title}; load {load_before} -> {load_after} (2 cores, shared)")
    print(
        f"  n={kc['n']} each        wall median   p95      RSS      CPU    wall/kubectl RSS/kubectl"
    )
    for name, r in calls.items():
        if name == "load":
            continue
        target = ""
        if name == "kubexec-master":
            target = "   (target <= 0.5x wall)"
        elif name.startswith("kubexec"):
            target = "   (targets <= 1.0x, <= 0.5x)"
        print(
            f"  {name:18} {r['wall_median_s'] * 1000:7.1f}ms {r['wall_p95_s'] * 1000:7.1f}ms "
            f"{r['maxrss_median_mib']:6.1f}Mi {r['cpu_median_s'] * 1000:6.1f}ms "
            f"{ratio(r['wall_median_s'], kc['wall_median_s']):>9} "
            f"{ratio(r['maxrss_median_mib'], kc['maxrss_median_mib']):>9}{target}"
            + (f"  ! {r['failures']} failed" if r["failures"] else "")
        )


def report_fanout(fanout: dict[str, Any]) -> None:
    for n, res in fanout.items():
        kc = res["kubectl"]
        load_before, load_after = res["load"]
        print(
            f"\nfan-out: {n} agents at once (runs={kc['runs']}); load {load_before} -> {load_after}"
        )
        print(
            "                       wall median   CPU      peak RSS  wall/kubectl CPU/kubectl"
            "  others' (niced) share of the CPU"
        )
        for name in ("kubectl", "kubexec", "kubexec-master"):
            r = res[name]
            target = "   (target <= 0.7x)" if name != "kubectl" and n in ("64", "256") else ""
            wall_ratio = ratio(r["wall_median_s"], kc["wall_median_s"])
            print(
                f"  {name:18} {r['wall_median_s']:9.2f}s {r['cpu_median_s']:7.2f}s "
                f"{r['peak_rss_median_mib']:7.0f}Mi {wall_ratio:>11} "
                f"{ratio(r['cpu_median_s'], kc['cpu_median_s']):>10}"
                f"  {r['machine_nice_median_pct']:5.0f}%{target}"
                + (f"  ! {r['failures']} failed" if r["failures"] else "")
            )


def report_launches(launch: dict[str, Any]) -> None:
    for n, res in launch.items():
        a, b = res["kubexec"], res["kubectl-script"]
        print(
            f"\nmpirun (Open MPI 4.1) on {n} pods, n={a['n']} each, load {res['load']}"
            f"\n{'':24}{'kubexec':>9} {'kubectl':>9}  kubexec/kubectl"
        )
        print(
            f"  daemons started        {a['started_median_s']:8.2f}s {b['started_median_s']:8.2f}s"
            f"  {ratio(a['started_median_s'], b['started_median_s']):>6}"
            + ("   <= 0.7x" if n == "64" else "")
        )
        print(
            f"  the first of them      {a['first_median_s']:8.2f}s {b['first_median_s']:8.2f}s"
            f"  {ratio(a['first_median_s'], b['first_median_s']):>6}   (mpirun's start, one agent)"
        )
        print(
            f"  first to last          {a['spread_median_s']:8.2f}s {b['spread_median_s']:8.2f}s"
            f"  {ratio(a['spread_median_s'], b['spread_median_s']):>6}"
        )
        print(
            f"  whole job              {a['wall_median_s']:8.2f}s {b['wall_median_s']:8.2f}s"
            f"  {ratio(a['wall_median_s'], b['wall_median_s']):>6}"
        )


def measure(
    cluster: Cluster, ns: str, args: argparse.Namespace, *, installed: Path, tmp: Path
) -> dict[str, Any]:
    """Goals 1-3: one call cold and warm, outside and in a pod; the fan-out."""
    results: dict[str, Any] = {}
    kubeconfig = yaml_kubeconfig(cluster, tmp)
    control = f"{tmp}/m"
    if args.calls:
        results["calls"] = one_call(
            cluster,
            ns,
            calls=args.calls,
            installed=installed,
            kubeconfig=kubeconfig,
            control=control,
        )
        report_calls("from this machine (YAML kubeconfig, client certificate)", results["calls"])
    if args.calls and not args.real_node:  # the bench cannot run inside a real node's container
        results["calls_in_pod"] = one_call_in_pod(cluster, ns, args.calls, installed)
        report_calls("in a pod (service-account token, the job's scope)", results["calls_in_pod"])
    sizes = [int(s) for s in args.fanout.split(",") if s]
    if sizes:
        results["fanout"] = fan_outs(
            cluster, ns, sizes=sizes, runs=args.fanout_runs, kubeconfig=kubeconfig, control=control
        )
        report_fanout(results["fanout"])
    return results


def bench_pods(cluster: Cluster, replicas: int, *, real_node: bool) -> list[dict[str, Any]]:
    """StatefulSet ``b`` (and its Service): the job's label on every pod, and KUBEXEC_SELECTOR
    as deploy/ and k8smpi-job give their launchers."""
    selector = {"KUBEXEC_SELECTOR": f"{JOB_LABEL}=bench"}
    pod_path = (
        f"{KUBEXEC.parent}:{Path(cluster.kubectl_path).parent}:"
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
    objects = statefulset(
        "b", service="bsvc", replicas=replicas, env={"PATH": pod_path, **selector}
    )
    template = objects[-1]["spec"]["template"]
    template["metadata"]["labels"][JOB_LABEL] = "bench"
    if real_node:  # containers of `make images`' CPU image: the exec goes through runc
        template["spec"] = {**template["spec"], **real_node_spec(cluster, selector)}
        objects.insert(0, agent_config_map())
    return objects


def agent_config_map() -> dict[str, Any]:
    """mpi-operator v1's ConfigMap for its launcher: the kubectl agent script."""
    name = Path(KUBECTL_AGENT_IN_POD).name
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "mpi"},
        "data": {name: KUBECTL_AGENT},
    }


def real_node_spec(cluster: Cluster, env: dict[str, str]) -> dict[str, Any]:
    """Pod spec fields for the real node: its placement, the CPU image, never pulled; the
    kubectl agent script (ConfigMap) and the devcluster's kubectl (read-only hostPath: the
    real node is this machine) where mpi-operator v1 puts them, on the image's PATH."""
    image_path = (
        "/opt/k8smpi/bin:/opt/mpi/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    )
    container = {
        "name": "main",
        "image": real_node_image(cluster, "cpu"),
        "imagePullPolicy": "Never",
        "command": ["sleep", "infinity"],
        "env": [{"name": k, "value": v} for k, v in env.items()]
        + [{"name": "PATH", "value": f"{image_path}:{KUBE_DIR}"}],
        "volumeMounts": [
            {"name": "mpi", "mountPath": str(Path(KUBECTL_AGENT_IN_POD).parent)},
            {"name": "kubectl", "mountPath": f"{KUBE_DIR}/kubectl", "readOnly": True},
        ],
    }
    volumes = [
        {"name": "mpi", "configMap": {"name": "mpi", "defaultMode": 0o555}},
        {"name": "kubectl", "hostPath": {"path": cluster.kubectl_path, "type": "File"}},
    ]
    placement: dict[str, Any] = cluster.state["real_nodes"]["placement"]
    return {
        **placement,
        "containers": [container],
        "volumes": volumes,
        "terminationGracePeriodSeconds": 1,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--calls", type=int, default=30, help="single calls per contestant (0: none)"
    )
    parser.add_argument(
        "--fanout", default="16,64,256", help="fan-out sizes, comma-separated ('': none)"
    )
    parser.add_argument("--fanout-runs", type=int, default=3, help="runs per size and agent")
    parser.add_argument("--mpirun", default="", help="mpirun launch sizes (e.g. 16,64)")
    parser.add_argument("--launches", type=int, default=3, help="mpirun runs per size and agent")
    parser.add_argument("--out", type=Path, default=FIGURES, help="where the JSON and PNG go")
    parser.add_argument(
        "--real-node",
        action="store_true",
        help="pods on the devcluster's real node (containers; calls from this machine only, "
        "mpirun from pod b-0): kubexec[-mpirun]-real-node.json",
    )
    parser.add_argument("--in-pod-calls", type=int, help=argparse.SUPPRESS)  # runs in pod b-0
    parser.add_argument("--in-pod-installed", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--in-pod-kubectl", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_pod_calls:
        result = in_pod(args.in_pod_calls, args.in_pod_installed, args.in_pod_kubectl)
        print(json.dumps(result))
        return 0
    sizes = [int(s) for s in args.fanout.split(",") if s]
    mpirun = [int(s) for s in args.mpirun.split(",") if s]
    cluster = Cluster.from_devcluster(REPO / ".devcluster")
    installed = install_wheel_venv()
    ns = cluster.create_namespace("kubexec-bench")
    results: dict[str, Any] = {"started": dt.datetime.now(dt.timezone.utc).isoformat()}
    try:
        replicas = max([*sizes, *mpirun, 1]) + 1  # b-0 is the launcher pod
        objects = bench_pods(cluster, replicas, real_node=args.real_node)
        cluster.apply([*RBAC, *objects], ns)
        running_pods(cluster, ns, "app=b", replicas)
        print(f"namespace {ns}: {replicas} pods Running; load {load()}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            results |= measure(cluster, ns, args, installed=installed, tmp=Path(tmp))
        if mpirun:
            results["launches"] = launches(
                cluster, ns, mpirun, args.launches, real_node=args.real_node
            )
            report_launches(results["launches"])
    finally:
        with contextlib.suppress(Exception):
            cluster.delete_namespace(ns)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "kubexec-mpirun" if set(results) == {"started", "launches"} else "kubexec"
    stem += "-real-node" if args.real_node else ""
    path = args.out / f"{stem}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nfigures: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    if len(results.get("fanout", {})) > 1:  # a curve needs two sizes
        png = args.out / f"{stem}-fanout.png"
        draw(results["fanout"], png)
        print(f"curves:  {png.relative_to(REPO) if png.is_relative_to(REPO) else png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
