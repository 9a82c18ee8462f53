"""An in-memory stand-in for :class:`k8smpi_runtime.kube.rest.Api` (get, list, request)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from k8smpi_runtime.errors import ConflictError, ForbiddenError, NotFoundError
from k8smpi_runtime.selection import parse_selector

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from k8smpi_runtime.kube.rest import Api

JSON = dict[str, Any]


@dataclass
class FakeConfig:
    namespace: str = "ns1"
    server: str = "https://fake:6443"


@dataclass
class FakeApi:
    """Objects by API path; pods by namespace. Records every call in ``calls``."""

    objects: dict[str, JSON] = field(default_factory=dict)
    pods: list[JSON] = field(default_factory=list)
    config: FakeConfig = field(default_factory=FakeConfig)
    calls: list[tuple[str, str]] = field(default_factory=list)
    #: Called before each write with (method, path); may raise to simulate a failure.
    before_write: Callable[[str, str], None] | None = None
    forbid: set[str] = field(default_factory=set)
    closed: bool = False

    def as_api(self) -> Api:
        return cast("Api", self)

    def get(self, path: str, params: Mapping[str, str | int | bool] | None = None) -> JSON:
        if path.endswith("/pods"):  # a collection: one page holding everything
            query = {k: v for k, v in (params or {}).items() if k == "labelSelector"}
            items, version = self.list(path, query)
            return {"kind": "PodList", "metadata": {"resourceVersion": version}, "items": items}
        self.calls.append(("GET", path))
        if path in self.forbid:
            raise ForbiddenError("forbidden", status=403)
        if path not in self.objects:
            raise NotFoundError(f"{path} not found", status=404)
        return copy.deepcopy(self.objects[path])

    def list(
        self, path: str, params: Mapping[str, str | int | bool] | None = None, *, limit: int = 500
    ) -> tuple[list[JSON], str]:
        self.calls.append(("LIST", path + (f"?{params['labelSelector']}" if params else "")))
        if path in self.forbid:
            raise ForbiddenError("pods is forbidden", status=403)
        namespace = path.split("/")[4]
        reqs = parse_selector(str(params["labelSelector"])) if params else ()
        items = [
            copy.deepcopy(p)
            for p in self.pods
            if p["metadata"].get("namespace") == namespace
            and all(r.matches(p["metadata"].get("labels") or {}) for r in reqs)
        ]
        return items, "42"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str | int | bool] | None = None,
        body: JSON | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        self.calls.append((method, path))
        if self.before_write is not None:
            self.before_write(method, path)
        assert body is not None
        if method == "POST":
            full = f"{path}/{body['metadata']['name']}"
            if full in self.objects:
                raise ConflictError("already exists", status=409, reason="AlreadyExists")
            stored = copy.deepcopy(body)
            stored["metadata"]["resourceVersion"] = "1"
            self.objects[full] = stored
            return copy.deepcopy(stored)
        if method == "PUT":
            if path not in self.objects:
                raise NotFoundError("gone", status=404)
            current = self.objects[path]
            if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                raise ConflictError("modified", status=409, reason="Conflict")
            stored = copy.deepcopy(body)
            stored["metadata"]["resourceVersion"] = str(
                int(current["metadata"]["resourceVersion"]) + 1
            )
            self.objects[path] = stored
            return copy.deepcopy(stored)
        raise AssertionError(f"unexpected {method} {path}")

    def close(self) -> None:
        self.closed = True
