"""pods/exec on the devcluster behaves as on a real node (podexec): what the e2e tier relies on."""

from __future__ import annotations

from devcluster.client import JSON, Cluster, wait_for


def pod(name: str, *, subdomain: str = "", run_as: int | None = None) -> JSON:
    spec: JSON = {
        "containers": [
            {
                "name": "main",
                "image": "k8smpi/cpu:dev",
                "env": [
                    {"name": "JOB_SETTING", "value": "from-the-pod-spec"},
                    # The downward API and $(VAR) expansion, as the kubelet has them (deploy/
                    # sets KUBEXEC_SELECTOR this way).
                    {
                        "name": "GROUP",
                        "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['grp']"}},
                    },
                    {"name": "SELECTOR", "value": "grp=$(GROUP),$(UNKNOWN),$$(GROUP)"},
                ],
            }
        ]
    }
    if subdomain:
        spec |= {"hostname": f"{name}-host", "subdomain": subdomain}
    if run_as is not None:
        spec["securityContext"] = {
            "runAsUser": run_as,
            "runAsGroup": run_as + 1,
            "supplementalGroups": [4242],
        }
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def running(cluster: Cluster, namespace: str, names: list[str]) -> bool:
    pods = cluster.get("pods", "-n", namespace)["items"]
    phases = {p["metadata"]["name"]: p["status"].get("phase") for p in pods}
    return all(phases.get(n) == "Running" for n in names)


def sh(
    cluster: Cluster, namespace: str, pod_name: str, script: str, stdin: bytes | None = None
) -> tuple[int, bytes, bytes]:
    args = ["exec", "-n", namespace, pod_name]
    if stdin is not None:
        args.append("-i")
    proc = cluster.kubectl(*args, "--", "sh", "-c", script, input=stdin, check=False)
    return proc.returncode, proc.stdout, proc.stderr


def test_exec_looks_like_the_pod_from_inside(cluster: Cluster, namespace: str) -> None:
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "grp"},
        "spec": {"clusterIP": "None", "selector": {"grp": "yes"}},
    }
    a = pod("a", subdomain="grp")
    a["metadata"]["labels"] = {"grp": "yes"}
    cluster.apply([service, a, pod("b", run_as=1234)], namespace)
    wait_for(lambda: running(cluster, namespace, ["a", "b"]), timeout=60, what="pods running")

    # Exit code and both streams, apart.
    rc, out, err = sh(cluster, namespace, "a", "echo out; echo err >&2; exit 42")
    assert (rc, out) == (42, b"out\n")
    assert err.startswith(b"err\n")  # kubectl appends "command terminated with exit code 42"

    # The pod's hostname (spec.hostname wins over the pod name), its env and service account.
    rc, out, _ = sh(
        cluster,
        namespace,
        "a",
        "hostname; echo $JOB_SETTING; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace;"
        ' echo; echo $KUBERNETES_SERVICE_HOST; echo "$SELECTOR"',
    )
    assert rc == 0
    assert out.decode().split() == [
        "a-host", "from-the-pod-spec", namespace, "127.0.0.1", "grp=yes,$(UNKNOWN),$(GROUP)"
    ]  # fmt: skip

    # The pod's DNS: its own FQDN through CoreDNS and the namespace's search domains.
    ip = cluster.get("pod", "a", "-n", namespace)["status"]["podIP"]
    rc, out, _ = sh(cluster, namespace, "b", "getent ahostsv4 a-host.grp | head -n1")
    assert rc == 0
    assert out.split()[0].decode() == ip

    # securityContext: the command runs as runAsUser/runAsGroup with the supplemental groups.
    rc, out, _ = sh(cluster, namespace, "b", "id -u; id -g; id -G")
    assert out.decode().split() == ["1234", "1235", "1235", "4242"]

    # The client's stdin EOF reaches the command (containerd semantics), binary intact.
    data = bytes(range(256)) * 4096
    rc, out, _ = sh(cluster, namespace, "a", "cat", stdin=data)
    assert rc == 0
    assert out == data

    # A command that cannot start: no exit code in the status, kubectl says why.
    proc = cluster.kubectl("exec", "-n", namespace, "a", "--", "no-such-command", check=False)
    assert proc.returncode != 0
    assert b"executable file not found" in proc.stderr
