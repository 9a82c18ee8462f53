"""From selected pods to hosts with slots, or a refusal: the part k8s-waitfor reuses.

:func:`build` takes a :class:`~k8smpi_runtime.selection.Selected` and :class:`Options` and
returns a :class:`Hostfile` (hosts in order, with names and slots), or raises
:class:`Refused` -- a hostfile that would be empty or partial is never produced:

- a host of ``--pods``/``--hostfile`` that matches no pod, or no pod selected at all;
- fewer (or more) pods than expected (a StatefulSet's replicas, a Job's parallelism, ``--count``);
- a selected pod not scheduled yet (it has no node, so no IP and no name to reach it by);
- with ``--require-ready``, a selected pod that is not Ready;
- a name that cannot be given (``--names ip`` without an IP, ``--names fqdn`` without a
  ``spec.subdomain`` or a known cluster domain);
- slots that sum to 0.

Pods with 0 slots (no GPU, say a CPU-only launcher) are left out and listed in the header.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from k8smpi_runtime import hosts
from k8smpi_runtime.errors import K8smpiError
from k8smpi_runtime.hostfile.slots import SlotRule
from k8smpi_runtime.selection import is_ready, pod_index, pod_name

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from k8smpi_runtime.selection import Pod, Selected

NAME_MODES = ("pod", "fqdn", "ip")
LAUNCHER_MODES = ("first", "exclude", "as-is")
#: How many pod names a one-line message or a header line lists before "+N more".
SHOW = 5


class Refused(K8smpiError):
    """The hostfile would be empty or partial; nothing was written."""


@dataclass(frozen=True)
class Options:
    """Everything besides the selection that decides a hostfile's content."""

    slots: SlotRule = field(default_factory=SlotRule)
    #: ``pod`` (kubexec's names), ``fqdn`` or ``ip``.
    names: str = "pod"
    #: For ``--names fqdn``: the cluster domain; None reads the resolver's search list.
    cluster_domain: str | None = None
    #: ``first``, ``exclude`` or ``as-is``: where the launcher pod goes if it is selected.
    launcher: str = "first"
    #: The launcher pod's name (or hostname); None when this does not run in a pod.
    launcher_pod: str | None = None
    require_ready: bool = False

    def __post_init__(self) -> None:
        if self.names not in NAME_MODES:
            raise ValueError(f"--names must be one of {', '.join(NAME_MODES)}")
        if self.launcher not in LAUNCHER_MODES:
            raise ValueError(f"--launcher must be one of {', '.join(LAUNCHER_MODES)}")


@dataclass(frozen=True)
class Host:
    name: str
    pod: str
    slots: int
    max_slots: int | None = None


@dataclass(frozen=True)
class Hostfile:
    hosts: tuple[Host, ...]
    namespace: str
    #: What was selected, e.g. ``statefulset my-cnode``.
    source: str
    slots_from: str
    names: str
    #: Selected pods left out for having 0 slots.
    skipped: tuple[str, ...] = ()
    #: What happened to the launcher pod, e.g. ``my-cnode-0 (first)``; None if not selected.
    launcher: str | None = None

    @property
    def total_slots(self) -> int:
        return sum(h.slots for h in self.hosts)


def listing(names: Sequence[str], show: int = SHOW) -> str:
    """``a, b, c`` or ``a, b, c, d, e +7 more``."""
    text = ", ".join(names[:show])
    return text + (f" +{len(names) - show} more" if len(names) > show else "")


# -- names -------------------------------------------------------------------------------------


def cluster_domain_from_resolv(text: str, namespace: str | None = None) -> str | None:
    """The cluster domain in a pod's resolv.conf search list, or None (not in a pod).

    The kubelet writes ``search <ns>.svc.<domain> svc.<domain> <domain>``: the domain is what
    follows ``<namespace>.svc.``, else a ``svc.<domain>`` entry with ``<domain>`` also listed.
    """
    search: list[str] = []
    for line in text.splitlines():
        words = line.split("#", 1)[0].split()
        if words and words[0] in ("search", "domain"):
            search = [w.rstrip(".") for w in words[1:]]  # the last line wins, as in the resolver
    if namespace is not None:
        for entry in search:
            if entry.startswith(f"{namespace}.svc.") and len(entry) > len(namespace) + 5:
                return entry[len(namespace) + 5 :]
    for entry in search:
        if entry.startswith("svc.") and entry[4:] in search:
            return entry[4:]
    return None


def find_cluster_domain(namespace: str, resolv_conf: str = "/etc/resolv.conf") -> str:
    try:
        with open(resolv_conf) as f:  # noqa: PTH123 - one small read
            text = f.read()
    except OSError as e:
        raise Refused(
            f"--names fqdn: cannot read {resolv_conf} ({e.strerror}); pass --cluster-domain"
        ) from e
    domain = cluster_domain_from_resolv(text, namespace)
    if domain is None:
        raise Refused(
            f"--names fqdn: the search list in {resolv_conf} has no svc.<domain> entry "
            "(not in a pod?), so the cluster domain is unknown: pass --cluster-domain"
        )
    return domain


def host_name(pod: Pod, mode: str, *, namespace: str, domain: str | None) -> str | None:
    """The pod's name in the hostfile, or None when it has none of that kind."""
    if mode == "pod":
        return pod_name(pod)
    if mode == "ip":
        ip = (pod.get("status") or {}).get("podIP")
        return str(ip) if ip else None
    spec = pod.get("spec") or {}
    subdomain = spec.get("subdomain")
    if not subdomain:
        return None
    return f"{spec.get('hostname') or pod_name(pod)}.{subdomain}.{namespace}.svc.{domain}"


# -- the launcher ------------------------------------------------------------------------------


def detect_launcher(env: Mapping[str, str] | None = None) -> str | None:
    """The name of the pod this runs in, or None outside a pod.

    ``K8SMPI_POD_NAME`` or ``POD_NAME`` (set them with the downward API: ``metadata.name``)
    win; otherwise, in a pod (``KUBERNETES_SERVICE_HOST`` set), its hostname -- the pod name,
    or its ``spec.hostname``, which is matched too.
    """
    env = os.environ if env is None else env
    for var in ("K8SMPI_POD_NAME", "POD_NAME"):
        if env.get(var):
            return env[var]
    if env.get("KUBERNETES_SERVICE_HOST"):
        return env.get("HOSTNAME") or socket.gethostname()
    return None


def _is_launcher(pod: Pod, launcher: str | None) -> bool:
    if not launcher:
        return False
    try:
        return hosts.matches(hosts.parse_host(launcher), pod)
    except hosts.HostError:
        return False


# -- build -------------------------------------------------------------------------------------


def _condition(pod: Pod, kind: str) -> dict[str, Any]:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def _why_unscheduled(pod: Pod) -> str:
    cond = _condition(pod, "PodScheduled")
    if cond.get("status") == "False":
        return f"{cond.get('reason', 'Pending')}: {cond.get('message', '')}".strip(": ")
    return "not yet looked at by the scheduler"


def _check_count(selected: Selected) -> None:
    target = selected.target
    pods = selected.pods
    if selected.missing:
        raise Refused(
            f"no pod in namespace {target.namespace} for host(s) "
            f"{listing(selected.missing)}: refusing a partial hostfile"
        )
    if not pods:
        ended = (
            f" (only ended or deleted pods: {listing(selected.ended)})" if selected.ended else ""
        )
        raise Refused(f"no pods match {target.description} in namespace {target.namespace}{ended}")
    expected = selected.expected
    if expected is None or len(pods) == expected:
        return
    if len(pods) > expected:
        raise Refused(
            f"{target.description} expects {expected} pods but {len(pods)} match "
            "(scaling in progress?): refusing an inconsistent hostfile"
        )
    detail = ""
    indexes = [pod_index(p) for p in pods]
    if all(indexes):
        have = {i[1] for i in indexes if i}
        owner = next(i[0] for i in indexes if i)
        absent = [str(n) for n in range(expected) if n not in have]
        if absent and target.description.startswith("statefulset"):
            detail = f"; missing: {listing([f'{owner}-{n}' for n in absent])}"
        elif absent:
            detail = f"; missing index {listing(absent)}"
    if selected.ended:
        detail += f"; ended or being deleted: {listing(selected.ended)}"
    raise Refused(
        f"{target.description} expects {expected} pods, only {len(pods)} exist{detail}: "
        "refusing a partial hostfile"
    )


def _check_pods(pods: Sequence[Pod], options: Options) -> None:
    unscheduled = [p for p in pods if not (p.get("spec") or {}).get("nodeName")]
    if unscheduled:
        first = unscheduled[0]
        raise Refused(
            f"{len(unscheduled)} selected pod(s) not scheduled yet: "
            f"{listing([pod_name(p) for p in unscheduled])} "
            f"({pod_name(first)}: {_why_unscheduled(first)})"
        )
    if options.require_ready:
        unready = [p for p in pods if not is_ready(p)]
        if unready:
            first = unready[0]
            phase = (first.get("status") or {}).get("phase", "Unknown")
            raise Refused(
                f"--require-ready: {len(unready)} selected pod(s) not Ready: "
                f"{listing([pod_name(p) for p in unready])} ({pod_name(first)}: {phase})"
            )


def build(
    selected: Selected, options: Options, *, resolv_conf: str = "/etc/resolv.conf"
) -> Hostfile:
    """The hostfile for ``selected``, or :class:`Refused`."""
    namespace = selected.target.namespace
    _check_count(selected)
    _check_pods(selected.pods, options)
    domain = options.cluster_domain
    if options.names == "fqdn" and domain is None:
        domain = find_cluster_domain(namespace, resolv_conf)

    entries: list[tuple[Pod, Host]] = []
    nameless: list[str] = []
    skipped: list[str] = []
    for pod in selected.pods:
        slots = options.slots.slots_for(pod)
        if slots <= 0:
            skipped.append(pod_name(pod))
            continue
        name = host_name(pod, options.names, namespace=namespace, domain=domain)
        if name is None:
            nameless.append(pod_name(pod))
            continue
        host = Host(name, pod_name(pod), slots, options.slots.max_slots_for(slots))
        entries.append((pod, host))
    if nameless:
        why = (
            "no pod IP yet"
            if options.names == "ip"
            else "no spec.subdomain, so no DNS name (set a StatefulSet's serviceName or the "
            "pod's subdomain, or use --names pod|ip)"
        )
        raise Refused(f"--names {options.names}: {listing(nameless)}: {why}")
    if not entries:
        raise Refused(
            f"the {len(selected.pods)} selected pod(s) have 0 slots in total "
            f"({options.slots.describe()}): pass --resource, --slots or --min-slots"
        )

    launcher_note = None
    launchers = [e for e in entries if _is_launcher(e[0], options.launcher_pod)]
    if launchers and options.launcher != "as-is":
        rest = [e for e in entries if e not in launchers]
        entries = rest if options.launcher == "exclude" else launchers + rest
    if launchers:
        placed = {"first": "first", "exclude": "excluded", "as-is": "in place"}[options.launcher]
        launcher_note = f"{launchers[0][1].pod} ({placed})"
    if not entries:
        raise Refused("--launcher exclude: the launcher pod was the only host")
    return Hostfile(
        hosts=tuple(h for _, h in entries),
        namespace=namespace,
        source=selected.target.description,
        slots_from=options.slots.describe(),
        names=options.names if options.names != "fqdn" else f"fqdn (domain {domain})",
        skipped=tuple(skipped),
        launcher=launcher_note,
    )
