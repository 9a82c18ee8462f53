#!/usr/bin/env python3
"""`make demo`: the devcluster and what an MPI job needs from it, shown step by step.

Brings the devcluster up (or reuses it), runs the seed talk's compute nodes -- a 4-pod
StatefulSet with 4 GPUs and an InfiniBand HCA each, behind a headless Service -- in a namespace
of its own, and shows: the scheduler's placement, a command run in a pod through pods/exec, the
pods' DNS names, a pod that can never fit, and the clean-up. Exit 0 when every step held.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def show(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"   {line}", flush=True)


def main() -> int:
    say("Starting the devcluster: etcd, apiserver, controller-manager, scheduler, kwok, CoreDNS")
    up = subprocess.run([sys.executable, str(HERE / "devcluster.py"), "up"], check=False)
    if up.returncode != 0:
        return up.returncode
    state = json.loads((REPO / ".devcluster" / "state.json").read_text())
    kubectl = [str(Path(state["bin"]) / "kubectl"), f"--kubeconfig={state['kubeconfig']}"]

    def k(
        *args: str, check: bool = True, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [*kubectl, *args], input=stdin, capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise SystemExit(f"demo: kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    show(
        k(
            "get",
            "nodes",
            "-o",
            "custom-columns=NODE:.metadata.name,GPUS:.status.allocatable.nvidia\\.com/gpu,HCA:.status.allocatable.rdma/hca,CPU:.status.allocatable.cpu,READY:.status.conditions[?(@.type=='Ready')].status",
        ).stdout
    )

    ns = f"demo-{secrets.token_hex(3)}"
    k("create", "namespace", ns)
    try:
        for _ in range(100):
            if k("get", "sa", "default", "-n", ns, check=False).returncode == 0:
                break
            time.sleep(0.2)
        say(f"Applying the compute nodes in {ns}: StatefulSet my-cnode x4, Service my-hpc-cluster")
        show(k("apply", "-n", ns, "-f", str(HERE / "smoke" / "compute-nodes.yaml")).stdout)
        k(
            "wait",
            "-n",
            ns,
            "--for=condition=Ready",
            "pod",
            "-l",
            "app=my-hpc-compute-nodes",
            "--timeout=90s",
        )
        show(k("get", "pods", "-n", ns, "-o", "wide").stdout)

        say("Running a command in my-cnode-1 through pods/exec (apiserver -> kwok -> this machine)")
        proc = k(
            "exec",
            "-n",
            ns,
            "my-cnode-1",
            "--",
            "sh",
            "-c",
            "echo ok from $(hostname); exit 3",
            check=False,
        )
        show("$ kubectl exec my-cnode-1 -- sh -c 'echo ok from $(hostname); exit 3'")
        show(f"{proc.stdout}exit code: {proc.returncode}")
        if proc.returncode != 3:
            print("demo: the exit code did not come back through pods/exec", file=sys.stderr)
            return 1

        say("Resolving the pods' DNS names through CoreDNS, as a pod in the namespace would")
        conf = REPO / ".devcluster" / "resolv" / f"{ns}.conf"
        conf.parent.mkdir(exist_ok=True)
        domain = state["cluster_domain"]
        conf.write_text(
            f"nameserver {state['dns_address']}\n"
            f"search {ns}.svc.{domain} svc.{domain} {domain}\noptions ndots:5\n"
        )
        names = [f"my-cnode-{i}.my-hpc-cluster" for i in range(4)]
        proc = subprocess.run(
            [
                "unshare",
                "-m",
                "sh",
                "-c",
                'mount --bind "$0" /etc/resolv.conf && shift && for n in "$@"; do '
                'getent ahostsv4 "$n" | head -n1 | sed "s/STREAM/$n/"; done',
                str(conf),
                "_",
                *names,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        show(proc.stdout or proc.stderr)
        if len(proc.stdout.splitlines()) != 4:
            print("demo: not every pod name resolved", file=sys.stderr)
            return 1

        say("A pod asking for 5 GPUs, more than any node has, stays Pending")
        k(
            "run",
            "-n",
            ns,
            "too-big",
            "--image=k8smpi/cpu:dev",
            "--restart=Never",
            '--overrides={"spec":{"containers":[{"name":"too-big","image":"k8smpi/cpu:dev","resources":{"limits":{"nvidia.com/gpu":"5"}}}]}}',
        )
        for _ in range(100):
            msg = k(
                "get",
                "pod",
                "too-big",
                "-n",
                ns,
                "-o",
                "jsonpath={.status.conditions[?(@.type=='PodScheduled')].message}",
            ).stdout
            if msg:
                break
            time.sleep(0.2)
        show(f"too-big: Pending, Unschedulable: {msg}")
    finally:
        say(f"Cleaning up namespace {ns}")
        k("delete", "namespace", ns, "--wait=true", "--timeout=120s", check=False)
        show("done; the devcluster keeps running (make devcluster-down stops it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
