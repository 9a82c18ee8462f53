"""k8s-waitfor on the devcluster: every acceptance item of its issue.

k8s-waitfor runs as a process with a pod's resolv.conf (CoreDNS, the namespace's search
domains) in a private mount namespace, so its getaddrinfo() goes through cluster DNS as in a
pod. Pods ask for no GPUs, except the one that must never fit.
"""

from __future__ import annotations

import datetime as dt
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devcluster.client import JSON, Cluster, devcluster, wait_for

WAITFOR = str(Path(sys.executable).parent / "k8s-waitfor")
REPO = Path(__file__).resolve().parents[2]
IMAGE = "k8smpi/cpu:dev"
UA = "k8s-waitfor/"


# -- objects -----------------------------------------------------------------------------------


def service(name: str, app: str, *, not_ready: bool = False) -> JSON:
    spec: JSON = {"clusterIP": "None", "selector": {"app": app}}
    if not_ready:
        spec["publishNotReadyAddresses"] = True
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


def statefulset(name: str, replicas: int, svc: str) -> JSON:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "serviceName": svc,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": IMAGE}]},
            },
        },
    }


def pod(name: str, app: str, *, subdomain: str | None = None, gpus: int | None = None) -> JSON:
    container: JSON = {"name": "main", "image": IMAGE}
    if gpus is not None:
        container["resources"] = {"limits": {"nvidia.com/gpu": str(gpus)}}
    spec: JSON = {"containers": [container]}
    if subdomain:
        spec |= {"hostname": name, "subdomain": subdomain}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": spec,
    }


def ready_condition_times(cluster: Cluster, namespace: str, selector: str) -> list[float]:
    pods = cluster.get("pods", "-n", namespace, "-l", selector)["items"]
    times = []
    for p in pods:
        for c in p["status"].get("conditions", []):
            if c["type"] == "Ready" and c["status"] == "True":
                when = dt.datetime.fromisoformat(c["lastTransitionTime"].replace("Z", "+00:00"))
                times.append(when.timestamp())
    return times


# -- running k8s-waitfor -----------------------------------------------------------------------


def pod_dns_argv(cluster: Cluster, namespace: str, *args: str) -> list[str]:
    """k8s-waitfor with the namespace's pod resolv.conf (as Cluster.run_with_pod_dns does)."""
    conf = cluster.resolv_conf(namespace)
    script = 'mount --bind "$0" /etc/resolv.conf && exec "$@"'
    return ["unshare", "-m", "sh", "-c", script, str(conf), WAITFOR, "-n", namespace, *args]


def waitfor(
    cluster: Cluster, namespace: str, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return cluster.run_with_pod_dns(namespace, [WAITFOR, "-n", namespace, *args], timeout=timeout)


def start(
    cluster: Cluster, namespace: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        pod_dns_argv(cluster, namespace, *args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"k8s-waitfor did not end in {timeout}s; stderr:\n{err}") from None
    return proc.returncode, out, err


def pod_requests(cluster: Cluster, namespace: str) -> list[str]:
    """The verbs of k8s-waitfor's requests on pods in ``namespace``, from the audit log.

    One entry per request (audit ID): a watch may have only its ResponseStarted stage yet.
    """
    verbs = {
        e["auditID"]: e["verb"]
        for e in cluster.audit_events()
        if e.get("userAgent", "").startswith(UA)
        and e.get("objectRef", {}).get("resource") == "pods"
        and not e["objectRef"].get("subresource")
        and e["objectRef"].get("namespace") == namespace
    }
    return sorted(verbs.values())


def last_line(err: str) -> str:
    return err.strip().splitlines()[-1]


# -- the acceptance items ----------------------------------------------------------------------


def test_statefulset_exits_0_once_all_are_ready_and_resolvable(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    out_file = tmp_path / "hostfile"
    objects = [service("my-hpc-cluster", "my-cnode"), statefulset("my-cnode", 4, "my-hpc-cluster")]
    cluster.apply(objects, namespace)
    # Started while the pods are still being created, scheduled, made Ready, put in DNS.
    proc = start(
        cluster,
        namespace,
        "--statefulset",
        "my-cnode",
        "--timeout",
        "90s",
        "--progress-interval",
        "2s",
        "--hostfile-out",
        str(out_file),
        "--configmap",
        "my-hostfile",
        "--slots",
        "2",
    )
    code, out, err = finish(proc)
    exited = time.time()
    assert code == 0, err
    assert out == ""
    lines = err.splitlines()
    # Log mode (stderr is not a terminal): a start line, progress lines, the verdict.
    assert lines[0] == (
        f"k8s-waitfor: waiting up to 90s for statefulset my-cnode (4 pods) in namespace {namespace}"
    )
    progress = [ln for ln in lines if " ready " in ln and "s ready" in ln]
    assert progress, err
    assert all(ln.startswith("k8s-waitfor: ") for ln in lines)
    assert "\r" not in err
    assert lines[-2].startswith("k8s-waitfor: 4/4 pods Ready and resolvable after ")
    assert lines[-1] == (
        "k8s-waitfor: hostfile (openmpi, 4 hosts, 8 slots): ConfigMap my-hostfile created, "
        f"wrote {out_file}"
    )
    # It exited after the last pod turned Ready (1 s resolution), and every name resolves.
    assert max(ready_condition_times(cluster, namespace, "app=my-cnode")) <= exited
    pods = cluster.get("pods", "-n", namespace, "-l", "app=my-cnode")["items"]
    for p in pods:
        name = p["metadata"]["name"]
        assert cluster.resolve(namespace, f"{name}.my-hpc-cluster") == [p["status"]["podIP"]]
    # One list and one watch on pods; one GET of the StatefulSet is not on pods.
    assert pod_requests(cluster, namespace) == ["list", "watch"]
    # The hostfile through hostfile-gen's code: file and ConfigMap alike.
    text = out_file.read_text()
    hosts = [ln for ln in text.splitlines() if not ln.startswith("#")]
    assert hosts == [f"my-cnode-{i} slots=2" for i in range(4)]
    cm = cluster.get("configmap", "my-hostfile", "-n", namespace)
    assert cm["data"]["hostfile"] == text


def test_progress_on_a_terminal_is_one_live_line(cluster: Cluster, namespace: str) -> None:
    cluster.apply([service("hpc", "w"), statefulset("w", 2, "hpc")], namespace)
    argv = pod_dns_argv(cluster, namespace, "--statefulset", "w", "--timeout", "60s")
    master, slave = pty.openpty()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side is closed
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(master)
    assert proc.wait(10) == 0
    text = b"".join(chunks).decode()
    # Live updates rewrite one line (\r + erase); the line is erased before the verdict.
    assert "\r\x1b[K" in text
    live = [t for t in text.split("\r\x1b[K") if t]
    assert any(t.startswith("ready ") for t in live), text
    assert "k8s-waitfor: 0.0s" not in text  # no log lines on a terminal
    lines = [ln for ln in text.replace("\r\n", "\n").split("\n") if ln.strip()]
    assert lines[-1].split("\r\x1b[K")[-1].startswith("k8s-waitfor: 2/2 pods Ready and resolv")


def test_a_pod_that_never_fits_fails_within_the_grace(cluster: Cluster, namespace: str) -> None:
    cluster.apply([pod("fits", "big"), pod("too-big", "big", gpus=5)], namespace)
    started = time.monotonic()
    proc = waitfor(
        cluster,
        namespace,
        "-l",
        "app=big",
        "--count",
        "2",
        "--unschedulable-grace",
        "3s",
        "--timeout",
        "60s",
    )
    took = time.monotonic() - started
    assert proc.returncode == 7, proc.stderr
    assert took < 3 + 10, took
    err = proc.stderr.strip().splitlines()
    first = next(i for i, ln in enumerate(err) if "cannot become ready" in ln)
    assert err[first].startswith("k8s-waitfor: pod too-big cannot become ready: Unschedulable: ")
    assert "Insufficient nvidia.com/gpu" in err[first]
    assert err[first].endswith("(for longer than --unschedulable-grace 3s)")
    table = err[first + 1 :]
    assert table[0].split() == ["POD", "PHASE", "WHY"]
    assert table[1].split()[:3] == ["too-big", "Pending", "Unschedulable:"]
    assert "0/" in table[1] and "nodes are available" in table[1]


def test_a_missing_dns_record_waits_then_names_the_host(cluster: Cluster, namespace: str) -> None:
    # Subdomain "nosvc" has no headless Service: the pods are Ready but have no DNS record.
    cluster.apply([pod("w-0", "dns", subdomain="nosvc"), pod("w-1", "dns")], namespace)
    started = time.monotonic()
    proc = waitfor(cluster, namespace, "-l", "app=dns", "--count", "2", "--timeout", "8s")
    took = time.monotonic() - started
    assert proc.returncode == 6, proc.stderr
    assert took >= 8
    err = proc.stderr.strip().splitlines()
    verdict = next(ln for ln in err if "timed out" in ln)
    assert verdict == (
        f"k8s-waitfor: timed out after 8s: 1 of 2 pods not ready (pods matching app=dns in "
        f"namespace {namespace})"
    )
    assert err[-1].split() == ["w-0", "Running", "DNS:", "w-0.nosvc", "does", "not", "resolve"]
    # The same host written in a hostfile: waits, then names that host too.
    cluster.apply([service("nosvc", "dns")], namespace)
    hostfile = cluster.resolv_conf(namespace).parent / f"{namespace}.hosts"
    hostfile.write_text("w-0.nosvc slots=1\nw-1 slots=1\nw-9.nosvc slots=1\n")
    proc = waitfor(cluster, namespace, "--hostfile", str(hostfile), "--timeout", "4s")
    assert proc.returncode == 6, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].split() == ["w-9.nosvc", "-", "no", "such", "pod"]
    hostfile.write_text("w-0.nosvc slots=1\nw-1 slots=1\n")
    proc = waitfor(cluster, namespace, "--hostfile", str(hostfile), "--timeout", "30s")
    assert proc.returncode == 0, proc.stderr
    hostfile.unlink()


def grant(cluster: Cluster, namespace: str, rules: list[JSON]) -> Path:
    """A service account with exactly ``rules``; a kubeconfig with its token."""
    cluster.kubectl("create", "serviceaccount", "launcher", "-n", namespace, check=False)
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "launcher"},
        "rules": rules,
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "launcher"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "launcher"},
        "subjects": [{"kind": "ServiceAccount", "name": "launcher", "namespace": namespace}],
    }
    if rules:
        cluster.apply([role, binding], namespace)
    token = cluster.kubectl("create", "token", "launcher", "-n", namespace).stdout.decode()
    return cluster.token_kubeconfig(token.strip(), namespace)


PODS_READ = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}


def test_errors_have_documented_codes_and_one_line_messages(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply([service("hpc", "w"), statefulset("w", 2, "hpc")], namespace)

    def run(*args: str) -> tuple[int, list[str]]:
        proc = waitfor(cluster, namespace, "-q", *args)
        return proc.returncode, proc.stderr.strip().splitlines()

    # A malformed selector: usage (2), before any API access.
    assert run("-l", "app in (w") == (
        2,
        ["k8s-waitfor: malformed label selector 'app in (w' at 'app in (w'"],
    )
    # Nothing selected at all: the anchor exits 0 here.
    code, err = run()
    assert code == 2 and err[-1].startswith("k8s-waitfor: error: one of the arguments")
    # A selector that matches no pods: 8 at the deadline.
    assert run("-l", "app=nope", "--timeout", "2s") == (
        8,
        [f"k8s-waitfor: no pods match pods matching app=nope in namespace {namespace} after 2s"],
    )
    # No such namespace: 8 at once.
    started = time.monotonic()
    proc = cluster.run_with_pod_dns(
        namespace, [WAITFOR, "-q", "-n", f"{namespace}-nope", "-l", "app=w", "--timeout", "60s"]
    )
    assert time.monotonic() - started < 20
    assert (proc.returncode, proc.stderr) == (
        8,
        f"k8s-waitfor: namespace {namespace}-nope not found\n",
    )
    # No such StatefulSet: 8 at once.
    assert run("--statefulset", "nope") == (
        8,
        [f"k8s-waitfor: statefulset nope not found in namespace {namespace}"],
    )
    # No permission at all: 3, naming who lacks what.
    kubeconfig = grant(cluster, namespace, [])
    code, err = run("--kubeconfig", str(kubeconfig), "-l", "app=w")
    assert (code, err) == (
        3,
        [
            f"k8s-waitfor: API access denied: service account {namespace}/launcher may not list "
            f"pods in namespace {namespace} (k8s-waitfor needs pods: get, list, watch)"
        ],
    )


def test_least_privilege_and_the_exec_probe(cluster: Cluster, namespace: str) -> None:
    cluster.apply([service("hpc", "w"), statefulset("w", 2, "hpc")], namespace)
    kubeconfig = str(grant(cluster, namespace, [PODS_READ]))
    # pods get/list/watch is all a selector needs.
    proc = waitfor(cluster, namespace, "--kubeconfig", kubeconfig, "-l", "app=w", "--count", "2")
    assert proc.returncode == 0, proc.stderr
    # --statefulset reads the StatefulSet too.
    proc = waitfor(cluster, namespace, "-q", "--kubeconfig", kubeconfig, "--statefulset", "w")
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr == (
        f"k8s-waitfor: API access denied: service account {namespace}/launcher may not get "
        f"statefulsets.apps in namespace {namespace} (--statefulset needs statefulsets.apps: "
        "get, besides pods: get, list, watch)\n"
    )
    # --exec-probe needs pods/exec.
    args = ("--kubeconfig", kubeconfig, "-l", "app=w", "--count", "2", "--exec-probe")
    proc = waitfor(cluster, namespace, "-q", *args)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith(
        f"k8s-waitfor: --exec-probe: service account {namespace}/launcher may not exec into pod w-"
    )
    assert proc.stderr.endswith(
        f" in namespace {namespace} (--exec-probe needs pods/exec: create, get)\n"
    )
    assert proc.stderr.count("\n") == 1
    exec_rule = {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create", "get"]}
    grant(cluster, namespace, [PODS_READ, exec_rule])

    def probed() -> subprocess.CompletedProcess[str] | None:
        p = waitfor(cluster, namespace, *args)
        return p if p.returncode == 0 else None

    proc = wait_for(probed, timeout=30, what="the exec probe passing once RBAC allows it")
    assert "2/2 pods Ready and resolvable, exec probe passed after" in proc.stderr
    assert len(cluster.exec_events(namespace)) >= 2


def test_resolve_self(cluster: Cluster, namespace: str) -> None:
    # The launcher: in a headless Service that publishes not-Ready addresses (its init
    # container runs k8s-waitfor, so it is not Ready meanwhile).
    cluster.apply(
        [
            service("hpc", "w"),
            statefulset("w", 2, "hpc"),
            service("launch", "launcher", not_ready=True),
            pod("launcher", "launcher", subdomain="launch"),
            pod("lonely", "lonely"),
        ],
        namespace,
    )
    wait_for(
        lambda: len(ready_condition_times(cluster, namespace, "app in (w,launcher)")) == 3,
        timeout=60,
        what="pods Ready",
    )
    proc = waitfor(
        cluster, namespace, "--statefulset", "w", "--resolve-self", "--launcher-pod", "launcher"
    )
    assert proc.returncode == 0, proc.stderr
    # A launcher without a subdomain has no name workers could dial back to.
    proc = waitfor(
        cluster, namespace, "--statefulset", "w", "--resolve-self", "--launcher-pod", "lonely"
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("k8s-waitfor: --resolve-self: pod lonely has no spec.subdomain")
    # A name that does not resolve: waits, then names it.
    proc = waitfor(
        cluster,
        namespace,
        "--statefulset",
        "w",
        "--resolve-self",
        "nothing.launch",
        "--launcher-pod",
        "launcher",
        "--timeout",
        "3s",
    )
    assert proc.returncode == 6, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].split() == [
        "launcher",
        "(self)",
        "-",
        "DNS:",
        "nothing.launch",
        "does",
        "not",
        "resolve",
    ]


@pytest.mark.restarts_cluster
def test_the_wait_survives_an_apiserver_restart(cluster: Cluster, namespace: str) -> None:
    if cluster.root is None:
        pytest.fail("restarting the apiserver needs the devcluster", pytrace=False)
    cluster.apply([pod("a", "rs"), pod("b", "rs")], namespace)
    proc = start(
        cluster,
        namespace,
        "-l",
        "app=rs",
        "--count",
        "3",
        "--no-dns",
        "--timeout",
        "150s",
        "--progress-interval",
        "1s",
    )
    wait_for(
        lambda: len(ready_condition_times(cluster, namespace, "app=rs")) == 2,
        timeout=60,
        what="2 pods Ready",
    )
    time.sleep(1)
    assert proc.poll() is None
    restart = devcluster("restart", "kube-apiserver", capture=True, timeout=180)
    assert restart.returncode == 0, restart.stderr
    assert proc.poll() is None, "k8s-waitfor ended during the restart"
    # The third pod appears only after the restart: the resumed (or re-listed) watch sees it.
    cluster.apply([pod("c", "rs")], namespace)
    code, _, err = finish(proc, timeout=120)
    assert code == 0, err
    assert "[API: " in err  # the outage showed in the progress lines
    assert err.strip().splitlines()[-1].startswith("k8s-waitfor: 3/3 pods Ready after ")
    verbs = pod_requests(cluster, namespace)
    assert verbs.count("list") <= 2 and 2 <= verbs.count("watch") <= 6, verbs
