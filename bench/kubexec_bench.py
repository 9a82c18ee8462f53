"""kubexec beside what users run instead: ``kubectl exec`` per call, and an mpirun launch.

On the devcluster (``make devcluster``), in a namespace of its own, with pods on the
devcluster's own nodes (no GPUs asked for)::

    .venv/bin/python bench/kubexec_bench.py                 # 30 calls, launches on 16 and 64 pods
    .venv/bin/python bench/kubexec_bench.py --calls 50 --pods 16 --launches 5

1. **One call**, N times each, interleaved: ``kubexec <pod> true`` against
   ``kubectl exec <pod> -- true`` (the devcluster's kubectl): median and p95 wall time, median
   peak RSS and CPU (``wait4``). Twice: from this machine with the kubeconfig (a client
   certificate; kubexec parses its YAML), and from inside a pod with the pod's service-account
   token, which is where launchers run kubexec.
2. **mpirun daemon start** on 16 and 64 pods (Open MPI 4.1, one ``hostname`` rank per pod,
   ``--host`` with pod names), mpirun running in a launcher pod (its service-account token,
   pod DNS): the agent is kubexec (``OMPI_MCA_plm_rsh_agent=kubexec``)
   against mpi-operator v1's kubectl agent script
   (``POD_NAME=$1; shift; kubectl exec ${POD_NAME} -- /bin/sh -c "$*"``). "Daemons started":
   from mpirun's start to the moment the API server had answered the last daemon's exec
   (its audit log's ResponseStarted), i.e. the agents' own cost; and the wall time of the whole
   job, which on the devcluster is dominated by ORTE's wire-up and podexec, not by the agent.

Printed: the figures and the ratios kubexec/kubectl (targets from issue 3: one call's wall
<= 1.0x, peak RSS <= 0.5x; the 64-pod launch <= 0.7x). Results also go to
``bench/results/kubexec-<time>.json``. Everything runs on one shared 2-core machine with the
control plane: times are rough; compare ratios, and rerun when the load was high (printed).
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
from devcluster.workloads import KUBEXEC, running_pods, statefulset  # noqa: E402

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


def timed(argv: list[str], env: dict[str, str], timeout: float = 300) -> tuple[Run, bytes, bytes]:
    """Run ``argv``; wall time and ``wait4`` usage of it and its waited-for descendants."""
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
        time.sleep(0.002)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.stderr.write(f"! {' '.join(argv[:6])}... exited {proc.returncode}: {err[-500:]!r}\n")
    run = Run(wall, usage.ru_maxrss, usage.ru_utime + usage.ru_stime, proc.returncode)
    return run, out, err


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(runs: list[Run]) -> dict[str, float]:
    walls = [r.wall_s for r in runs]
    return {
        "n": len(runs),
        "started_median_s": statistics.median(r.started_s for r in runs),
        "wall_median_s": statistics.median(walls),
        "wall_p95_s": pct(walls, 0.95),
        "maxrss_median_mib": statistics.median(r.maxrss_kib for r in runs) / 1024,
        "cpu_median_s": statistics.median(r.cpu_s for r in runs),
        "failures": sum(r.rc != 0 for r in runs),
    }


def one_call(cluster: Cluster, ns: str, calls: int) -> dict[str, Any]:
    """From this machine, with the kubeconfig (client certificate), into pod b-0."""
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    kubexec = [str(KUBEXEC), "--namespace", ns, "b-0", "true"]
    kubectl = [cluster.kubectl_path, "exec", "-n", ns, "b-0", "--", "true"]
    return compare(kubexec, kubectl, env, calls)


def one_call_in_pod(cluster: Cluster, ns: str, calls: int) -> dict[str, Any]:
    """From inside pod b-0 (its service-account token: the launcher pod's case) into b-1."""
    argv = [
        str(KUBEXEC), "--namespace", ns, "-n", "b-0",
        sys.executable, str(Path(__file__).resolve()), "--in-pod-calls", str(calls),
    ]  # fmt: skip
    proc = subprocess.run(
        argv,
        capture_output=True,
        env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"in-pod calls failed: {proc.stderr.decode(errors='replace')[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.decode().splitlines()[-1])
    return result


def compare(
    kubexec: list[str], kubectl: list[str], env: dict[str, str], calls: int
) -> dict[str, Any]:
    for argv in (kubexec, kubectl, kubexec, kubectl):  # warm caches (pyc, page cache)
        timed(argv, env)
    runs: dict[str, list[Run]] = {"kubexec": [], "kubectl": []}
    for i in range(calls):
        order = (("kubexec", kubexec), ("kubectl", kubectl))
        for name, argv in order if i % 2 == 0 else reversed(order):
            runs[name].append(timed(argv, env)[0])
    return {name: summary(r) for name, r in runs.items()}


def launches(cluster: Cluster, ns: str, sizes: list[int], repeat: int) -> dict[str, Any]:
    """mpirun in pod b-0 (the launcher pod: service-account token, pod DNS) on b-1..b-n."""
    env_file = Path.home() / ".cache" / "k8smpi" / "mpi" / "env" / "openmpi4.env"
    if "K8SMPI_CACHE" in os.environ:
        env_file = Path(os.environ["K8SMPI_CACHE"]) / "mpi" / "env" / "openmpi4.env"
    sourced = subprocess.run(
        ["sh", "-c", '. "$0" && env -0', str(env_file)], capture_output=True, check=True
    ).stdout.decode()
    launcher = dict(item.partition("=")[::2] for item in sourced.split("\0") if item)[
        "MPI_LAUNCHER"
    ]
    host_env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
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
                command = (
                    "echo BEGIN $(date +%s.%N) >&2; "
                    f"exec env {exports} {launcher} -np {n} --host {hosts} hostname"
                )
                return [str(KUBEXEC), "--namespace", ns, "-n", "b-0", command]

            runs: dict[str, list[Run]] = {name: [] for name in agents}
            for agent in agents.values():  # warm-up: podexec's first exec per pod makes a token
                timed(argv(agent), host_env)
            for i in range(repeat):
                order = list(agents.items())
                for name, agent in order if i % 2 == 0 else reversed(order):
                    seen = len(exec_starts(cluster, ns))
                    run, out, err = timed(argv(agent), host_env)
                    end = time.time()
                    begin = float(err.split(b"BEGIN ", 1)[1].split()[0]) if b"BEGIN " in err else 0
                    starts = exec_starts(cluster, ns)[seen:]
                    if len(starts) != n:
                        sys.stderr.write(
                            f"! {name}: {len(starts)} execs in the audit log, not {n}\n"
                        )
                        run.rc = run.rc or -2
                    run.started_s = max(starts, default=begin) - begin
                    run.wall_s = end - begin
                    print(
                        f"    {n} pods, {name}: daemons started {run.started_s:.2f}s, "
                        f"job {run.wall_s:.2f}s, rc={run.rc}",
                        flush=True,
                    )
                    got = sorted(set(out.decode().split()))
                    if run.rc == 0 and len(got) != n:
                        sys.stderr.write(f"! {name}: {len(got)} hosts answered, not {n}\n")
                        run.rc = -1
                    runs[name].append(run)
            results[str(n)] = {name: summary(r) for name, r in runs.items()}
            print(f"  launch on {n} pods done", flush=True)
    return results


def exec_starts(cluster: Cluster, ns: str) -> list[float]:
    """When the API server started answering each exec into ``ns`` (epoch seconds), in order;
    the launcher pod b-0's own exec left out."""
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
            starts.append(dt.datetime.fromisoformat(stamp).timestamp())
    return starts


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


def report(
    calls: dict[str, Any], in_pod: dict[str, Any], launch: dict[str, Any], load: tuple[float, ...]
) -> None:
    print(f"\nload average before/after: {load[0]:.2f} / {load[1]:.2f} (2 cores, shared)")
    for title, result in (
        ("from this machine, kubeconfig with a client certificate", calls),
        ("in a launcher pod, its service-account token", in_pod),
    ):
        report_calls(title, result)
    report_launches(launch)


def report_calls(title: str, calls: dict[str, Any]) -> None:
    kx, kc = calls["kubexec"], calls["kubectl"]
    print(f"\none call ({title})")
    print(f"  n={kx['n']} each                kubexec    kubectl    ratio   target")
    print(
        f"  wall median            {kx['wall_median_s']:8.3f}s {kc['wall_median_s']:8.3f}s"
        f"  {ratio(kx['wall_median_s'], kc['wall_median_s']):>6}   <= 1.0x"
    )
    print(
        f"  wall p95               {kx['wall_p95_s']:8.3f}s {kc['wall_p95_s']:8.3f}s"
        f"  {ratio(kx['wall_p95_s'], kc['wall_p95_s']):>6}"
    )
    kx_rss, kc_rss = kx["maxrss_median_mib"], kc["maxrss_median_mib"]
    print(
        f"  peak RSS median        {kx_rss:7.1f}Mi {kc_rss:7.1f}Mi"
        f"  {ratio(kx_rss, kc_rss):>6}   <= 0.5x"
    )
    print(
        f"  CPU median             {kx['cpu_median_s']:8.3f}s {kc['cpu_median_s']:8.3f}s"
        f"  {ratio(kx['cpu_median_s'], kc['cpu_median_s']):>6}"
    )


def report_launches(launch: dict[str, Any]) -> None:
    for n, res in launch.items():
        a, b = res["kubexec"], res["kubectl-script"]
        print(f"\nmpirun (Open MPI 4.1) on {n} pods, n={a['n']} each: kubexec | kubectl script")
        print(
            f"  daemons started        {a['started_median_s']:8.2f}s {b['started_median_s']:8.2f}s"
            f"  {ratio(a['started_median_s'], b['started_median_s']):>6}"
            + ("   <= 0.7x" if n == "64" else "")
        )
        print(
            f"  whole job              {a['wall_median_s']:8.2f}s {b['wall_median_s']:8.2f}s"
            f"  {ratio(a['wall_median_s'], b['wall_median_s']):>6}"
        )
        failures = a["failures"] + b["failures"]
        if failures:
            print(f"  ! {failures} failed runs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=30, help="single calls per tool (>= 30)")
    parser.add_argument("--pods", default="16,64", help="launch sizes, comma-separated")
    parser.add_argument("--launches", type=int, default=3, help="mpirun runs per size and agent")
    parser.add_argument("--in-pod-calls", type=int, help=argparse.SUPPRESS)  # runs in pod b-0
    args = parser.parse_args()
    if args.in_pod_calls:
        kubexec = ["kubexec", "b-1", "true"]
        kubectl = ["kubectl", "exec", "b-1", "--", "true"]
        print(json.dumps(compare(kubexec, kubectl, dict(os.environ), args.in_pod_calls)))
        return 0
    sizes = [int(s) for s in args.pods.split(",") if s]
    cluster = Cluster.from_devcluster(REPO / ".devcluster")
    ns = cluster.create_namespace("kubexec-bench")
    load_before = os.getloadavg()[0]
    try:
        # Both agents are installed in the "image": orted looks its agent up in the pod too.
        pod_path = (
            f"{KUBEXEC.parent}:{Path(cluster.kubectl_path).parent}:"
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        )
        replicas = max(sizes) + 1  # b-0 is the launcher pod
        objects = statefulset("b", service="bsvc", replicas=replicas, env={"PATH": pod_path})
        cluster.apply([*RBAC, *objects], ns)
        running_pods(cluster, ns, "app=b", replicas)
        print(f"namespace {ns}: {replicas} pods Running", flush=True)
        calls = one_call(cluster, ns, args.calls)
        in_pod = one_call_in_pod(cluster, ns, args.calls)
        print("  single calls done", flush=True)
        launch = launches(cluster, ns, sizes, args.launches)
    finally:
        with contextlib.suppress(Exception):
            cluster.delete_namespace(ns)
    load = (load_before, os.getloadavg()[0])
    report(calls, in_pod, launch, load)
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = out / f"kubexec-{stamp}.json"
    path.write_text(
        json.dumps(
            {"calls": calls, "calls_in_pod": in_pod, "launches": launch, "load": load}, indent=2
        )
    )
    print(f"\nresults: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
