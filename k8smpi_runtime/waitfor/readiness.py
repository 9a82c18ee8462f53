"""What "ready" means, for one pod and for the whole selection. Pure: no I/O, no clock.

The selection is ready when all of these hold:

- it is complete (:attr:`~k8smpi_runtime.selection.Selected.complete`): exactly the expected
  pods, every host of ``--pods``/``--hostfile`` matched; a bare ``--selector`` needs >= 1 pod.
  Pods being deleted or ended do not count, so a pod recreated under the same name counts only
  once the new one is there and Ready;
- every selected pod's ``Ready`` condition is ``True`` (phase Running is not enough), except
  the pod running the waiter itself: it runs this in an init container, so it cannot be Ready;
- unless DNS checks are off, every DNS name of every pod resolves to the pod's *current* IP:
  ``<hostname>.<subdomain>`` when the pod has a subdomain, and the name a ``--pods`` /
  ``--hostfile`` host used for it when that name has a dot. A bare pod name is not checked:
  DNS does not serve pod names (kubexec resolves them through the API). A pod's names are
  looked up once it is Ready (that is when its record is published), the own pod's once it
  has an IP;
- every extra check (``--resolve-self``) passed.

Fail fast, before the timeout, when a pod cannot become ready:

- a container waits with :data:`FATAL_WAITING` (ErrImagePull, ImagePullBackOff,
  CrashLoopBackOff, InvalidImageName, ErrImageNeverPull);
- it has been Unschedulable for longer than the grace;
- a pod the selection still lacks has ended (phase Failed or Succeeded), unless a StatefulSet
  owns it: the StatefulSet controller replaces such a pod under the same name at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from k8smpi_runtime import hosts
from k8smpi_runtime.selection import is_ready, pod_index, pod_name
from k8smpi_runtime.waitfor.dns import Check

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

    from k8smpi_runtime.hosts import HostRef
    from k8smpi_runtime.selection import Pod, Selected
    from k8smpi_runtime.waitfor.dns import Result

FATAL_WAITING = frozenset(
    {
        "ErrImagePull",
        "ImagePullBackOff",
        "CrashLoopBackOff",
        "InvalidImageName",
        "ErrImageNeverPull",
    }
)
#: Waiting reasons that only say "not started yet".
_BENIGN_WAITING = frozenset({"ContainerCreating", "PodInitializing"})
MESSAGE_LIMIT = 240


@dataclass(frozen=True)
class Row:
    """One pod (or missing host) that is not ready, and why."""

    pod: str
    phase: str
    why: str
    fatal: bool = False


@dataclass(frozen=True)
class Assessment:
    """Where the wait stands."""

    total: int
    ready: int
    resolved: int
    #: Not ready, in job order (missing pods and extra checks last).
    rows: tuple[Row, ...]
    #: DNS lookups wanted now.
    checks: tuple[Check, ...]
    done: bool
    #: No pod is selected at all (yet).
    no_pods: bool
    dns: bool = True

    @property
    def fatal(self) -> tuple[Row, ...]:
        return tuple(r for r in self.rows if r.fatal)


@dataclass(frozen=True)
class Rules:
    """How readiness is judged, besides the pods themselves."""

    dns: bool = True
    unschedulable_grace: float = 120.0
    #: The pod running the waiter (exempt from Ready); None outside a pod.
    self_ref: HostRef | None = None
    #: The StatefulSet's name with --statefulset (names its missing pods in the table).
    statefulset: str | None = None


# -- one pod -----------------------------------------------------------------------------------


def condition(pod: Pod, kind: str) -> dict[str, Any]:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == kind:
            return dict(c)
    return {}


def phase(pod: Pod) -> str:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    return str((pod.get("status") or {}).get("phase") or "Unknown")


def pod_ips(pod: Pod) -> frozenset[str]:
    status = pod.get("status") or {}
    ips = {p.get("ip") for p in status.get("podIPs") or []} | {status.get("podIP")}
    return frozenset(str(ip) for ip in ips if ip)


def one_line(text: object, limit: int = MESSAGE_LIMIT) -> str:
    words = " ".join(str(text or "").split())
    return words if len(words) <= limit else words[: limit - 1] + "…"


def _reason(reason: object, message: object) -> str:
    return ": ".join(one_line(p) for p in (reason, message) if p)


def unschedulable(pod: Pod) -> str | None:
    """The scheduler's verdict when it could not place the pod (PodScheduled=False)."""
    cond = condition(pod, "PodScheduled")
    if cond.get("status") == "False" and not (pod.get("spec") or {}).get("nodeName"):
        return _reason(cond.get("reason") or "Unschedulable", cond.get("message"))
    return None


def _container_statuses(pod: Pod) -> list[dict[str, Any]]:
    status = pod.get("status") or {}
    return [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]


def container_trouble(pod: Pod) -> tuple[str, bool] | None:
    """A container that waits for a reason worth naming: (why, fatal)."""
    for cs in _container_statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason and reason not in _BENIGN_WAITING:
            why = f"container {cs.get('name')}: {_reason(reason, waiting.get('message'))}"
            return why, reason in FATAL_WAITING
    return None


def why_not_ready(pod: Pod) -> str:
    """Why a live pod is not Ready, in a few words."""
    spec = pod.get("spec") or {}
    if not spec.get("nodeName"):
        return unschedulable(pod) or "waiting for the scheduler"
    trouble = container_trouble(pod)
    if trouble is not None:
        return trouble[0]
    for cs in _container_statuses(pod):
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            return str(waiting["reason"])
    ready = condition(pod, "Ready")
    detail = _reason(ready.get("reason"), ready.get("message"))
    return f"not Ready ({detail})" if detail else "not Ready"


def why_ended(pod: Pod) -> str:
    """What became of a pod in phase Failed or Succeeded, or one being deleted."""
    status = pod.get("status") or {}
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "being deleted (a replacement is not there yet)"
    if status.get("reason") or status.get("message"):
        return _reason(status.get("reason"), status.get("message"))
    for cs in _container_statuses(pod):
        done = (cs.get("state") or {}).get("terminated") or {}
        if done:
            code = done.get("exitCode")
            return f"container {cs.get('name')} exited {code}" + (
                f" ({done['reason']})" if done.get("reason") else ""
            )
    return f"phase {status.get('phase')}"


def has_ended_for_good(pod: Pod) -> bool:
    """Phase Failed/Succeeded, not being deleted, and no controller that will replace it."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    if (pod.get("status") or {}).get("phase") not in ("Failed", "Succeeded"):
        return False
    owners = (pod.get("metadata") or {}).get("ownerReferences") or []
    return not any(o.get("controller") and o.get("kind") == "StatefulSet" for o in owners)


def dns_form(host_text: str) -> str | None:
    """The name a host word makes MPI look up, when DNS is what answers it; else None."""
    try:
        ref = hosts.parse_host(host_text)
    except hosts.HostError:
        return None
    if ref.ip is not None or ref.subdomain is None:
        return None
    word = host_text.rpartition("@")[2].strip()
    return word.lower()


def dns_names(pod: Pod, host_texts: Sequence[str] = ()) -> list[str]:
    """The names this pod must be resolvable by (see the module docstring)."""
    names: list[str] = []
    spec = pod.get("spec") or {}
    if spec.get("subdomain"):
        names.append(f"{spec.get('hostname') or pod_name(pod)}.{spec['subdomain']}")
    for text in host_texts:
        form = dns_form(text)
        if form and form.rstrip(".") not in (n.rstrip(".") for n in names):
            names.append(form)
    return names


# -- the selection -----------------------------------------------------------------------------


def _host_texts(selected: Selected) -> dict[str, list[str]]:
    """Pod name -> the --pods/--hostfile host words that named it (indexed, not n*m)."""
    refs = selected.target.hosts
    if not refs:
        return {}
    by_label: dict[str, list[Pod]] = {}
    by_ip: dict[str, list[Pod]] = {}
    for pod in selected.pods:
        for label in {pod_name(pod), (pod.get("spec") or {}).get("hostname")}:
            if label:
                by_label.setdefault(str(label), []).append(pod)
        for ip in pod_ips(pod):
            by_ip.setdefault(ip, []).append(pod)
    texts: dict[str, list[str]] = {}
    for ref in refs:
        pool = by_ip.get(ref.ip, []) if ref.ip is not None else by_label.get(ref.name or "", [])
        found = hosts.find(ref, pool) if ref.ip is None else (pool[0] if pool else None)
        if found is None and ref.ip is not None:
            found = hosts.find(ref, selected.pods)
        if found is not None:
            texts.setdefault(pod_name(found), []).append(ref.text)
    return texts


def _missing_rows(
    selected: Selected, ended: Mapping[str, Pod], rules: Rules
) -> tuple[list[Row], list[str]]:
    """Rows for pods the selection lacks; and the ended pods already shown."""
    rows: list[Row] = []
    shown: list[str] = []
    target = selected.target
    if target.hosts:
        for text in selected.missing:
            try:
                ref = hosts.parse_host(text)
            except hosts.HostError:  # pragma: no cover - resolve() rejected it already
                continue
            gone = hosts.find(ref, ended.values())
            if gone is not None:
                shown.append(pod_name(gone))
                rows.append(_ended_row(gone, label=f"{text} ({pod_name(gone)})"))
            else:
                rows.append(Row(text, "-", "no such pod"))
        return rows, shown
    expected = selected.expected
    have = len(selected.pods)
    if expected is None or have >= expected:
        return rows, shown
    for pod in ended.values():
        shown.append(pod_name(pod))
        rows.append(_ended_row(pod))
    lacking = expected - have - len(rows)
    if lacking <= 0:
        return rows, shown
    if rules.statefulset is not None:
        taken = {i[1] for i in map(pod_index, selected.pods) if i} | {
            i[1] for i in map(pod_index, ended.values()) if i
        }
        names = [f"{rules.statefulset}-{n}" for n in range(expected) if n not in taken]
        rows.extend(Row(name, "-", "no such pod yet") for name in names[:lacking])
        lacking -= len(names[:lacking])
    if lacking > 0:
        what = "pod" if lacking == 1 else "pods"
        rows.append(
            Row(
                f"({lacking} more)",
                "-",
                f"expected {expected} pods, {have} exist: {lacking} {what} not created yet",
            )
        )
    return rows, shown


def _ended_row(pod: Pod, label: str | None = None) -> Row:
    return Row(label or pod_name(pod), phase(pod), why_ended(pod), has_ended_for_good(pod))


def assess(
    selected: Selected,
    *,
    ended: Iterable[Pod] = (),
    rules: Rules = Rules(),
    dns_result: Callable[[Check], Result | None] = lambda _c: None,
    unschedulable_for: Callable[[Pod], float] = lambda _p: 0.0,
    extra_checks: Sequence[tuple[str, Check]] = (),
) -> Assessment:
    """Where the wait stands for ``selected``.

    ``ended``: the pods the selection set aside as ended or being deleted (by name in
    ``selected.ended``); ``dns_result``: the latest result of a check, None while unknown;
    ``unschedulable_for``: seconds a pod has been Unschedulable; ``extra_checks``: (label,
    check) pairs that must pass too (``--resolve-self``).
    """
    ended_names = set(selected.ended)
    ended_by_name = {pod_name(p): p for p in ended if ended_names and pod_name(p) in ended_names}
    texts = _host_texts(selected)
    rows: list[Row] = []
    checks: list[Check] = []
    ready = resolved = 0
    for pod in selected.pods:
        name = pod_name(pod)
        is_self = rules.self_ref is not None and hosts.matches(rules.self_ref, pod)
        pod_ready = is_self or is_ready(pod)
        if not pod_ready:
            rows.append(_not_ready_row(pod, rules, unschedulable_for))
            continue
        ready += 1
        if not rules.dns:
            resolved += 1
            continue
        ips = pod_ips(pod)
        uid = str((pod.get("metadata") or {}).get("uid", name))
        dns_row = None
        for dns_name in dns_names(pod, texts.get(name, ())):
            if not ips:
                dns_row = dns_row or Row(name, phase(pod), f"DNS: {dns_name}: the pod has no IP")
                continue
            check = Check(dns_name, ips, uid)
            checks.append(check)
            result = dns_result(check)
            if dns_row is None and (result is None or not result.ok):
                why = "checking" if result is None else result.detail
                hint = _self_hint(is_self, result)
                dns_row = Row(name, phase(pod), f"DNS: {dns_name} {why}{hint}")
        if dns_row is None:
            resolved += 1
        else:
            rows.append(dns_row)
    missing, _shown = _missing_rows(selected, ended_by_name, rules)
    rows.extend(missing)
    if selected.expected is not None and len(selected.pods) > selected.expected:
        rows.append(
            Row(
                "*",
                "-",
                f"{len(selected.pods)} pods match but {selected.expected} are expected "
                "(scaling in progress?)",
            )
        )
    for label, check in extra_checks:
        checks.append(check)
        result = dns_result(check)
        if result is None or not result.ok:
            why = "checking" if result is None else result.detail
            rows.append(Row(label, "-", f"DNS: {check.name} {why}"))
    no_pods = not selected.pods
    needs_one = selected.expected is None and no_pods
    done = selected.complete and not needs_one and not rows
    total = selected.expected if selected.expected is not None else len(selected.pods)
    return Assessment(
        total=total,
        ready=ready,
        resolved=resolved,
        rows=tuple(rows),
        checks=tuple(checks),
        done=done,
        no_pods=no_pods,
        dns=rules.dns,
    )


def _self_hint(is_self: bool, result: Result | None) -> str:
    if not is_self or result is None:
        return ""
    return (
        " (this pod is not Ready while it waits: its headless Service needs "
        "publishNotReadyAddresses: true)"
    )


def _not_ready_row(pod: Pod, rules: Rules, unschedulable_for: Callable[[Pod], float]) -> Row:
    name = pod_name(pod)
    verdict = unschedulable(pod)
    if verdict is not None:
        waited = unschedulable_for(pod)
        fatal = verdict.startswith("Unschedulable") and waited > rules.unschedulable_grace
        return Row(name, phase(pod), verdict, fatal)
    trouble = container_trouble(pod)
    if trouble is not None:
        return Row(name, phase(pod), trouble[0], trouble[1])
    return Row(name, phase(pod), why_not_ready(pod))
