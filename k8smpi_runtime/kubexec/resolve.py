"""The pod a host word names: :func:`namespace_for`, then :func:`find_pod`.

Namespace, first match wins: the host's FQDN (``w-0.sub.<ns>.svc...``), ``--namespace`` /
``KUBEXEC_NAMESPACE``, the in-cluster service-account namespace, the kubeconfig context's.

Requests, fewest first (see :mod:`k8smpi_runtime.hosts` for the forms):

- a name: one GET of the pod by that name (StatefulSet pods: hostname == pod name). Only when
  there is no such pod, or it is not in the subdomain the host names, one list of the
  namespace's pods, matched by ``spec.hostname`` + ``spec.subdomain`` (Indexed Jobs, JobSets);
- an IP: one list with ``fieldSelector=status.podIP=<ip>``; then, if that finds nothing (an
  IPv6 address written another way, a secondary ``podIPs`` entry), one plain list.

A pod that is not found, or not Running, is a :class:`PodNotFound` / :class:`PodNotRunning`.
"""

from __future__ import annotations

import logging
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from k8smpi_runtime import hosts
from k8smpi_runtime.errors import ApiError, K8smpiError, NotFoundError
from k8smpi_runtime.kubexec import failures

if TYPE_CHECKING:
    from collections.abc import Mapping

logger = logging.getLogger(__name__)

Pod = dict[str, Any]
DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


class PodNotFound(K8smpiError):
    """No pod answers to the host name."""


class PodNotRunning(K8smpiError):
    """The pod exists but is not (yet, or any more) Running."""


class PodApi(Protocol):
    """What resolution needs from :class:`k8smpi_runtime.kube.rest.Api`."""

    def get(self, path: str, params: Mapping[str, str | int | bool] | None = None) -> Pod: ...

    def list(
        self, path: str, params: Mapping[str, str | int | bool] | None = None, *, limit: int = 500
    ) -> tuple[list[Pod], str]: ...


@dataclass(frozen=True)
class Target:
    """A Running pod and the container to exec into."""

    namespace: str
    pod: str
    container: str | None


def namespace_for(
    ref: hosts.HostRef, *, explicit: str | None, in_cluster: str | None, configured: str
) -> str:
    """The namespace by the precedence in this module's docstring."""
    return ref.namespace or explicit or in_cluster or configured


def find_pod(api: PodApi, ref: hosts.HostRef, namespace: str) -> Pod:
    """The pod ``ref`` names in ``namespace``, Running; raises PodNotFound / PodNotRunning."""
    pods_path = f"/api/v1/namespaces/{urllib.parse.quote(namespace)}/pods"
    pod: Pod | None = None
    if ref.ip is None and ref.name is not None:
        pod = _get(api, f"{pods_path}/{urllib.parse.quote(ref.name)}", namespace)
        if pod is not None and not hosts.matches(ref, pod):
            logger.debug("pod %s is not in subdomain %s; listing", ref.name, ref.subdomain)
            pod = None
    if pod is None:
        pod = _search(api, ref, pods_path, namespace)
    if pod is None:
        raise PodNotFound(f"no pod {_described(ref)} in namespace {namespace}")
    phase = (pod.get("status") or {}).get("phase") or "Unknown"
    if phase != "Running":
        raise PodNotRunning(
            f"pod {namespace}/{pod['metadata']['name']} ({ref.text}) is not Running (phase {phase})"
        )
    return pod


def container_of(pod: Pod, explicit: str | None) -> str | None:
    """``--container``, else the pod's default-container annotation, else its first container."""
    if explicit:
        return explicit
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(DEFAULT_CONTAINER_ANNOTATION):
        return str(annotations[DEFAULT_CONTAINER_ANNOTATION])
    containers = (pod.get("spec") or {}).get("containers") or []
    return str(containers[0]["name"]) if containers else None


def _search(api: PodApi, ref: hosts.HostRef, pods_path: str, namespace: str) -> Pod | None:
    if ref.ip is not None:
        items = _list(api, pods_path, namespace, {"fieldSelector": f"status.podIP={ref.ip}"})
        found = hosts.find(ref, items)
        if found is not None:
            return found
    items = _list(api, pods_path, namespace)
    logger.debug("listed %d pods in %s for %s", len(items), namespace, ref.text)
    return hosts.find(ref, items)


def _get(api: PodApi, path: str, namespace: str) -> Pod | None:
    """The pod at ``path``, or None for 404."""
    try:
        return api.get(path)
    except NotFoundError:
        return None
    except ApiError as e:
        _raise_explained(e, "get", namespace)


def _list(
    api: PodApi, path: str, namespace: str, params: Mapping[str, str] | None = None
) -> list[Pod]:
    try:
        items, _ = api.list(path, params)
    except ApiError as e:
        _raise_explained(e, "list", namespace)
    return items


def _raise_explained(error: ApiError, verb: str, namespace: str) -> NoReturn:
    """A 401/403 as the permission that is missing; anything else as it came."""
    explained = failures.explain(error, verb=verb, resource="pods", namespace=namespace)
    if explained is error:
        raise error
    raise explained from error


def _described(ref: hosts.HostRef) -> str:
    if ref.ip is not None:
        return f"with IP {ref.ip}"
    if ref.subdomain is not None:
        return f"named {ref.name} or with hostname {ref.name} in subdomain {ref.subdomain}"
    return f"named {ref.name} or with hostname {ref.name}"
