"""Pod selection shared by hostfile-gen, k8s-waitfor and kubexec: spec, resolve, pick, order."""

from __future__ import annotations

import argparse
import copy
import random
from collections.abc import Mapping
from pathlib import Path

import pytest

from k8smpi_runtime import selection
from k8smpi_runtime.selection import (
    Requirement,
    SelectionError,
    Spec,
    Target,
    TargetNotFound,
    hostfile_hosts,
    natural_key,
    ordered,
    parse_selector,
    pod_index,
    pod_name,
    selector_from_label_selector,
)
from tests.unit.fakeapi import JSON, FakeApi
from tests.unit.podfactory import job_pod, make_pod, sts_pod

STS_PATH = "/apis/apps/v1/namespaces/ns1/statefulsets/cnode"
JOB_PATH = "/apis/batch/v1/namespaces/ns1/jobs/train"


def sts_object(replicas: int | None = 3) -> dict[str, object]:
    spec: dict[str, object] = {"selector": {"matchLabels": {"app": "cnode"}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"name": "cnode", "uid": "uid-sts-cnode"}, "spec": spec}


def job_object(parallelism: int | None, completions: int | None) -> dict[str, object]:
    spec: dict[str, object] = {
        "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "uid-job-train"}}
    }
    if parallelism is not None:
        spec["parallelism"] = parallelism
    if completions is not None:
        spec["completions"] = completions
    return {"metadata": {"name": "train", "uid": "uid-job-train"}, "spec": spec}


# -- spec and arguments ------------------------------------------------------------------------


def parse(argv: list[str]) -> Spec:
    parser = argparse.ArgumentParser()
    selection.add_arguments(parser)
    return selection.spec_from_args(parser.parse_args(argv))


def test_spec_from_arguments() -> None:
    assert parse(["--statefulset", "cnode"]) == Spec(statefulset="cnode")
    assert parse(["--pods", "a, b,,c"]) == Spec(pods=("a", "b", "c"))
    assert parse(["-l", "app=x", "--count", "4"]) == Spec(selector="app=x", count=4)
    assert parse(["--job", "train"]).describe() == "--job train"


def test_spec_needs_exactly_one_kind() -> None:
    with pytest.raises(SelectionError, match="exactly one"):
        Spec()
    with pytest.raises(SelectionError, match="exactly one"):
        Spec(selector="a=b", job="j")
    with pytest.raises(SystemExit):
        parse(["--statefulset", "a", "--job", "b"])
    with pytest.raises(SelectionError, match="--pods names no host"):
        parse(["--pods", ","])
    with pytest.raises(SelectionError, match="--count"):
        Spec(selector="a=b", count=0)


# -- label selectors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app=x", [Requirement("app", "=", ("x",))]),
        ("app==x", [Requirement("app", "=", ("x",))]),
        ("app!=x", [Requirement("app", "!=", ("x",))]),
        ("tier in (a, b)", [Requirement("tier", "in", ("a", "b"))]),
        ("tier notin (a)", [Requirement("tier", "notin", ("a",))]),
        ("k8smpi.dev/role", [Requirement("k8smpi.dev/role", "exists")]),
        ("!canary", [Requirement("canary", "!exists")]),
        ("gen>3", [Requirement("gen", ">", ("3",))]),
        (
            "app=x,tier in (a,b),!canary",
            [
                Requirement("app", "=", ("x",)),
                Requirement("tier", "in", ("a", "b")),
                Requirement("canary", "!exists"),
            ],
        ),
        ("app=", [Requirement("app", "=", ("",))]),
    ],
)
def test_parse_selector(text: str, expected: list[Requirement]) -> None:
    assert list(parse_selector(text)) == expected


@pytest.mark.parametrize("text", ["", "app=x,", "=x", "app in ()", "a b", "gen>x", "!a=b"])
def test_parse_selector_rejects(text: str) -> None:
    with pytest.raises(SelectionError):
        parse_selector(text)


def test_requirements_match_labels() -> None:
    labels = {"app": "x", "tier": "a", "gen": "5"}

    def ok(text: str) -> bool:
        return all(r.matches(labels) for r in parse_selector(text))

    assert ok("app=x,tier in (a,b),!canary,gen>3,gen<6")
    assert not ok("app=y")
    assert not ok("tier notin (a)")
    assert not ok("canary")
    assert ok("missing!=v")  # != holds for an absent label, as in the apiserver
    assert not ok("app>1")


def test_selector_from_label_selector() -> None:
    sel = {
        "matchLabels": {"b": "2", "a": "1"},
        "matchExpressions": [
            {"key": "t", "operator": "In", "values": ["x", "y"]},
            {"key": "c", "operator": "DoesNotExist"},
        ],
    }
    text = selector_from_label_selector(sel)
    assert text == "a=1,b=2,t in (x,y),!c"
    assert [r.text() for r in parse_selector(text)] == ["a=1", "b=2", "t in (x,y)", "!c"]
    with pytest.raises(SelectionError, match="empty"):
        selector_from_label_selector({})


# -- hostfiles in any dialect ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("# openmpi\nw-0 slots=4 max_slots=4\nw-1 slots=2\n", ["w-0", "w-1"]),
        ("w-0:4\nw-1:2  # hydra\n", ["w-0", "w-1"]),
        ("w-0:4:ib0\n", ["w-0"]),
        ("w-0\nw-0\nw-1\nw-1\n\n", ["w-0", "w-1"]),
        ("alice@w-0.svc-a slots=1\n", ["alice@w-0.svc-a"]),
        ("10.0.0.1 slots=2\nfd00::7 slots=1\n[fd00::8]:2\n", ["10.0.0.1", "fd00::7", "[fd00::8]"]),
        ("w-0 cpu=4\n", ["w-0"]),
        ('{"hosts": [{"name": "w-1", "slots": 2}, {"name": "w-0", "slots": 1}]}', ["w-1", "w-0"]),
        ("# nothing\n\n", []),
    ],
)
def test_hostfile_hosts(text: str, expected: list[str]) -> None:
    assert hostfile_hosts(text) == expected


def test_hostfile_hosts_bad_json() -> None:
    with pytest.raises(SelectionError, match="JSON"):
        hostfile_hosts('{"nodes": []}')


def test_hostfile_target_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("cnode-1 slots=4\ncnode-0.cnode-svc slots=4\n")
    api = FakeApi(pods=[sts_pod("cnode", 0), sts_pod("cnode", 1), sts_pod("cnode", 2)])
    selected = selection.select(api.as_api(), Spec(hostfile=str(path)))
    assert [pod_name(p) for p in selected.pods] == ["cnode-1", "cnode-0"]  # the file's order
    assert selected.expected == 2
    assert selected.complete
    with pytest.raises(SelectionError, match="cannot read hostfile"):
        selection.select(api.as_api(), Spec(hostfile=str(tmp_path / "absent")))
    path.write_text("# empty\n")
    with pytest.raises(SelectionError, match="names no host"):
        selection.select(api.as_api(), Spec(hostfile=str(path)))


# -- resolve, fetch, pick ----------------------------------------------------------------------


def test_statefulset_one_get_one_list_and_owner_filter() -> None:
    stray = make_pod("cnode-launcher", labels={"app": "cnode"}, gpus=0)  # same labels, not owned
    api = FakeApi(
        objects={STS_PATH: sts_object(3)},
        pods=[sts_pod("cnode", i) for i in (2, 0, 1)]
        + [stray, make_pod("other", labels={"app": "x"})],
    )
    selected = selection.select(api.as_api(), Spec(statefulset="cnode"))
    assert [pod_name(p) for p in selected.pods] == ["cnode-0", "cnode-1", "cnode-2"]
    assert selected.expected == 3
    assert selected.complete
    assert api.calls == [("GET", STS_PATH), ("LIST", "/api/v1/namespaces/ns1/pods?app=cnode")]
    assert selected.target.description == "statefulset cnode"
    assert selected.target.list_params() == {"labelSelector": "app=cnode"}


def test_statefulset_defaults_and_not_found() -> None:
    api = FakeApi(objects={STS_PATH: sts_object(None)})
    assert selection.resolve(api.as_api(), Spec(statefulset="cnode")).expected == 1
    assert selection.resolve(api.as_api(), Spec(statefulset="cnode", count=7)).expected == 7
    with pytest.raises(TargetNotFound, match="statefulset nope not found in namespace ns1"):
        selection.resolve(api.as_api(), Spec(statefulset="nope"))


@pytest.mark.parametrize(
    ("parallelism", "completions", "expected"),
    [(4, 4, 4), (2, 8, 2), (None, None, 1), (5, None, 5), (8, 3, 3)],
)
def test_job_expected_count(
    parallelism: int | None, completions: int | None, expected: int
) -> None:
    api = FakeApi(objects={JOB_PATH: job_object(parallelism, completions)})
    target = selection.resolve(api.as_api(), Spec(job="train"))
    assert target.expected == expected
    assert target.label_selector == "batch.kubernetes.io/controller-uid=uid-job-train"


def test_job_pods_by_completion_index_and_ended_pods() -> None:
    pods = [
        job_pod("train", 10, "aaaaa"),
        job_pod("train", 2, "zzzzz"),
        job_pod("train", 0, "mmmmm", phase="Failed"),  # a failed attempt, replaced
        job_pod("train", 0, "bbbbb"),
        job_pod("train", 1, "ccccc", deleting=True),
    ]
    api = FakeApi(objects={JOB_PATH: job_object(4, 4)}, pods=pods)
    selected = selection.select(api.as_api(), Spec(job="train"))
    assert [pod_name(p) for p in selected.pods] == [
        "train-0-bbbbb",
        "train-2-zzzzz",
        "train-10-aaaaa",
    ]
    assert selected.ended == ("train-0-mmmmm", "train-1-ccccc")
    assert not selected.complete


def test_pods_by_host_names_keep_user_order_and_report_missing() -> None:
    pods = [
        sts_pod("cnode", 0),
        sts_pod("cnode", 1),
        job_pod("w", 3, "xyz12"),
        make_pod("elsewhere", namespace="ns2"),
    ]
    api = FakeApi(pods=pods)
    spec = Spec(pods=("w-3.w", "cnode-1", "10.0.1.1", "cnode-1.cnode-svc.ns1.svc", "ghost"))
    selected = selection.select(api.as_api(), spec)
    assert [pod_name(p) for p in selected.pods] == ["w-3-xyz12", "cnode-1", "cnode-0"]
    assert selected.missing == ("ghost",)
    assert selected.expected == 4
    assert not selected.complete
    # One list of the namespace, no label selector, no per-pod request.
    assert api.calls == [("LIST", "/api/v1/namespaces/ns1/pods")]
    with pytest.raises(SelectionError, match="in namespace ns9"):
        selection.select(api.as_api(), Spec(pods=("cnode-0.cnode-svc.ns9",)))
    with pytest.raises(SelectionError, match="malformed"):
        selection.select(api.as_api(), Spec(pods=("a..b",)))
    missing = selection.select(api.as_api(), Spec(pods=("elsewhere",)))
    assert missing.missing == ("elsewhere",)


def test_selector_target_and_namespace_override() -> None:
    pods = [make_pod("b-10", labels={"r": "w"}), make_pod("b-9", labels={"r": "w"})]
    pods += [make_pod("b-1", labels={"r": "w"}, namespace="ns2")]
    api = FakeApi(pods=pods)
    selected = selection.select(api.as_api(), Spec(selector="r=w"))
    assert [pod_name(p) for p in selected.pods] == ["b-9", "b-10"]
    assert selected.expected is None and selected.complete
    other = selection.select(api.as_api(), Spec(selector="r=w", count=2), "ns2")
    assert [pod_name(p) for p in other.pods] == ["b-1"]
    assert other.expected == 2 and not other.complete


def test_pick_is_pure_and_filters_any_superset() -> None:
    """A waiter calls pick() again on pods from its watch cache, labels checked client-side."""
    target = Target(
        namespace="ns1",
        description="statefulset cnode",
        label_selector="app=cnode",
        expected=2,
        owner_uid="uid-sts-cnode",
        requirements=parse_selector("app=cnode"),
    )
    cache = [
        sts_pod("cnode", 1),
        make_pod("x", labels={"app": "other"}),
        sts_pod("cnode", 0, namespace="ns2"),
    ]
    first = target.pick(cache)
    assert [pod_name(p) for p in first.pods] == ["cnode-1"]
    assert not first.complete
    second = target.pick([*cache, sts_pod("cnode", 0)])
    assert [pod_name(p) for p in second.pods] == ["cnode-0", "cnode-1"]
    assert second.complete
    assert [pod_name(p) for p in first.pods] == ["cnode-1"]  # the earlier result is untouched


# -- order -------------------------------------------------------------------------------------


def test_natural_key_orders_numbers_numerically() -> None:
    names = ["cnode-10", "cnode-2", "cnode-1", "a", "cnode-1b", "b2c10", "b2c9", "10", "9"]
    assert sorted(names, key=natural_key) == [
        "9",
        "10",
        "a",
        "b2c9",
        "b2c10",
        "cnode-1",
        "cnode-1b",
        "cnode-2",
        "cnode-10",
    ]


def test_pod_index() -> None:
    assert pod_index(sts_pod("cnode", 7)) == ("cnode", 7)
    legacy = sts_pod("cnode", 12)
    del legacy["metadata"]["labels"]["apps.kubernetes.io/pod-index"]  # before 1.28
    assert pod_index(legacy) == ("cnode", 12)
    assert pod_index(job_pod("train", 3, "abcde")) == ("train", 3)
    assert pod_index(make_pod("plain-3")) is None


def test_order_statefulset_and_job_and_plain_pods() -> None:
    pods = [sts_pod("cnode", i) for i in range(12)]
    pods += [job_pod("train", i, f"s{9 - i}") for i in range(11)]
    pods += [make_pod("small-10"), make_pod("small-2")]
    shuffled = pods[:]
    random.Random(5).shuffle(shuffled)  # noqa: S311 - a fixed test order
    names = [pod_name(p) for p in ordered(shuffled)]
    assert names[:12] == [f"cnode-{i}" for i in range(12)]
    assert names[12:14] == ["small-2", "small-10"]
    assert names[14:] == [f"train-{i}-s{9 - i}" for i in range(11)]


class PagedApi(FakeApi):
    """Serves the pod collection two pods a page, as the apiserver does with limit/continue."""

    def get(self, path: str, params: Mapping[str, str | int | bool] | None = None) -> JSON:
        if not path.endswith("/pods"):
            return super().get(path, params)
        params = dict(params or {})
        self.calls.append(("PAGE", f"limit={params['limit']} continue={params.get('continue')}"))
        start = int(str(params.get("continue") or 0))
        items = self.pods[start : start + int(params["limit"])]
        more = start + len(items) < len(self.pods)
        meta: JSON = {
            "resourceVersion": "77",
            **({"continue": str(start + len(items))} if more else {}),
        }
        return {"metadata": meta, "items": copy.deepcopy(items)}


def test_fetch_pages_and_drops_managed_fields() -> None:
    pods = [sts_pod("cnode", i) for i in range(5)]
    for p in pods:
        p["metadata"]["managedFields"] = [{"manager": "kube-controller-manager"}]
    api = PagedApi(pods=pods)
    target = Target(namespace="ns1", description="statefulset cnode", label_selector="app=cnode")
    got, version = selection.fetch(api.as_api(), target, page_size=2)
    assert [pod_name(p) for p in got] == [f"cnode-{i}" for i in range(5)]
    assert version == "77"
    assert all("managedFields" not in p["metadata"] for p in got)
    assert [c[1] for c in api.calls] == [
        "limit=2 continue=None",
        "limit=2 continue=2",
        "limit=2 continue=4",
    ]
