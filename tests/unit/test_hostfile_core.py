"""From selected pods to hosts: names, launcher placement, skipped pods and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from k8smpi_runtime.hostfile.core import (
    Options,
    Refused,
    build,
    cluster_domain_from_resolv,
    detect_launcher,
    host_name,
)
from k8smpi_runtime.hostfile.slots import SlotRule
from k8smpi_runtime.selection import Selected, Target
from tests.unit.podfactory import Pod, make_pod, sts_pod

STS = Target(namespace="ns1", description="statefulset cnode", expected=4)


def selected(pods: list[Pod], target: Target = STS, **kw: object) -> Selected:
    expected = kw.pop("expected", target.expected)
    return Selected(target, pods, expected, **kw)  # type: ignore[arg-type]


def four() -> list[Pod]:
    return [sts_pod("cnode", i) for i in range(4)]


def names(pods: list[Pod], **options: object) -> list[str]:
    hf = build(selected(pods), Options(**options))  # type: ignore[arg-type]
    return [h.name for h in hf.hosts]


# -- names -------------------------------------------------------------------------------------


def test_names_pod_fqdn_ip() -> None:
    pod = sts_pod("cnode", 3)
    assert host_name(pod, "pod", namespace="ns1", domain=None) == "cnode-3"
    assert host_name(pod, "ip", namespace="ns1", domain=None) == "10.0.1.4"
    assert (
        host_name(pod, "fqdn", namespace="ns1", domain="hpc.example")
        == "cnode-3.cnode-svc.ns1.svc.hpc.example"
    )
    # An Indexed Job pod: its DNS name is built from spec.hostname, not the pod name.
    job = make_pod("w-2-abcde", hostname="w-2", subdomain="w")
    assert host_name(job, "fqdn", namespace="ns1", domain="cluster.local") == (
        "w-2.w.ns1.svc.cluster.local"
    )
    assert host_name(make_pod("p"), "fqdn", namespace="ns1", domain="d") is None


@pytest.mark.parametrize(
    ("text", "namespace", "domain"),
    [
        ("search ns1.svc.cluster.local svc.cluster.local cluster.local\n", "ns1", "cluster.local"),
        ("search other.svc.hpc.example svc.hpc.example hpc.example\n", "ns1", "hpc.example"),
        ("search ns1.svc.a.b. svc.a.b a.b corp.example\noptions ndots:5\n", "ns1", "a.b"),
        ("nameserver 1.1.1.1\nsearch old.svc.x\nsearch corp.example\n", "ns1", None),
        ("nameserver 1.1.1.1\n", "ns1", None),
        ("search svc.example.com\n", "ns1", None),  # "svc" as the last-but-one label only
    ],
)
def test_cluster_domain_from_resolv(text: str, namespace: str, domain: str | None) -> None:
    assert cluster_domain_from_resolv(text, namespace) == domain


def test_fqdn_domain_from_resolv_conf_never_assumed(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("search ns1.svc.hpc.example svc.hpc.example hpc.example\n")
    hf = build(selected(four()), Options(names="fqdn"), resolv_conf=str(conf))
    assert hf.hosts[0].name == "cnode-0.cnode-svc.ns1.svc.hpc.example"
    assert hf.names == "fqdn (domain hpc.example)"
    conf.write_text("search corp.example\n")
    with pytest.raises(Refused, match="pass --cluster-domain"):
        build(selected(four()), Options(names="fqdn"), resolv_conf=str(conf))
    with pytest.raises(Refused, match="cannot read"):
        build(selected(four()), Options(names="fqdn"), resolv_conf=str(tmp_path / "none"))
    hf = build(
        selected(four()), Options(names="fqdn", cluster_domain="x.y"), resolv_conf="/nonexistent"
    )
    assert hf.hosts[3].name == "cnode-3.cnode-svc.ns1.svc.x.y"


def test_fqdn_needs_a_subdomain() -> None:
    pods = [*four()[:3], make_pod("cnode-3", gpus=4)]
    with pytest.raises(Refused, match=r"--names fqdn: cnode-3: no spec.subdomain"):
        build(selected(pods), Options(names="fqdn", cluster_domain="cluster.local"))


def test_ip_names() -> None:
    assert names(four(), names="ip") == ["10.0.1.1", "10.0.1.2", "10.0.1.3", "10.0.1.4"]
    pods = four()
    del pods[2]["status"]["podIP"]
    with pytest.raises(Refused, match="cnode-2: no pod IP yet"):
        build(selected(pods), Options(names="ip"))


# -- launcher ----------------------------------------------------------------------------------


def test_launcher_first_exclude_as_is() -> None:
    assert names(four(), launcher_pod="cnode-2") == ["cnode-2", "cnode-0", "cnode-1", "cnode-3"]
    assert names(four(), launcher_pod="cnode-2", launcher="exclude") == [
        "cnode-0",
        "cnode-1",
        "cnode-3",
    ]
    assert names(four(), launcher_pod="cnode-2", launcher="as-is") == [
        "cnode-0",
        "cnode-1",
        "cnode-2",
        "cnode-3",
    ]
    assert names(four(), launcher_pod="elsewhere") == ["cnode-0", "cnode-1", "cnode-2", "cnode-3"]
    hf = build(selected(four()), Options(launcher_pod="cnode-3"))
    assert hf.launcher == "cnode-3 (first)"


def test_launcher_found_by_hostname() -> None:
    """An Indexed Job launcher's HOSTNAME is its spec.hostname, not its pod name."""
    pods = [
        make_pod("w-0-abcde", hostname="w-0", gpus=1),
        make_pod("w-1-fghij", hostname="w-1", gpus=1),
    ]
    target = Target(namespace="ns1", description="job w", expected=2)
    hf = build(Selected(target, pods, 2), Options(launcher_pod="w-1"))
    assert [h.pod for h in hf.hosts] == ["w-1-fghij", "w-0-abcde"]


def test_launcher_exclude_of_the_only_host() -> None:
    pods = [sts_pod("cnode", 0)]
    with pytest.raises(Refused, match="launcher pod was the only host"):
        build(selected(pods, expected=1), Options(launcher_pod="cnode-0", launcher="exclude"))


def test_detect_launcher() -> None:
    assert detect_launcher({}) is None
    assert detect_launcher({"HOSTNAME": "laptop"}) is None  # not in a pod
    in_pod = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "HOSTNAME": "cnode-0"}
    assert detect_launcher(in_pod) == "cnode-0"
    assert detect_launcher({**in_pod, "POD_NAME": "launcher-x"}) == "launcher-x"
    assert detect_launcher({**in_pod, "K8SMPI_POD_NAME": "a", "POD_NAME": "b"}) == "a"


# -- slots in the hostfile ---------------------------------------------------------------------


def test_heterogeneous_and_zero_slot_pods() -> None:
    pods = [*four()[:3], sts_pod("cnode", 3, gpus=2)]
    launcher = make_pod("launcher", gpus=None)
    target = Target(namespace="ns1", description="pods matching app=x")
    hf = build(Selected(target, [launcher, *pods], None), Options())
    assert [(h.name, h.slots) for h in hf.hosts] == [
        ("cnode-0", 4),
        ("cnode-1", 4),
        ("cnode-2", 4),
        ("cnode-3", 2),
    ]
    assert hf.skipped == ("launcher",)
    assert hf.total_slots == 14
    hf = build(Selected(target, [launcher, *pods], None), Options(slots=SlotRule(min_slots=1)))
    assert [h.slots for h in hf.hosts] == [1, 4, 4, 4, 2]
    assert hf.skipped == ()


# -- refusals ----------------------------------------------------------------------------------


def test_refuses_no_pods() -> None:
    with pytest.raises(Refused, match=r"no pods match statefulset cnode in namespace ns1$"):
        build(selected([]), Options())
    with pytest.raises(Refused, match=r"only ended or deleted pods: cnode-0"):
        build(selected([], ended=("cnode-0",)), Options())


def test_refuses_missing_hosts() -> None:
    target = Target(namespace="ns1", description="pods a,b")
    with pytest.raises(Refused, match=r"no pod in namespace ns1 for host\(s\) ghost"):
        build(Selected(target, four()[:1], 2, missing=("ghost",)), Options())


def test_refuses_partial_statefulset_naming_the_missing_ordinals() -> None:
    pods = [p for p in four() if p["metadata"]["name"] != "cnode-2"]
    with pytest.raises(
        Refused, match=r"statefulset cnode expects 4 pods, only 3 exist; missing: cnode-2: refusing"
    ):
        build(selected(pods), Options())
    with pytest.raises(Refused, match="expects 4 pods but 5 match"):
        build(selected([*four(), sts_pod("cnode", 4)]), Options())


def test_refuses_unscheduled_with_the_schedulers_reason() -> None:
    pods = four()
    pods[3] = sts_pod("cnode", 3, node=None)
    with pytest.raises(Refused) as info:
        build(selected(pods), Options())
    assert str(info.value) == (
        "1 selected pod(s) not scheduled yet: cnode-3 (cnode-3: Unschedulable: "
        "0/4 nodes are available: 4 Insufficient nvidia.com/gpu.)"
    )


def test_require_ready() -> None:
    pods = four()
    pods[1] = sts_pod("cnode", 1, ready=False)
    assert len(build(selected(pods), Options()).hosts) == 4
    with pytest.raises(Refused, match=r"--require-ready: 1 selected pod.s. not Ready: cnode-1"):
        build(selected(pods), Options(require_ready=True))


def test_refuses_zero_slots_in_total() -> None:
    pods = [sts_pod("cnode", i, gpus=None) for i in range(4)]
    with pytest.raises(Refused, match=r"have 0 slots in total \(nvidia\.com/gpu"):
        build(selected(pods), Options())


def test_options_reject_unknown_modes() -> None:
    with pytest.raises(ValueError, match="--names"):
        Options(names="dns")
    with pytest.raises(ValueError, match="--launcher"):
        Options(launcher="last")


def test_long_lists_are_cut_short() -> None:
    pods = [sts_pod("cnode", i, node=None) for i in range(40)]
    with pytest.raises(
        Refused,
        match=r"40 selected pod\(s\) not scheduled yet: cnode-0, cnode-1, "
        r"cnode-2, cnode-3, cnode-4 \+35 more",
    ):
        build(selected(pods, expected=40), Options())
