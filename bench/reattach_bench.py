"""kubexec's re-attach after an API server crash: the time from the API server back to every
session re-attached, for N sessions into N pods on the devcluster's real node.

Not a test. On the running devcluster (``make devcluster``, with its real node) it creates a
launcher pod and ``--pods`` worker pods that run this checkout's kubexec
(:func:`devcluster.reattachkit.job_pods`), starts one kubexec per worker from the launcher pod
(``sleep``, lifeline mode, as an MPI daemon's), then per run: SIGKILLs the API server, waits
``--down`` seconds, starts it again while polling it every 20 ms from this machine (*back*: its
first HTTP answer to ``/livez``, whatever the status; also when ``/readyz`` first says 200),
and reads the audit log until every session's re-attach exec (the wrapper in ``attach`` mode)
has its stream open (*attached*: the latest one's requestReceivedTimestamp). Both clocks are
this machine's. The namespace is deleted at the end.

    DEVCLUSTER_PORT_OFFSET=... .venv/bin/python bench/reattach_bench.py [--pods 4 16] [--runs 3]

Prints, per pod count, the seconds from back to all re-attached (median and max over the runs),
and the same from /readyz (negative: kubexec got in before the API server called itself ready).
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from devcluster import processes  # noqa: E402 - after the sys.path insert
from devcluster import reattachkit as kit  # noqa: E402
from devcluster.client import Cluster, devcluster, wait_for  # noqa: E402
from devcluster.layout import default_layout  # noqa: E402

SLEEP = "sleep 3600"


def back_times(cluster: Cluster, stop: threading.Event, out: dict[str, float]) -> None:
    """Poll the API server every 20 ms: ``answer`` is the first HTTP answer of any status to
    /livez (it serves again), ``ready`` the first 200 from /readyz."""
    lay = default_layout()
    ctx = ssl.create_default_context(cafile=str(lay.pki / "ca.crt"))
    ctx.load_cert_chain(str(lay.pki / "admin.crt"), str(lay.pki / "admin.key"))
    server = cluster.state["server"]
    while not stop.is_set() and "ready" not in out:
        if "answer" not in out:
            try:
                with urllib.request.urlopen(f"{server}/livez", context=ctx, timeout=1):  # noqa: S310
                    pass
                out["answer"] = time.time()
            except urllib.error.HTTPError:
                out["answer"] = time.time()
            except OSError:
                pass
        elif processes.https_ok(lay, f"{server}/readyz"):
            out["ready"] = time.time()
        time.sleep(0.02)


def one_run(cluster: Cluster, namespace: str, pods: int, down: float) -> tuple[float, float]:
    """One crash; (seconds from its first answer, from /readyz 200) to all re-attached."""
    killed = kit.crash_apiserver()
    time.sleep(down)
    stop = threading.Event()
    back: dict[str, float] = {}
    poller = threading.Thread(target=back_times, args=(cluster, stop, back), daemon=True)
    poller.start()
    started = devcluster("up", capture=True, timeout=180)
    if started.returncode != 0:
        raise SystemExit(f"reattach_bench: devcluster up failed: {started.stderr}")
    poller.join(30)
    stop.set()
    if "ready" not in back:
        raise SystemExit("reattach_bench: the API server never answered /readyz")

    def all_attached() -> list[float] | None:
        found = kit.attaches(cluster, namespace, since=killed, started=True)
        names = {e["objectRef"]["name"] for e in found}
        if len(names) < pods:
            return None
        return [kit.stamp(e["requestReceivedTimestamp"]) for e in found]

    stamps = wait_for(all_attached, timeout=90, interval=0.5, what=f"{pods} re-attaches")
    return max(stamps) - back["answer"], max(stamps) - back["ready"]


def measure(cluster: Cluster, pods: int, runs: int, down: float) -> list[tuple[float, float]]:
    namespace = cluster.create_namespace(f"reattach-bench-{pods}")
    try:
        workers = kit.job_pods(cluster, namespace, pods)
        start = "\n".join(
            f"setsid {kit.KUBEXEC} {w} '{SLEEP}' </dev/null >/dev/null 2>&1 &" for w in workers
        )
        cluster.kubectl("exec", "-n", namespace, "rl", "--", "sh", "-c", start)
        for w in workers:

            def running(pod: str = w) -> bool:
                return any(SLEEP in p for p in kit.left_in(cluster, namespace, pod))

            wait_for(running, timeout=60, what=f"the session in {w}")
        times = []
        for i in range(runs):
            answer, ready = one_run(cluster, namespace, pods, down)
            print(
                f"  {pods} pods, run {i + 1}: all re-attached {answer:.2f} s after the API "
                f"server's first answer ({ready:+.2f} s after /readyz)",
                flush=True,
            )
            times.append((answer, ready))
        return times
    finally:
        cluster.delete_namespace(namespace)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--down", type=float, default=10.0, help="seconds the API server is away")
    args = parser.parse_args(argv)
    cluster = Cluster.from_devcluster(default_layout().root)
    try:
        for pods in args.pods:
            times = measure(cluster, pods, args.runs, args.down)
            answer = [a for a, _ in times]
            ready = [r for _, r in times]
            print(
                f"re-attach, {pods} pods, API server away {args.down:g} s: all sessions "
                f"re-attached {statistics.median(answer):.2f} s (median), {max(answer):.2f} s "
                f"(max) after its first answer; {statistics.median(ready):+.2f} s (median), "
                f"{max(ready):+.2f} s (max) after /readyz said ready ({args.runs} runs)"
            )
    finally:
        devcluster("up", capture=True, timeout=180)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
