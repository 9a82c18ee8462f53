"""The pod a host word names: :func:`namespace_for`, :func:`scope_for`, then :func:`find_pod`.

Namespace, first match wins: the host's FQDN (``w-0.sub.<ns>.svc...``), ``--namespace`` /
``KUBEXEC_NAMESPACE``, the in-cluster service-account namespace, the kubeconfig context's.

Scope (which pods may be taken at all; :class:`Scope`): ``--job-selector`` /
``KUBEXEC_SELECTOR``, else -- in a pod -- the ``k8smpi.dev/job`` label of kubexec's own pod
(named by its service-account token; one GET), else any pod of the namespace. With a scope,
every lookup asks the API server for the scope's pods only: a pod of another job, or a decoy
given the job's host name and subdomain, is never found, and so never receives the command.

Requests, fewest first (see :mod:`k8smpi_runtime.hosts` for the forms):

- a bare name (no subdomain) with no scope: none -- :func:`guess` makes it the target and
  kubexec execs at once (what launchers pass: StatefulSet pods' names); only when the API
  server refuses before anything runs (no such pod, not running, several containers) does it
  come here. With a scope the pod is always looked up first: a pod outside it is never exec'd;
- a name: one request for the pod of that name (a GET; with a scope, a list of the scope's pods
  with ``fieldSelector=metadata.name=<name>``). Only when there is no such pod, or it is not in
  the subdomain the host names, one list of the scope's (or namespace's) pods, matched by
  ``spec.hostname`` + ``spec.subdomain`` (Indexed Jobs, JobSets);
- an IP: one list with ``fieldSelector=status.podIP=<ip>``; then, if that finds nothing (an
  IPv6 address written another way, a secondary ``podIPs`` entry), one plain list.
  ``hostNetwork`` pods never match an IP.

A search that matches more than one live pod is refused (:class:`AmbiguousHost`): taking the
first would let whoever sorts first receive the command. A pod that is not found, or not
Running, is a :class:`PodNotFound` / :class:`PodNotRunning`.
"""

from __future__ import annotations

from k8smpi_runtime import hosts, lazylog
from k8smpi_runtime.errors import ApiError, K8smpiError, NotFoundError
from k8smpi_runtime.kube import urls
from k8smpi_runtime.kubexec import failures
from k8smpi_runtime.records import Record

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import Any, NoReturn, Protocol

    Pod = dict[str, Any]

    class PodApi(Protocol):
        """What resolution needs from :class:`k8smpi_runtime.kube.rest.Api`."""

        def get(self, path: str, params: Mapping[str, str | int | bool] | None = None) -> Pod: ...

        def list(
            self,
            path: str,
            params: Mapping[str, str | int | bool] | None = None,
            *,
            limit: int = 500,
        ) -> tuple[list[Pod], str]: ...


logger = lazylog.getLogger(__name__)

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"
JOB_LABEL = "k8smpi.dev/job"
"""The label every object of one job carries (deploy/): kubexec's default scope in a pod."""


class PodNotFound(K8smpiError):
    """No pod answers to the host name."""


class PodNotRunning(K8smpiError):
    """The pod exists but is not (yet, or any more) Running."""


class AmbiguousHost(K8smpiError):
    """More than one live pod answers to the host name."""


class Target(Record):
    """A Running pod and the container to exec into."""

    namespace: str
    pod: str
    container: str | None


class Scope(Record):
    """The pods a lookup may take: those matching ``selector`` (None: any)."""

    selector: str | None = None
    source: str = "no scope"

    def describe(self) -> str:
        return f"{self.selector} ({self.source})" if self.selector else "any pod"


def namespace_for(
    ref: hosts.HostRef, *, explicit: str | None, in_cluster: str | None, configured: str
) -> str:
    """The namespace by the precedence in this module's docstring."""
    return ref.namespace or explicit or in_cluster or configured


def scope_for(api: PodApi, *, explicit: str | None, in_cluster: bool, token: str | None) -> Scope:
    """The scope by the precedence in this module's docstring (``in_cluster``: the token is
    this pod's own service-account token)."""
    if explicit:
        return Scope(explicit, "--job-selector / KUBEXEC_SELECTOR")
    own = failures.token_pod(token) if in_cluster else None
    if own is None:
        return Scope()
    namespace, name = own
    pod = _get(
        api, f"/api/v1/namespaces/{urls.segment(namespace)}/pods/{urls.segment(name)}", namespace
    )
    job = ((pod or {}).get("metadata") or {}).get("labels", {}).get(JOB_LABEL)
    if not job:
        logger.debug("own pod %s/%s has no %s label: no scope", namespace, name, JOB_LABEL)
        return Scope()
    return Scope(f"{JOB_LABEL}={job}", f"the {JOB_LABEL} label of this pod, {name}")


def find_pod(api: PodApi, ref: hosts.HostRef, namespace: str, scope: Scope | None = None) -> Pod:
    """The pod ``ref`` names in ``namespace`` within ``scope``, Running; raises PodNotFound,
    AmbiguousHost or PodNotRunning."""
    scope = scope or Scope()
    pods_path = f"/api/v1/namespaces/{urls.segment(namespace)}/pods"
    pod: Pod | None = None
    if ref.ip is None and ref.name is not None:
        pod = _by_name(api, pods_path, ref.name, namespace, scope)
        if pod is not None and not hosts.matches(ref, pod):
            logger.debug("pod %s is not in subdomain %s; listing", ref.name, ref.subdomain)
            pod = None
    if pod is None:
        pod = _search(api, ref, pods_path, namespace, scope)
    if pod is None:
        raise PodNotFound(_not_found(api, ref, pods_path, namespace, scope))
    phase = (pod.get("status") or {}).get("phase") or "Unknown"
    if phase != "Running":
        raise PodNotRunning(
            f"pod {namespace}/{pod['metadata']['name']} ({ref.text}) is not Running (phase {phase})"
        )
    return pod


def guess(ref: hosts.HostRef, namespace: str, container: str | None) -> Target | None:
    """The pod a bare name most likely is, unchecked: the pod of that name (StatefulSet pods,
    what launchers pass), the container the API server picks (the only one) or ``container``.
    None for IPs and ``<hostname>.<subdomain>`` names, which need the lookup. Only for calls
    without a scope (see the module docstring)."""
    if ref.name is None or ref.subdomain is not None:
        return None
    return Target(namespace=namespace, pod=ref.name, container=container)


def container_of(pod: Pod, explicit: str | None) -> str | None:
    """``--container``, else the pod's default-container annotation, else its first container."""
    if explicit:
        return explicit
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    if annotations.get(DEFAULT_CONTAINER_ANNOTATION):
        return str(annotations[DEFAULT_CONTAINER_ANNOTATION])
    containers = (pod.get("spec") or {}).get("containers") or []
    return str(containers[0]["name"]) if containers else None


def _by_name(api: PodApi, pods_path: str, name: str, namespace: str, scope: Scope) -> Pod | None:
    if scope.selector is None:
        return _get(api, f"{pods_path}/{urls.segment(name)}", namespace)
    params = {"labelSelector": scope.selector, "fieldSelector": f"metadata.name={name}"}
    items = _list(api, pods_path, namespace, params)
    return items[0] if items else None


def _search(
    api: PodApi, ref: hosts.HostRef, pods_path: str, namespace: str, scope: Scope
) -> Pod | None:
    params = {"labelSelector": scope.selector} if scope.selector else {}
    if ref.ip is not None:
        by_ip = {**params, "fieldSelector": f"status.podIP={ref.ip}"}
        items = _list(api, pods_path, namespace, by_ip)
        found = _one(ref, items, namespace)
        if found is not None:
            return found
    items = _list(api, pods_path, namespace, params)
    logger.debug("listed %d pods in %s for %s", len(items), namespace, ref.text)
    return _one(ref, items, namespace)


def _one(ref: hosts.HostRef, items: list[Pod], namespace: str) -> Pod | None:
    found = hosts.candidates(ref, items)
    if len(found) > 1:
        names = ", ".join(sorted(str(p["metadata"]["name"]) for p in found))
        raise AmbiguousHost(
            f"host {ref.text} matches {len(found)} pods in namespace {namespace} ({names}); "
            "give the pod name, or narrow with --job-selector"
        )
    return found[0] if found else None


def _not_found(
    api: PodApi, ref: hosts.HostRef, pods_path: str, namespace: str, scope: Scope
) -> str:
    where = f"in namespace {namespace}"
    if scope.selector is None:
        return f"no pod {_described(ref)} {where}"
    # Say so when the name exists outside the scope: a pod of another job, or a decoy.
    other = _get(api, f"{pods_path}/{urls.segment(ref.name)}", namespace) if ref.name else None
    if other is not None and hosts.matches(ref, other):
        return (
            f"pod {namespace}/{ref.name} is not one of this job's pods (selector "
            f"{scope.describe()}); not using it"
        )
    return f"no pod {_described(ref)} {where} among this job's pods ({scope.describe()})"


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
