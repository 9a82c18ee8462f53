"""k8s-waitfor at scale, beside the anchor's loop: requests on pods, latency, peak RSS.

On the devcluster (``make devcluster``), in a namespace of its own, on simulated nodes of its
own (tainted, so nobody else's pods land there; removed at the end)::

    .venv/bin/python bench/waitfor_bench.py            # 1000 pods
    .venv/bin/python bench/waitfor_bench.py --pods 200

A StatefulSet of N pods (no resources, a headless Service) is created, and at once four
waiters start against the same rollout:

- ``k8s-waitfor --statefulset`` with DNS checks, run with a pod's resolv.conf (CoreDNS);
- ``k8s-waitfor --statefulset --no-dns``, as a service account with pods get/list/watch and
  statefulsets get only (its own user in the audit log);
- the anchor (jjhursey/k8s-waitfor ``k8s-wait-for-pods.sh``) as a script: every second
  ``nslookup $svc | grep Name | wc -l`` until N (here ``getent ahostsv4``: no nslookup on this
  machine), then every second ``kubectl get pods -l $sel | grep Running | wc -l`` until N;
- that second loop alone (``kubectl get pods | grep Running | wc -l`` every second: the list
  per second the issue compares with), as the same service account.

Figures, for each:

- requests on pods (list/watch/get), counted from the apiserver's audit log by user agent and
  user, one per audit ID;
- latency from the last pod turning Ready to exit: the bench watches the pods itself and keeps
  the local time each pod's Ready condition first turned True; negative means it exited before
  the last pod was Ready (the anchor checks phase Running, not Ready);
- peak RSS (``wait4``: the process and its descendants, e.g. each kubectl the loop runs).

The four run at the same time on the same (shared, 2-core) machine: times are rough.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from k8smpi_runtime.kube import config as kconfig  # noqa: E402
from k8smpi_runtime.kube import rest  # noqa: E402

JSON = dict[str, Any]
WAITFOR = str(Path(sys.executable).parent / "k8s-waitfor")
TAINT = "k8smpi.dev/bench"

KUBECTL_LOOP = r"""
# the anchor's second loop alone: a list every second (what the issue compares against)
N=$1; SEL=$2; NS=$3
while [ "$(kubectl get pods -n "$NS" -l "$SEL" | grep Running | wc -l)" -lt "$N" ]; do
  sleep 1
done
"""

ANCHOR = r"""
# jjhursey/k8s-waitfor k8s-wait-for-pods.sh, loop logic as written (nslookup -> getent;
# -n added: in a pod kubectl would use the pod's namespace)
N=$1; SEL=$2; SVC=$3; NS=$4
while [ "$(getent ahostsv4 "$SVC" | awk '{print $1}' | sort -u | wc -l)" -lt "$N" ]; do
  sleep 1
done
while [ "$(kubectl get pods -n "$NS" -l "$SEL" | grep Running | wc -l)" -lt "$N" ]; do
  sleep 1
done
"""


@dataclass
class Contestant:
    name: str
    argv: list[str]
    env: dict[str, str]
    started: float = 0.0
    ended: float = 0.0
    rc: int | None = None
    maxrss_kib: int = 0
    stdout: str = ""
    stderr: str = ""
    thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            self.started = time.time()
            proc = subprocess.Popen(self.argv, stdout=out, stderr=err, env=self.env)
            # wait4: the exit status and the peak RSS of the process and its descendants.
            _, status, usage = os.wait4(proc.pid, 0)
            self.ended = time.time()
            self.rc = proc.returncode = os.waitstatus_to_exitcode(status)
            self.maxrss_kib = usage.ru_maxrss
            out.seek(0)
            err.seek(0)
            self.stdout, self.stderr = out.read(), err.read()

    def join(self, timeout: float) -> None:
        if self.thread is not None:
            self.thread.join(timeout)


class Kubectl:
    def __init__(self, state: JSON) -> None:
        self.path = str(Path(state["bin"]) / "kubectl")
        self.kubeconfig = state["kubeconfig"]

    def __call__(self, *args: str, input: str | None = None, check: bool = True) -> str:
        proc = subprocess.run(
            [self.path, f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def apply(self, items: list[JSON], namespace: str | None = None) -> None:
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        ns = ["-n", namespace] if namespace else []
        self("apply", *ns, "-f", "-", input=doc)


def nodes(count: int, owner: str, resources: JSON) -> list[JSON]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": f"kwok-{owner}-{i}",
                "annotations": {"kwok.x-k8s.io/node": "fake"},
                "labels": {
                    "k8smpi.dev/test-nodes": owner,
                    "kubernetes.io/hostname": f"kwok-{owner}-{i}",
                    "type": "kwok",
                },
            },
            "spec": {"taints": [{"key": TAINT, "value": owner, "effect": "NoSchedule"}]},
            "status": {"capacity": resources, "allocatable": resources},
        }
        for i in range(count)
    ]


def workload(name: str, replicas: int, owner: str) -> list[JSON]:
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": f"{name}-svc"},
            "spec": {"clusterIP": "None", "selector": {"app": name}},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "podManagementPolicy": "Parallel",
                "serviceName": f"{name}-svc",
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {
                        "containers": [{"name": "main", "image": "k8smpi/cpu:dev"}],
                        "nodeSelector": {"k8smpi.dev/test-nodes": owner},
                        "tolerations": [{"key": TAINT, "operator": "Exists"}],
                        "terminationGracePeriodSeconds": 0,
                    },
                },
            },
        },
    ]


def least_privilege(namespace: str) -> list[JSON]:
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "launcher"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": "launcher"},
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": "launcher"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": "launcher",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "launcher", "namespace": namespace}],
        },
    ]


class ReadyClock:
    """Watches the pods; keeps the local time each pod's Ready condition first turned True."""

    def __init__(self, cfg: kconfig.ClientConfig, namespace: str, selector: str) -> None:
        self.api = rest.Api(cfg)
        self.path = f"/api/v1/namespaces/{namespace}/pods"
        self.params = {"labelSelector": selector}
        self.ready_at: dict[str, float] = {}
        self._stop = threading.Event()
        _, self.version = self.api.list(self.path, self.params)
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                for ev in self.api.watch(self.path, self.params, resource_version=self.version):
                    now = time.time()
                    obj = ev.get("object") or {}
                    self.version = obj.get("metadata", {}).get("resourceVersion", self.version)
                    conds = obj.get("status", {}).get("conditions") or []
                    if any(c["type"] == "Ready" and c["status"] == "True" for c in conds):
                        self.ready_at.setdefault(obj["metadata"]["name"], now)
            except Exception as e:  # noqa: BLE001 - a bench: report and retry
                print(f"bench: ready clock: {e}; retrying", file=sys.stderr)
                time.sleep(1)

    @property
    def last(self) -> float:
        return max(self.ready_at.values()) if self.ready_at else float("nan")


DNS_CLOCK = """
import socket, sys, time
n, name = int(sys.argv[1]), sys.argv[2]
while True:
    try:
        got = {i[4][0] for i in socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)}
    except OSError:
        got = set()
    if len(got) >= n:
        print(f"{time.time():.3f}")
        break
    time.sleep(0.2)
"""


def audit_requests(audit_log: Path, namespace: str, since: float) -> dict[str, dict[str, int]]:
    """Requests on pods in ``namespace`` by contestant key -> verb -> count (one per audit ID)."""
    seen: dict[str, tuple[str, str]] = {}
    for path in sorted(audit_log.parent.glob(audit_log.stem + "*")):
        with path.open(errors="replace") as f:
            for line in f:
                if namespace not in line or '"pods"' not in line:
                    continue
                e = json.loads(line)
                ref = e.get("objectRef") or {}
                if ref.get("resource") != "pods" or ref.get("subresource"):
                    continue
                if ref.get("namespace") != namespace or e.get("verb") not in (
                    "list",
                    "watch",
                    "get",
                ):
                    continue
                when = dt.datetime.fromisoformat(
                    e["requestReceivedTimestamp"].replace("Z", "+00:00")
                )
                if when.timestamp() < since - 1:
                    continue
                ua = e.get("userAgent", "")
                user = (e.get("user") or {}).get("username", "")
                if ua.startswith("k8s-waitfor/"):
                    key = "waitfor-nodns" if user.endswith(":launcher") else "waitfor"
                elif ua.startswith("kubectl"):
                    key = "anchor-loop" if user.endswith(":launcher") else "anchor"
                else:
                    continue
                seen[e["auditID"]] = (key, e["verb"])
    counts: dict[str, dict[str, int]] = {}
    for key, verb in seen.values():
        counts.setdefault(key, {}).setdefault(verb, 0)
        counts[key][verb] += 1
    return counts


def pod_dns(resolv: Path, argv: list[str]) -> list[str]:
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(resolv), *argv]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=1000)
    parser.add_argument(
        "--nodes", type=int, default=4, help="extra simulated nodes (500 pods each)"
    )
    parser.add_argument("--timeout", type=int, default=900, help="seconds for the whole rollout")
    parser.add_argument("--keep", action="store_true", help="leave the namespace and nodes")
    args = parser.parse_args()

    state = json.loads((REPO / ".devcluster" / "state.json").read_text())
    kubectl = Kubectl(state)
    owner = f"bench-waitfor-{secrets.token_hex(3)}"
    namespace = owner
    name = "cnode"
    cfg = kconfig.load(kubeconfig=state["kubeconfig"], namespace=namespace)
    env = dict(
        os.environ,
        KUBECONFIG=state["kubeconfig"],
        PATH=f"{Path(kubectl.path).parent}:" + os.environ["PATH"],
    )
    resolv = REPO / ".devcluster" / "resolv" / f"{namespace}.conf"
    resolv.parent.mkdir(exist_ok=True)
    resolv.write_text(
        f"nameserver {state['dns_address']}\n"
        f"search {namespace}.svc.{state['cluster_domain']} svc.{state['cluster_domain']} "
        f"{state['cluster_domain']}\noptions ndots:5 timeout:1 attempts:2\n"
    )
    print(f"bench: {args.pods} pods on {args.nodes} extra kwok nodes, namespace {namespace}")
    try:
        kubectl("create", "namespace", namespace)
        kubectl.apply(nodes(args.nodes, owner, state["node_resources"]))
        deadline = time.monotonic() + 60
        while kubectl("get", "sa", "default", "-n", namespace, check=False) == "":
            if time.monotonic() > deadline:
                raise RuntimeError("no default service account")
            time.sleep(0.5)
        kubectl.apply(least_privilege(namespace), namespace)
        token = kubectl("create", "token", "launcher", "-n", namespace).strip()
        sa_kubeconfig = resolv.with_suffix(".kubeconfig")
        sa_kubeconfig.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [
                        {
                            "name": "c",
                            "cluster": {
                                "server": state["server"],
                                "certificate-authority": state["ca"],
                            },
                        }
                    ],
                    "users": [{"name": "u", "user": {"token": token}}],
                    "contexts": [
                        {
                            "name": "c",
                            "context": {"cluster": "c", "user": "u", "namespace": namespace},
                        }
                    ],
                    "current-context": "c",
                }
            )
        )
        sa_kubeconfig.chmod(0o600)
        clock = ReadyClock(cfg, namespace, f"app={name}")
        common = [
            "-n",
            namespace,
            "--statefulset",
            name,
            "--timeout",
            f"{args.timeout}s",
            "--progress",
            "log",
            "--progress-interval",
            "10s",
            "-v",
        ]
        contestants = [
            Contestant("k8s-waitfor", pod_dns(resolv, [WAITFOR, *common]), env),
            Contestant(
                "k8s-waitfor --no-dns",
                [WAITFOR, *common, "--no-dns", "--kubeconfig", str(sa_kubeconfig)],
                env,
            ),
            Contestant(
                "anchor script",
                pod_dns(
                    resolv,
                    [
                        "sh",
                        "-c",
                        ANCHOR,
                        "anchor",
                        str(args.pods),
                        f"app={name}",
                        f"{name}-svc",
                        namespace,
                    ],
                ),
                env,
            ),
            Contestant(
                "anchor kubectl loop",
                [
                    "sh",
                    "-c",
                    KUBECTL_LOOP,
                    "loop",
                    str(args.pods),
                    f"app={name}",
                    namespace,
                ],
                dict(env, KUBECONFIG=str(sa_kubeconfig)),
            ),
        ]
        # When the headless Service's record lists every pod: polled through pod DNS.
        dns_clock = Contestant(
            "dns clock",
            pod_dns(resolv, [sys.executable, "-c", DNS_CLOCK, str(args.pods), f"{name}-svc"]),
            env,
        )
        since = time.time()
        kubectl.apply(workload(name, args.pods, owner), namespace)
        for c in [*contestants, dns_clock]:
            c.start()
        for c in [*contestants, dns_clock]:
            c.join(args.timeout + 60)
        if dns_clock.stdout.strip():
            print(f"bench: every pod in DNS at +{float(dns_clock.stdout) - since:.1f}s")
        time.sleep(2)  # let the audit log catch up with the watches' ends
        counts = audit_requests(Path(state["audit_log"]), namespace, since)
        report(contestants, clock, counts, args.pods, since)
    finally:
        if not args.keep:
            cleanup(kubectl, namespace, owner)
            with contextlib.suppress(OSError):
                resolv.unlink()
                resolv.with_suffix(".kubeconfig").unlink()
    return 0


def _stats(stderr: str) -> tuple[str, float]:
    """k8s-waitfor's -v stats line, and the wall-clock time of its verdict."""
    for line in stderr.splitlines():
        if "stats:" in line:
            text = line.split("stats:", 1)[1].strip()
            stats, _, verdict = text.partition("; verdict at ")
            return stats, float(verdict.split()[0]) if verdict else float("nan")
    return "", float("nan")


def report(
    contestants: list[Contestant], clock: ReadyClock, counts: JSON, pods: int, since: float
) -> None:
    last = clock.last
    print(
        f"\nbench: {len(clock.ready_at)}/{pods} pods seen Ready; last Ready at "
        f"+{last - since:.1f}s after the StatefulSet was created"
    )
    keys = {
        "k8s-waitfor": "waitfor",
        "k8s-waitfor --no-dns": "waitfor-nodns",
        "anchor script": "anchor",
        "anchor kubectl loop": "anchor-loop",
    }
    rows = []
    for c in contestants:
        verbs = counts.get(keys[c.name], {})
        total = sum(verbs.values())
        detail = ", ".join(f"{v} {k}" for k, v in sorted(verbs.items()))
        rows.append(
            (
                c.name,
                str(c.rc),
                f"{total} ({detail})" if detail else "0",
                f"{c.ended - last:+.2f} s",
                f"{c.maxrss_kib / 1024:.0f} MiB",
                f"{c.ended - c.started:.1f} s",
            )
        )
    head = ("waiter", "exit", "pod requests (audit log)", "last Ready -> exit", "peak RSS", "wall")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))
    for c in contestants:
        if c.name.startswith("k8s-waitfor"):
            stats, verdict = _stats(c.stderr)
            print(
                f"{c.name}: {stats}; verdict {verdict - last:+.2f} s after the last Ready, "
                f"exit {c.ended - verdict:.2f} s after the verdict"
            )
            tail = [ln for ln in c.stderr.splitlines() if "rest:" not in ln][-2:]
            print("  " + "\n  ".join(tail))
        elif c.rc:
            print(f"{c.name}: stderr: {c.stderr.strip()[-300:]}")


def cleanup(kubectl: Kubectl, namespace: str, owner: str) -> None:
    print(f"bench: deleting namespace {namespace} and nodes {owner}-* (waits until gone)")
    kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=600s", check=False)
    kubectl("delete", "nodes", "-l", f"k8smpi.dev/test-nodes={owner}", "--wait=true", check=False)
    left = kubectl(
        "get", "nodes", "-l", f"k8smpi.dev/test-nodes={owner}", "-o", "name", check=False
    )
    left += kubectl("get", "namespace", namespace, "-o", "name", check=False)
    print("bench: cleaned up" if not left.strip() else f"bench: still there: {left}")


if __name__ == "__main__":
    sys.exit(main())
