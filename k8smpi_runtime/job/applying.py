"""A job's objects on the API server: create all or nothing, own, find, delete.

- :func:`create_all` creates the rendered objects in order; when one is refused it deletes the
  ones it created before raising, so a failed submit leaves nothing behind. A name already
  taken is :class:`~k8smpi_runtime.job.cli.JobExists`-worthy (:class:`Taken`).
- :func:`own` gives every other object an ownerReference to the launcher Job (or the JobSet),
  so the garbage collector removes them with it even if nobody runs ``delete``.
- :func:`delete_job` deletes everything labelled with the job's name, the pods' owners first,
  and (optionally) waits until no pod of it is left.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from k8smpi_runtime.errors import ApiError, ConflictError, K8smpiError, NotFoundError
from k8smpi_runtime.job import shared

if TYPE_CHECKING:
    from collections.abc import Callable

    from k8smpi_runtime.kube.rest import Api

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

#: kind -> (API prefix, resource): everything k8smpi-job renders, and the pods.
KINDS: dict[str, tuple[str, str]] = {
    "ServiceAccount": ("/api/v1", "serviceaccounts"),
    "Role": ("/apis/rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("/apis/rbac.authorization.k8s.io/v1", "rolebindings"),
    "ConfigMap": ("/api/v1", "configmaps"),
    "Service": ("/api/v1", "services"),
    "StatefulSet": ("/apis/apps/v1", "statefulsets"),
    "Job": ("/apis/batch/v1", "jobs"),
    "JobSet": ("/apis/jobset.x-k8s.io/v1alpha2", "jobsets"),
    "Pod": ("/api/v1", "pods"),
}
#: Deletion order: what owns pods first (mpirun stops), then the workers, then the rest.
DELETE_ORDER = (
    "JobSet",
    "Job",
    "StatefulSet",
    "Service",
    "ConfigMap",
    "RoleBinding",
    "Role",
    "ServiceAccount",
)
FIELD_MANAGER = "k8smpi-job"


class Taken(K8smpiError):
    """An object of the job already exists (the job name is taken)."""


class JobExists(K8smpiError):
    """submit: the job's name is taken in the namespace."""


class NoSuchJob(K8smpiError):
    """status/logs/delete: nothing of that name in the namespace."""


def collection(kind: str, namespace: str) -> str:
    prefix, resource = KINDS[kind]
    return f"{prefix}/namespaces/{namespace}/{resource}"


def path_of(obj: JSON) -> str:
    meta = obj["metadata"]
    return f"{collection(obj['kind'], meta['namespace'])}/{meta['name']}"


def selector(job: str) -> str:
    return f"{shared.JOB_LABEL}={job}"


def create_all(api: Api, objects: list[JSON]) -> list[JSON]:
    """Create ``objects`` in order; the server's answers. All or nothing."""
    created: list[JSON] = []
    try:
        for obj in objects:
            meta = obj["metadata"]
            try:
                answer = api.request(
                    "POST",
                    collection(obj["kind"], meta["namespace"]),
                    params={"fieldManager": FIELD_MANAGER},
                    body=obj,
                )
            except ConflictError as e:
                raise Taken(
                    f"{obj['kind']} {meta['name']} already exists in namespace {meta['namespace']}"
                ) from e
            logger.debug("created %s %s", obj["kind"], meta["name"])
            created.append(answer)
    except BaseException:
        _undo(api, created)
        raise
    return created


def _undo(api: Api, created: list[JSON]) -> None:
    for obj in reversed(created):
        try:
            api.request("DELETE", path_of(obj), body={"propagationPolicy": "Background"})
        except K8smpiError:
            logger.debug("undo: could not delete %s", path_of(obj), exc_info=True)


def owner_reference(owner: JSON) -> JSON:
    """A plain (non-controller) ownerReference: the garbage collector needs no more."""
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
    }


def own(api: Api, objects: list[JSON], owner: JSON) -> None:
    """Give each of ``objects`` (but the owner) an ownerReference to ``owner``; best effort."""
    ref = owner_reference(owner)
    for obj in objects:
        if obj["metadata"].get("uid") == owner["metadata"]["uid"]:
            continue
        refs = [r for r in obj["metadata"].get("ownerReferences") or [] if r["uid"] != ref["uid"]]
        try:
            api.request(
                "PATCH",
                path_of(obj),
                body={"metadata": {"ownerReferences": [*refs, ref]}},
                content_type="application/merge-patch+json",
            )
        except K8smpiError as e:
            # The launcher's sidecar adopts the workers anyway; the rest holds no resources.
            logger.debug("could not own %s: %s", path_of(obj), e)


def find(api: Api, namespace: str, job: str) -> dict[str, list[JSON]]:
    """The job's objects by kind (kinds the cluster does not serve are left out)."""
    found: dict[str, list[JSON]] = {}
    for kind in (*DELETE_ORDER, "Pod"):
        try:
            items, _ = api.list(collection(kind, namespace), {"labelSelector": selector(job)})
        except NotFoundError:
            continue  # JobSet not installed (or no such namespace)
        if items:
            found[kind] = items
    return found


def delete_job(
    api: Api,
    namespace: str,
    job: str,
    *,
    wait: bool = True,
    timeout: float = 120.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Delete every object of ``job``; ``kind/name`` of each one deleted.

    With ``wait``, returns only when no pod and no object of the job is left (or raises after
    ``timeout``): nothing of it runs any more.
    """
    deleted: list[str] = []
    found = find(api, namespace, job)
    for kind in DELETE_ORDER:
        for obj in found.get(kind, []):
            name = obj["metadata"]["name"]
            try:
                api.request(
                    "DELETE",
                    f"{collection(kind, namespace)}/{name}",
                    body={"propagationPolicy": "Background"},
                )
                deleted.append(f"{kind.lower()}/{name}")
            except NotFoundError:
                continue
    if not wait:
        return deleted
    deadline = clock() + timeout
    while True:
        left = find(api, namespace, job)
        if not left:
            return deleted
        # Pods of a deleted owner may linger without their own delete (the garbage collector
        # is asynchronous): delete those too, so nothing keeps running.
        for pod in left.get("Pod", []):
            if not pod["metadata"].get("deletionTimestamp"):
                _delete_quietly(api, f"{collection('Pod', namespace)}/{pod['metadata']['name']}")
        if clock() > deadline:
            what = ", ".join(f"{len(v)} {k}" for k, v in sorted(left.items()))
            raise K8smpiError(f"job {job}: still not gone after {timeout:.0f}s ({what} left)")
        sleep(0.5)


def _delete_quietly(api: Api, path: str) -> None:
    try:
        api.request("DELETE", path)
    except (NotFoundError, ConflictError):
        pass
    except ApiError as e:
        logger.debug("delete %s: %s", path, e)
