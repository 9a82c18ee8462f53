"""JobSet and Kueue beside the devcluster: what devcluster/addons.py makes, without a cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from devcluster import addons, jobset, kueue
from devcluster.layout import Layout


def hook(name: str, path: str, resources: list[str], groups: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "clientConfig": {
            "service": {"name": "webhook-service", "namespace": "system", "path": path}
        },
        "rules": [{"apiGroups": groups, "resources": resources}],
        "failurePolicy": "Fail",
    }


def test_kueue_webhooks_on_loopback_and_opt_in() -> None:
    upstream = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": "mutating-webhook-configuration"},
            "webhooks": [
                hook("mjob.kb.io", "/mutate-batch-v1-job", ["jobs"], ["batch"]),
                hook("mdeployment.kb.io", "/mutate-apps-v1-deployment", ["deployments"], ["apps"]),
                hook("mcq.kb.io", "/mutate-cq", ["clusterqueues"], ["kueue.x-k8s.io"]),
                hook("mwl.kb.io", "/mutate-wl", ["workloads"], ["kueue.x-k8s.io"]),
                hook("mray.kb.io", "/mutate-ray", ["rayjobs"], ["ray.io"]),
            ],
        }
    ]
    out = addons.webhooks(
        upstream, name="kueue", port=20750, ca_bundle="Q0E=", keep=kueue.WEBHOOK_RESOURCES
    )
    (config,) = out
    assert config["metadata"]["name"] == "k8smpi-dev-kueue-mutating"
    hooks = {h["name"]: h for h in config["webhooks"]}
    # Only the integrations enabled here and Kueue's own types: no create waits on a path
    # Kueue does not serve (a Deployment would otherwise be refused).
    assert set(hooks) == {"mjob.kb.io", "mcq.kb.io", "mwl.kb.io"}
    assert hooks["mjob.kb.io"]["clientConfig"] == {
        "url": "https://127.0.0.1:20750/mutate-batch-v1-job",
        "caBundle": "Q0E=",
    }
    opt_in = {"matchLabels": {"k8smpi.dev/kueue": "enabled"}}
    assert hooks["mjob.kb.io"]["namespaceSelector"] == opt_in
    assert hooks["mwl.kb.io"]["namespaceSelector"] == opt_in
    assert "namespaceSelector" not in hooks["mcq.kb.io"]  # cluster-scoped


def test_jobset_webhooks_keep_all() -> None:
    upstream = [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "validating-webhook-configuration"},
            "webhooks": [hook("vjobset.kb.io", "/validate-js", ["jobsets"], ["jobset.x-k8s.io"])],
        }
    ]
    (config,) = addons.webhooks(upstream, name="jobset", port=20000, ca_bundle="x", keep=None)
    assert config["metadata"]["name"] == "k8smpi-dev-jobset-validating"
    (h,) = config["webhooks"]
    assert h["clientConfig"]["url"] == "https://127.0.0.1:20000/validate-js"
    assert "namespaceSelector" not in h


def test_configs(tmp_path: Path) -> None:
    ports = addons.AddonPorts(3)
    cfg = json.loads(kueue.config(ports, tmp_path))
    assert cfg["webhook"] == {"port": 20753, "host": "127.0.0.1", "certDir": str(tmp_path)}
    assert cfg["leaderElection"] == {"leaderElect": False}
    assert cfg["internalCertManagement"] == {"enable": False}
    assert cfg["manageJobsWithoutQueueName"] is False
    assert cfg["managedJobsNamespaceSelector"] == {"matchLabels": {"k8smpi.dev/kueue": "enabled"}}
    assert cfg["integrations"]["frameworks"] == [
        "batch/job",
        "jobset.x-k8s.io/jobset",
        "statefulset",
        "pod",
    ]
    assert cfg["featureGates"] == {"VisibilityOnDemand": False}
    js = json.loads(jobset.config(ports, tmp_path))
    assert js["webhook"]["port"] == 20003
    assert js["health"]["healthProbeBindAddress"] == "127.0.0.1:20253"
    # Every port is distinct for every offset.
    every = [addons.AddonPorts(o).of(*k) for o in range(250) for k in addons.PORT_BASES]
    assert len(every) == len(set(every))


def test_cluster_queue_holds_the_nodes() -> None:
    flavor, cq = kueue.cluster_queue(
        4, {"cpu": "160", "memory": "598005824Ki", "nvidia.com/gpu": "4", "rdma/hca": "1k"}
    )
    assert flavor["kind"] == "ResourceFlavor"
    quotas = {
        r["name"]: r["nominalQuota"]
        for r in cq["spec"]["resourceGroups"][0]["flavors"][0]["resources"]
    }
    assert quotas == {
        "cpu": "640",
        "memory": "2392023296Ki",
        "nvidia.com/gpu": "16",
        "rdma/hca": "4000",
    }


def test_kueue_runs_with_a_private_etc(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    argv = addons.command_line("kueue", lay, Path("/built"))
    assert argv[:4] == ["unshare", "-m", "--propagation", "private"]
    assert "lowerdir=/etc" in argv[6]
    assert argv[7] == str(tmp_path / "addons" / "kueue-etc")
    assert argv[8:] == [
        "/built/bin/kueue",
        f"--kubeconfig={tmp_path / 'kubeconfig-kueue'}",
        f"--config={tmp_path / 'addons' / 'kueue-config.yaml'}",
    ]
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "tls.crt").write_text("crt")
    (certs / "tls.key").write_text("key")
    etc = kueue.private_etc(tmp_path, certs)
    assert (etc / "upper/kueue/metrics/certs/tls.key").read_text() == "key"


def test_namespace_objects() -> None:
    ns, lq = kueue.namespace_objects("t1")
    assert ns["metadata"]["labels"] == {"k8smpi.dev/kueue": "enabled"}
    assert lq["spec"] == {"clusterQueue": "devcluster"}


def test_json_objects() -> None:
    text = '{"kind": "A"}\n{"kind": "List", "items": [{"kind": "B"}, {"kind": "C"}]}\n'
    assert [o["kind"] for o in addons.json_objects(text)] == ["A", "B", "C"]
    assert addons.json_objects("  ") == []
