"""Host names as MPI launchers and users write them, and the pods they mean.

Shared by kubexec (one host per call), k8s-waitfor (``--hostfile``) and hostfile-gen, so a
name that works in one works in all. Accepted forms::

    pod-name                          my-cnode-1
    <hostname>.<subdomain>            my-cnode-1.my-hpc-cluster
    <hostname>.<subdomain>.<ns>       my-cnode-1.my-hpc-cluster.team-a
    ... .svc and .svc.<domain>        my-cnode-1.my-hpc-cluster.team-a.svc.cluster.local
    a trailing dot, user@ in front    alice@my-cnode-1.my-hpc-cluster.
    an IPv4 or IPv6 pod IP            10.0.3.7, fd00::7, [fd00::7]

A name is first taken as a pod name (StatefulSet pods: hostname == pod name); pods of Indexed
Jobs and JobSets have a ``spec.hostname`` that differs from the pod name and are found by
``spec.hostname`` + ``spec.subdomain``. The cluster domain is whatever follows ``svc``: nothing
here assumes ``cluster.local``. Every label must be a DNS label (letters, digits, ``-``): a
name with ``/``, ``%``, ``?`` or ``_`` cannot be a pod's and never reaches a URL.

An IP never matches a ``hostNetwork`` pod: such a pod has its node's address, which every other
hostNetwork pod of that node shares, so the address does not name it.
"""

from __future__ import annotations

from k8smpi_runtime.records import Record

# Not typing.TYPE_CHECKING: importing typing costs kubexec's start-up 2-3 ms (mypy and ruff
# treat this name the same way).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable
    from typing import Any

    Pod = dict[str, Any]

# The characters of an IPv4 or IPv6 address: only such words are handed to ipaddress, which
# kubexec then imports (most hosts are names; the import costs about 1 ms).
_IP_CHARS = frozenset("0123456789abcdefABCDEF.:")

# A DNS label (RFC 1123): [a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?, checked without re (the control
# master's client, which parses the host too, imports no re).
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")
_LABEL_CHARS = _ALNUM | {"-"}


class HostError(ValueError):
    """A host string that cannot name a pod."""


class HostRef(Record):
    """What a host string says about the pod it means."""

    text: str
    user: str | None = None
    #: First DNS label (a pod name or a pod's spec.hostname); None for an IP.
    name: str | None = None
    subdomain: str | None = None
    #: Only when the FQDN carries it; otherwise the caller's namespace applies.
    namespace: str | None = None
    ip: str | None = None

    @property
    def is_ip(self) -> bool:
        return self.ip is not None


def parse_host(text: str) -> HostRef:
    """Split ``[user@]host`` into what it says; raises HostError for what no pod can be."""
    original = text
    user = None
    if "@" in text:
        user, _, text = text.rpartition("@")
        if not user:
            raise HostError(f"empty user name in {original!r}")
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        raise HostError(f"no host name in {original!r}")
    ip = _ip(host)
    if ip is not None:
        return HostRef(text=original, user=user, ip=ip)
    host = host.rstrip(".").lower()
    labels = host.split(".")
    if any(not label for label in labels):
        raise HostError(f"malformed host name {original!r}")
    if not all(_is_label(label) for label in labels):
        raise HostError(f"{original!r} is not a host name (DNS labels: a-z, 0-9 and '-')")
    name = labels[0]
    subdomain = labels[1] if len(labels) > 1 else None
    namespace = labels[2] if len(labels) > 2 else None
    # <host>.<sub>.<ns>.svc[.<domain>]: anything else after the namespace is not a pod name.
    if len(labels) > 3 and labels[3] != "svc":
        raise HostError(
            f"{original!r} is not <hostname>.<subdomain>.<namespace>.svc[.<cluster-domain>]"
        )
    return HostRef(text=original, user=user, name=name, subdomain=subdomain, namespace=namespace)


def matches(ref: HostRef, pod: Pod) -> bool:
    """Whether ``pod`` is what ``ref`` names (namespace is the caller's concern)."""
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    if ref.ip is not None:
        if spec.get("hostNetwork"):
            return False
        ips = {status.get("podIP")} | {p.get("ip") for p in status.get("podIPs") or []}
        return any(_same_ip(ref.ip, ip) for ip in ips if ip)
    meta = pod.get("metadata") or {}
    hostname = spec.get("hostname")
    subdomain = spec.get("subdomain")
    if ref.subdomain is None:
        return bool(meta.get("name") == ref.name or hostname == ref.name)
    # With a subdomain, the pod must be in it -- as DNS would have it.
    if hostname:
        return bool(hostname == ref.name and subdomain == ref.subdomain)
    return bool(meta.get("name") == ref.name and subdomain == ref.subdomain)


def find(ref: HostRef, pods: Iterable[Pod]) -> Pod | None:
    """The pod ``ref`` names among ``pods``; a live pod wins over one being deleted."""
    found = candidates(ref, pods)
    return found[0] if found else None


def candidates(ref: HostRef, pods: Iterable[Pod]) -> list[Pod]:
    """The pods ``ref`` names among ``pods``: the live ones, or (none live) those being
    deleted. More than one means the name is ambiguous there."""
    found = [p for p in pods if matches(ref, p)]
    live = [p for p in found if not (p.get("metadata") or {}).get("deletionTimestamp")]
    return live or found


def _is_label(text: str) -> bool:
    return (
        0 < len(text) <= 63
        and text[0] in _ALNUM
        and text[-1] in _ALNUM
        and all(c in _LABEL_CHARS for c in text)
    )


def _ip(text: str) -> str | None:
    """``text`` as a normalized IP address, or None if it is not one."""
    if not set(text) <= _IP_CHARS:
        return None
    import ipaddress  # noqa: PLC0415 - see _IP_CHARS

    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _same_ip(a: str, b: str) -> bool:
    first = _ip(a)
    return first is not None and first == _ip(b)
