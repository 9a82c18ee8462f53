"""hostfile-gen at scale: 5000 pods on simulated nodes, beside ``kubectl get pods -o jsonpath``.

Not a test. On the running devcluster (``make devcluster``) it adds enough kwok nodes
(``--per-node`` pods each, the nodes' pod capacity), creates the pods already bound to them
(``spec.nodeName``: the scheduler is not what is measured), waits until kwok reports them
Running, then times both tools producing the same pod names, ``--runs`` times each,
alternating. Everything it created is deleted at the end, and it waits until it is gone.

    .venv/bin/python bench/hostfile_bench.py [--pods 5000] [--runs 5]

Prints wall time (median and best) and peak RSS per tool, and hostfile-gen / kubectl ratios;
writes the figures to bench/results/hostfile_bench.json. Target: hostfile-gen <= 2 s.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devcluster.client import Cluster, wait_for  # noqa: E402
from k8smpi_runtime.kube import config  # noqa: E402 - after the sys.path insert
from k8smpi_runtime.kube.rest import Api  # noqa: E402

HOSTFILE_GEN = str(Path(sys.executable).parent / "hostfile-gen")
JSONPATH = "{range .items[*]}{.metadata.name}{'\\n'}{end}"
CHUNK = 500


@dataclass
class Run:
    wall_s: float
    #: user + system CPU seconds: less sensitive than wall time to a busy machine.
    cpu_s: float
    maxrss_kib: int
    stdout: str


def measure(argv: list[str], env: dict[str, str]) -> Run:
    """Wall time and the child's own peak RSS (wait4); output goes to a temp file."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        pid = os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_DUP2, out.fileno(), 1),
                (os.POSIX_SPAWN_DUP2, err.fileno(), 2),
            ],
        )
        _, status, usage = os.wait4(pid, 0)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{argv[0]} failed: {err.read().decode(errors='replace')}")
        return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, out.read().decode())


def pod_list(label: str, first: int, count: int, nodes: list[str], per_node: int) -> str:
    items = [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": f"worker-{i}", "labels": {"bench": label}},
            "spec": {
                "nodeName": nodes[i // per_node],
                "containers": [
                    {"name": "c", "image": "k8smpi/cpu:dev", "command": ["sleep", "infinity"]}
                ],
            },
        }
        for i in range(first, first + count)
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def not_running(api: Api, namespace: str) -> int:
    """Pods not Running yet: a field-selected count, cheap for the apiserver."""
    items, _ = api.list(
        f"/api/v1/namespaces/{namespace}/pods",
        {"fieldSelector": "status.phase!=Running"},
        limit=500,
    )
    return len(items)


def summary(runs: list[Run]) -> dict[str, float]:
    walls = [r.wall_s for r in runs]
    return {
        "wall_median_s": statistics.median(walls),
        "wall_best_s": min(walls),
        "cpu_median_s": statistics.median(r.cpu_s for r in runs),
        "peak_rss_mib": max(r.maxrss_kib for r in runs) / 1024,
    }


def report(results: dict[str, Any]) -> None:
    pods, node_count, runs = results["pods"], results["nodes"], results["runs"]
    ours_s, theirs_s = results["hostfile-gen"], results["kubectl"]
    print(f"\n{pods} pods on {node_count} kwok nodes, {runs} runs each (same names)")
    print(f"load average during the runs: {results['load_average']}")
    print(f"{'tool':<24}{'wall median':>12}{'wall best':>11}{'CPU median':>12}{'peak RSS':>12}")
    for tool in ("hostfile-gen", "hostfile-gen openmpi", "kubectl"):
        s = results[tool]
        print(
            f"{tool:<24}{s['wall_median_s']:>11.3f}s{s['wall_best_s']:>10.3f}s"
            f"{s['cpu_median_s']:>11.3f}s{s['peak_rss_mib']:>8.1f} MiB"
        )
    ratios = {
        "wall_median": ours_s["wall_median_s"] / theirs_s["wall_median_s"],
        "cpu_median": ours_s["cpu_median_s"] / theirs_s["cpu_median_s"],
        "peak_rss": ours_s["peak_rss_mib"] / theirs_s["peak_rss_mib"],
    }
    results["ratios_hostfile_gen_over_kubectl"] = ratios
    print(
        f"hostfile-gen / kubectl: wall {ratios['wall_median']:.2f}x, "
        f"CPU {ratios['cpu_median']:.2f}x, peak RSS {ratios['peak_rss']:.2f}x; target <= 2 s: "
        f"{'met' if ours_s['wall_median_s'] <= 2.0 else 'MISSED'}"
    )
    out = REPO / "bench" / "results" / "hostfile_bench.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=5000)
    parser.add_argument("--per-node", type=int, default=500, help="pods per simulated node")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    cluster = Cluster.from_devcluster(REPO / ".devcluster")
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    api = Api(config.load(kubeconfig=str(cluster.kubeconfig)))
    label = f"bench{secrets.token_hex(3)}"
    node_count = math.ceil(args.pods / args.per_node)
    namespace = ""
    results: dict[str, Any] = {"pods": args.pods, "nodes": node_count, "runs": args.runs}
    try:
        t0 = time.perf_counter()
        nodes = cluster.add_nodes(node_count, label)
        namespace = cluster.create_namespace("hostfile-bench")
        for first in range(0, args.pods, CHUNK):
            count = min(CHUNK, args.pods - first)
            doc = pod_list(label, first, count, nodes, args.per_node)
            cluster.kubectl("create", "-n", namespace, "-f", "-", input=doc, timeout=300)
        created = time.perf_counter() - t0
        print(f"created {node_count} nodes and {args.pods} pods in {created:.1f}s", flush=True)
        wait_for(
            lambda: not_running(api, namespace) == 0,
            timeout=600,
            interval=5,
            what=f"{args.pods} pods Running",
        )
        print(f"all Running after {time.perf_counter() - t0:.1f}s", flush=True)

        hostfile_gen = [
            HOSTFILE_GEN, "-n", namespace, "-l", f"bench={label}",
            "--slots", "1", "-f", "expanded", "--no-header",
        ]  # fmt: skip
        openmpi = [HOSTFILE_GEN, "-n", namespace, "-l", f"bench={label}", "--slots", "1"]
        kubectl = [
            cluster.kubectl_path, "get", "pods", "-n", namespace, "-l", f"bench={label}",
            "-o", f"jsonpath={JSONPATH}",
        ]  # fmt: skip
        runs: dict[str, list[Run]] = {"hostfile-gen": [], "hostfile-gen openmpi": [], "kubectl": []}
        load_before = os.getloadavg()
        for _ in range(args.runs):
            runs["kubectl"].append(measure(kubectl, env))
            runs["hostfile-gen"].append(measure(hostfile_gen, env))
            runs["hostfile-gen openmpi"].append(measure(openmpi, env))
        ours = runs["hostfile-gen"][-1].stdout.split()
        theirs = runs["kubectl"][-1].stdout.split()
        if len(ours) != args.pods or sorted(ours) != sorted(theirs):
            raise SystemExit(f"different names: hostfile-gen {len(ours)}, kubectl {len(theirs)}")
        results["same_names"] = True
        results["load_average"] = f"{load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
        for tool, tool_runs in runs.items():
            results[tool] = summary(tool_runs)
    finally:
        api.close()
        t1 = time.perf_counter()
        if namespace:
            cluster.kubectl(
                "delete", "pods", "--all", "-n", namespace, "--force", "--grace-period=0",
                "--wait=false", timeout=600, check=False,
            )  # fmt: skip
            cluster.delete_namespace(namespace)
        cluster.remove_nodes(label)
        print(f"cleaned up in {time.perf_counter() - t1:.1f}s", flush=True)

    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
