"""k8smpi-job against an in-memory API: create all or nothing, ownership, delete, the sidecar.

The e2e tier proves the same on the devcluster; these cover what a real server cannot be made to
do on demand (a refusal half-way through a create).
"""

from __future__ import annotations

import copy
import io
import threading
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from k8smpi_runtime.errors import ConflictError, ForbiddenError, K8smpiError, NotFoundError
from k8smpi_runtime.job import applying, control, owning, render, spec
from k8smpi_runtime.kube.rest import Api

JSON = dict[str, Any]


@dataclass
class Fake:
    objects: dict[str, JSON] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)
    uid: int = 0

    def api(self) -> Api:
        return cast("Api", self)

    def get(self, path: str, params: Any = None) -> JSON:
        self.calls.append(("GET", path))
        if path not in self.objects:
            raise NotFoundError("not found", status=404)
        return copy.deepcopy(self.objects[path])

    def list(self, path: str, params: Any = None, *, limit: int = 500) -> tuple[list[JSON], str]:
        self.calls.append(("LIST", path))
        if "jobsets" in path and "jobsets" in self.refuse:
            raise NotFoundError("the server could not find the requested resource", status=404)
        selector = (params or {}).get("labelSelector", "")
        key, _, value = selector.partition("=")
        items = [
            copy.deepcopy(o)
            for p, o in self.objects.items()
            if p.rsplit("/", 1)[0] == path
            and key in (o["metadata"].get("labels") or {})
            and (not value or o["metadata"]["labels"][key] == value)
        ]
        return items, "1"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        body: Any = None,
        content_type: str = "",
    ) -> JSON:
        self.calls.append((method, path))
        if method == "POST":
            name = body["metadata"]["name"]
            if body["kind"] in self.refuse:
                raise ForbiddenError(f"{body['kind']} is forbidden", status=403)
            full = f"{path}/{name}"
            if full in self.objects:
                raise ConflictError("already exists", status=409)
            self.uid += 1
            obj = copy.deepcopy(body)
            obj["metadata"]["uid"] = f"uid-{self.uid}"
            obj["metadata"]["resourceVersion"] = "1"
            self.objects[full] = obj
            return copy.deepcopy(obj)
        if path not in self.objects:
            raise NotFoundError("not found", status=404)
        if method == "DELETE":
            return self.objects.pop(path)
        if method == "PATCH":
            self.objects[path]["metadata"].update(copy.deepcopy(body["metadata"]))
            self.objects[path]["metadata"].pop("resourceVersion", None)
            return copy.deepcopy(self.objects[path])
        raise AssertionError(method)


def job_spec(tmp_path: Any, **extra: Any) -> spec.JobSpec:
    script = tmp_path / "run.sh"
    script.write_text("mpirun app\n")
    inputs = {
        "script": str(script),
        "name": "j",
        "image": "i",
        "workers": 2,
        "gpus": 1,
        "namespace": "ns",
        "user": "1000",
        **extra,
    }
    return spec.build(inputs)


def test_create_all_or_nothing(tmp_path: Any) -> None:
    fake = Fake(refuse={"StatefulSet"})
    objects = render.manifests(job_spec(tmp_path))
    with pytest.raises(ForbiddenError):
        applying.create_all(fake.api(), objects)
    assert fake.objects == {}  # what was created before the refusal is gone again
    assert [m for m, _ in fake.calls].count("DELETE") == 6


def test_a_taken_name(tmp_path: Any) -> None:
    fake = Fake()
    objects = render.manifests(job_spec(tmp_path))
    applying.create_all(fake.api(), objects)
    before = dict(fake.objects)
    with pytest.raises(applying.Taken, match="ServiceAccount j-launcher already exists"):
        applying.create_all(fake.api(), objects)
    assert fake.objects == before  # the existing job is untouched


def test_own_and_delete(tmp_path: Any) -> None:
    fake = Fake(refuse={"jobsets"})
    created = applying.create_all(fake.api(), render.manifests(job_spec(tmp_path)))
    owner = created[-1]
    assert owner["kind"] == "Job"
    applying.own(fake.api(), created, owner)
    for obj in created[:-1]:
        refs = fake.objects[applying.path_of(obj)]["metadata"]["ownerReferences"]
        assert refs == [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": "j-launcher",
                "uid": owner["metadata"]["uid"],
            }
        ]
    deleted = applying.delete_job(fake.api(), "ns", "j", sleep=lambda _s: None)
    assert deleted[0] == "job/j-launcher"  # what runs the script goes first
    assert deleted[1] == "statefulset/j-cnode"
    assert fake.objects == {}


def test_delete_waits_for_the_pods(tmp_path: Any) -> None:
    fake = Fake(refuse={"jobsets"})
    pod = {"kind": "Pod", "metadata": {"name": "j-cnode-0", "labels": {"k8smpi.dev/job": "j"}}}
    fake.objects["/api/v1/namespaces/ns/pods/j-cnode-0"] = pod
    with pytest.raises(K8smpiError, match="still not gone after 0s"):
        # A pod that stays (a finalizer): the deletion says so instead of hanging.
        fake.objects["/api/v1/namespaces/ns/pods/j-cnode-0"]["metadata"]["deletionTimestamp"] = "x"
        applying.delete_job(fake.api(), "ns", "j", timeout=0, sleep=lambda _s: None)


def test_status_and_delete_of_a_missing_job() -> None:
    fake = Fake(refuse={"jobsets"})
    with pytest.raises(applying.NoSuchJob, match="no job nope in namespace ns"):
        control.status(fake.api(), "ns", "nope", io.StringIO())
    with pytest.raises(applying.NoSuchJob):
        control.delete(fake.api(), "ns", "nope")
    out = io.StringIO()
    assert control.status(fake.api(), "ns", None, out) == 0
    assert out.getvalue() == "no jobs in namespace ns\n"


def test_status_lists_jobs(tmp_path: Any) -> None:
    fake = Fake(refuse={"jobsets"})
    applying.create_all(fake.api(), render.manifests(job_spec(tmp_path)))
    out = io.StringIO()
    control.status(fake.api(), "ns", None, out)
    lines = out.getvalue().splitlines()
    assert lines[0].split() == ["JOB", "SHAPE", "STATE", "WORKERS", "AGE", "DETAIL"]
    assert lines[1].split()[:4] == ["j", "statefulset", "Placing", "0/2"]


# -- the sidecar ------------------------------------------------------------------------------


def sidecar_world(disrupted: bool = False) -> Fake:
    fake = Fake()
    conditions = [{"type": "DisruptionTarget", "status": "True"}] if disrupted else []
    fake.objects["/api/v1/namespaces/ns/pods/j-launcher-x"] = {
        "metadata": {
            "name": "j-launcher-x",
            "ownerReferences": [
                {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "name": "j-launcher",
                    "uid": "u1",
                    "controller": True,
                }
            ],
        },
        "status": {"conditions": conditions},
    }
    fake.objects["/apis/apps/v1/namespaces/ns/statefulsets/j-cnode"] = {
        "metadata": {"name": "j-cnode", "resourceVersion": "7"}
    }
    return fake


def run_sidecar(fake: Fake) -> int:
    stop = threading.Event()
    stop.set()  # SIGTERM at once
    return owning.main(fake.api(), "ns", "j-cnode", pod="j-launcher-x", stop=stop)


def test_sidecar_owns_then_releases_the_workers() -> None:
    fake = sidecar_world()
    seen: list[JSON] = []
    original = fake.request

    def spy(method: str, path: str, **kw: Any) -> JSON:
        if method == "PATCH":
            seen.append(kw["body"])
        return original(method, path, **kw)

    fake.request = spy  # type: ignore[method-assign]
    assert run_sidecar(fake) == 0
    (patch,) = seen
    assert patch["metadata"]["ownerReferences"] == [
        {"apiVersion": "batch/v1", "kind": "Job", "name": "j-launcher", "uid": "u1"}
    ]
    assert patch["metadata"]["resourceVersion"] == "7"
    assert "/apis/apps/v1/namespaces/ns/statefulsets/j-cnode" not in fake.objects


def test_sidecar_keeps_the_workers_when_disrupted() -> None:
    fake = sidecar_world(disrupted=True)
    assert run_sidecar(fake) == 0
    sts = fake.objects["/apis/apps/v1/namespaces/ns/statefulsets/j-cnode"]
    assert sts["metadata"]["ownerReferences"][0]["uid"] == "u1"


def test_sidecar_needs_its_pod_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("K8SMPI_POD_NAME", raising=False)
    with pytest.raises(K8smpiError, match="K8SMPI_POD_NAME"):
        owning.main(Fake().api(), "ns", "j-cnode", stop=threading.Event())


def test_sidecar_outside_a_job() -> None:
    fake = sidecar_world()
    fake.objects["/api/v1/namespaces/ns/pods/j-launcher-x"]["metadata"]["ownerReferences"] = []
    with pytest.raises(K8smpiError, match="is not a Job's pod"):
        run_sidecar(fake)
