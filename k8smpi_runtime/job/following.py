"""Where a submitted job stands, from its owner (Job or JobSet) and its pods.

:func:`assess` is pure: the owner object and the pods in, a :class:`State` out -- queued (Kueue
holds it whole), placing (the scheduler's reasons for each worker it could not place, in the
waiter's words), starting (the waiter checks the workers), running, or over with the batch
script's exit status (or why it never ran). :class:`Watcher` keeps the owner and the pods
current with one list + watch each (the waiter's watch thread), and :class:`LogCopier` copies the
launcher's output to a stream as it arrives.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from k8smpi_runtime.errors import K8smpiError
from k8smpi_runtime.job import exitcodes, shared
from k8smpi_runtime.selection import pod_name
from k8smpi_runtime.waitfor import readiness
from k8smpi_runtime.waitfor.progress import pending
from k8smpi_runtime.waitfor.readiness import Row
from k8smpi_runtime.waitfor.watching import Changed, Fatal, PodCache, PodWatch, Synced, Trouble

if TYPE_CHECKING:
    from k8smpi_runtime.kube.rest import Api

logger = logging.getLogger(__name__)

JSON = dict[str, Any]

QUEUED = "Queued"
PLACING = "Placing"
STARTING = "Starting"
RUNNING = "Running"
ENDING = "Ending"
SUCCEEDED = "Succeeded"
FAILED = "Failed"


@dataclass(frozen=True)
class State:
    phase: str
    #: One line: what is happening, or why it ended.
    detail: str
    #: Pods not placed or not running, with the reason (status shows them as a table).
    rows: tuple[Row, ...] = ()
    workers_placed: int = 0
    workers_total: int = 0
    launcher_pod: str | None = None
    #: The launcher's main container has started: its output can be read.
    output_ready: bool = False
    #: submit's exit status once the job is over.
    code: int | None = None
    #: More lines worth showing under the line (the waiter's table of pods when it failed).
    more: str = ""

    @property
    def over(self) -> bool:
        return self.phase in (SUCCEEDED, FAILED)

    def line(self) -> str:
        return f"{self.phase.lower()}: {self.detail}"


# -- reading objects ---------------------------------------------------------------------------


def _conditions(obj: JSON | None) -> dict[str, JSON]:
    conds = ((obj or {}).get("status") or {}).get("conditions") or []
    return {str(c.get("type")): c for c in conds if c.get("status") == "True"}


def _role(pod: JSON) -> str:
    return str(((pod.get("metadata") or {}).get("labels") or {}).get(shared.ROLE_LABEL, ""))


def _created(pod: JSON) -> str:
    return str((pod.get("metadata") or {}).get("creationTimestamp") or "")


def _statuses(pod: JSON, key: str) -> dict[str, JSON]:
    return {str(c.get("name")): c for c in (pod.get("status") or {}).get(key) or []}


def _terminated(status: JSON | None) -> JSON | None:
    if not status:
        return None
    state = status.get("state") or {}
    return state.get("terminated") or None


def _gated(pod: JSON) -> bool:
    gates = (pod.get("spec") or {}).get("schedulingGates") or []
    return any(g.get("name") == shared.KUEUE_GATE for g in gates)


def _placed(pod: JSON) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


WAITER = "k8s-waitfor: "
PREFLIGHT_FATAL = f"{WAITER}FATAL "
"""How ``k8s-waitfor --preflight`` starts each fatal finding's line (after its table)."""


def verdict(message: str) -> tuple[str, str]:
    """A failed container's termination message (its log's tail): the verdict line, and the
    lines worth showing under it. The verdict is the preflight's first fatal finding (then the
    preflight's table and the other findings follow), else the waiter's last ``k8s-waitfor:``
    line (then the lines after it: its table of pods), else the last line."""
    lines = [ln.rstrip() for ln in message.splitlines() if ln.strip()]
    if not lines:
        return "", ""
    fatal = [i for i, ln in enumerate(lines) if ln.startswith(PREFLIGHT_FATAL)]
    if fatal:
        first = lines[fatal[0]][len(PREFLIGHT_FATAL) :]
        # The table starts after the waiter's "preflight: N fatal finding(s)" line.
        start = max(
            (i for i, ln in enumerate(lines[: fatal[0]]) if ln.startswith(f"{WAITER}preflight:")),
            default=-1,
        )
        more = [ln for i, ln in enumerate(lines) if i > start and i != fatal[0]]
        others = f" (and {len(fatal) - 1} more)" if len(fatal) > 1 else ""
        why = f"preflight: {readiness.one_line(first, limit=400)}{others}"
        return why, "\n".join(more)
    at = max((i for i, ln in enumerate(lines) if ln.startswith(WAITER)), default=None)
    if at is None:
        return readiness.one_line(lines[-1], limit=400), ""
    return readiness.one_line(lines[at], limit=400), "\n".join(lines[at + 1 :])


def launcher_of(pods: list[JSON]) -> JSON | None:
    """The newest launcher pod (a Job may replace one lost to a disruption)."""
    launchers = [p for p in pods if _role(p) == "launcher"]
    return max(launchers, key=_created) if launchers else None


# -- the verdict -------------------------------------------------------------------------------


def _outcome(  # noqa: PLR0911 - one return per way a job ends, in the order they are checked
    owner: JSON | None, launcher: JSON | None, time_limit: str
) -> State | None:
    """The end state, when the owner says it is over (or the launcher says how it ended)."""
    conds = _conditions(owner)
    succeeded = bool({"Complete", "SuccessCriteriaMet", "Completed"} & set(conds))
    failed_cond = next((conds[t] for t in ("FailureTarget", "Failed") if t in conds), None)
    if not succeeded and failed_cond is None:
        return None
    name = (launcher or {}).get("metadata", {}).get("name")
    inits = _statuses(launcher or {}, "initContainerStatuses")
    mains = _statuses(launcher or {}, "containerStatuses")
    main = _terminated(mains.get("launcher"))
    pod_reason = ((launcher or {}).get("status") or {}).get("reason")
    if pod_reason == "DeadlineExceeded" or (failed_cond or {}).get("reason") == "DeadlineExceeded":
        return State(
            FAILED,
            f"the job ran past its time limit ({time_limit}) and was stopped",
            launcher_pod=name,
            code=exitcodes.TIME_LIMIT,
        )
    for cname, status in inits.items():
        done = _terminated(status)
        if done and done.get("exitCode") not in (0, None) and cname != "own-workers":
            why, more = verdict(str(done.get("message") or ""))
            why = why or str(done.get("reason") or "")
            if why.startswith("preflight: ") and "not found in the pod" in why:
                why += "; for an image without the k8smpi tools, submit with --no-preflight"
            return State(
                FAILED,
                f"the {cname} exited {done.get('exitCode')} before the script ran"
                + (f": {why}" if why else ""),
                launcher_pod=name,
                code=exitcodes.NOT_RUN,
                more=more,
            )
    if main is not None and main.get("exitCode") is not None:
        code = int(main["exitCode"])
        # output_ready: a script that ran and ended before anyone looked still has its log.
        if code == 0 and succeeded:
            return State(
                SUCCEEDED, "the batch script exited 0", launcher_pod=name, code=0, output_ready=True
            )
        return State(
            FAILED,
            f"the batch script exited {code}",
            launcher_pod=name,
            code=code,
            output_ready=True,
        )
    if succeeded:  # pragma: no cover - a Job completes only through its pod
        return State(SUCCEEDED, "the job completed", launcher_pod=name, code=0)
    message = readiness.one_line((failed_cond or {}).get("message") or "", limit=300)
    reason = (failed_cond or {}).get("reason") or "Failed"
    return State(
        FAILED,
        f"the job failed before the script ran ({reason}{': ' + message if message else ''})",
        launcher_pod=name,
        code=exitcodes.NOT_RUN,
    )


def _ending(launcher: JSON | None, main: JSON) -> str | None:
    """What ended in the launcher pod (the script, the waiter before it, or the pod: its
    deadline), if anything."""
    name = pod_name(launcher) if launcher else "-"
    done = _terminated(main)
    if done:
        return f"the batch script exited {done.get('exitCode')} in {name}"
    for cname, status in _statuses(launcher or {}, "initContainerStatuses").items():
        done = _terminated(status)
        if done and done.get("exitCode") not in (0, None) and cname != "own-workers":
            return f"the {cname} exited {done.get('exitCode')} in {name}"
    status = (launcher or {}).get("status") or {}
    if status.get("phase") in ("Failed", "Succeeded"):
        reason = f" ({status['reason']})" if status.get("reason") else ""
        return f"{name} {str(status['phase']).lower()}{reason}"
    return None


def assess(  # noqa: PLR0911 - one return per stage of a job's life, in order
    owner: JSON | None,
    pods: list[JSON],
    *,
    workers: int,
    queue_name: str | None = None,
    time_limit: str = "",
) -> State:
    """Where the job stands (pure). ``owner``: the launcher Job or the JobSet (None: gone)."""
    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    launcher = launcher_of(live) or launcher_of(pods)
    over = _outcome(owner, launcher, time_limit)
    if over is not None:
        return over
    worker_pods = sorted((p for p in live if _role(p) == "worker"), key=pod_name)
    placed = [p for p in worker_pods if _placed(p)]
    base: dict[str, Any] = {"workers_placed": len(placed), "workers_total": workers}
    name = pod_name(launcher) if launcher else None
    if owner is None:
        return State(FAILED, "the job is gone (deleted)", code=exitcodes.NOT_RUN, **base)
    suspended = bool((owner.get("spec") or {}).get("suspend"))
    gated = [p for p in live if _gated(p)]
    queue_text = f" in queue {queue_name}" if queue_name else ""
    if suspended and not placed:
        return State(
            QUEUED,
            f"waiting for Kueue to admit the whole job{queue_text} (no pod is created until "
            "its quota fits)",
            **base,
        )
    if gated and not placed:
        return State(
            QUEUED,
            f"Kueue holds all {len(live)} pods{queue_text} until the whole job fits its quota; "
            "none is placed",
            **base,
        )
    main = _statuses(launcher or {}, "containerStatuses").get("launcher") or {}
    ending = _ending(launcher, main)
    if ending is not None:
        # The sidecar releases the workers as soon as the script (or the waiter) ends, before
        # the Job says it is over: workers gone now are not a placement problem.
        return State(
            ENDING,
            ending,
            launcher_pod=name,
            output_ready=_terminated(main) is not None,
            **base,
        )
    rows = [
        Row(pod_name(p), readiness.phase(p), readiness.why_not_ready(p))
        for p in (*worker_pods, *([launcher] if launcher else []))
        if not _placed(p)
    ]
    if len(worker_pods) < workers:
        rows.append(Row(f"({workers - len(worker_pods)} more)", "-", "worker pods not created yet"))
    if rows:
        # Room for the scheduler's reasons past "0/5 nodes are available: 1 node(s) had
        # untolerated taint(s), " (a cluster with tainted nodes says that first).
        detail = f"{len(placed)}/{workers} workers placed; pending: {pending(rows, why_limit=130)}"
        return State(PLACING, detail, rows=tuple(rows), launcher_pod=name, **base)
    if launcher is None:
        return State(STARTING, "all workers placed; the launcher pod is being created", **base)
    if "running" in (main.get("state") or {}):
        return State(
            RUNNING,
            f"the batch script runs in {name}",
            launcher_pod=name,
            output_ready=True,
            **base,
        )
    trouble = readiness.container_trouble(launcher)
    if trouble is not None:
        return State(
            STARTING,
            f"{name}: {trouble[0]}",
            rows=(Row(name or "-", readiness.phase(launcher), trouble[0], trouble[1]),),
            launcher_pod=name,
            **base,
        )
    return State(
        STARTING,
        f"all {workers} workers placed; the waiter checks them (Ready, DNS, exec) in {name}",
        launcher_pod=name,
        **base,
    )


# -- keeping it current ------------------------------------------------------------------------


@dataclass(frozen=True)
class Collection:
    """A collection to list and watch (satisfies the waiter's watch :class:`Listing`)."""

    collection: str
    params: dict[str, str | int | bool] = field(default_factory=dict)

    def path(self) -> str:
        return self.collection

    def list_params(self) -> dict[str, str | int | bool]:
        return dict(self.params)


@dataclass(frozen=True)
class Event:
    """A change: which watch it came from, and the message."""

    source: str
    message: object


class _Tagged(queue.Queue[object]):
    """A queue that wraps each message of one watch with its source, into a shared queue."""

    def __init__(self, source: str, out: queue.Queue[Event]) -> None:
        super().__init__()
        self.source = source
        self.shared = out

    def put(self, item: object, block: bool = True, timeout: float | None = None) -> None:
        self.shared.put(Event(self.source, item), block, timeout)


class Watcher:
    """The owner and the pods of one job, kept current by two list + watch threads."""

    def __init__(
        self, pods_api: Api, owner_api: Api, *, namespace: str, job: str, owner_path: str
    ) -> None:
        self.events: queue.Queue[Event] = queue.Queue()
        far = 1e18  # the watches run until stopped
        self.pods = PodCache()
        self.owners = PodCache()
        selector = f"{shared.JOB_LABEL}={job}"
        collection, _, name = owner_path.rpartition("/")
        self._threads = [
            PodWatch(
                pods_api,
                Collection(f"/api/v1/namespaces/{namespace}/pods", {"labelSelector": selector}),
                _Tagged("pods", self.events),
                deadline=far,
            ),
            PodWatch(
                owner_api,
                Collection(collection, {"fieldSelector": f"metadata.name={name}"}),
                _Tagged("owner", self.events),
                deadline=far,
            ),
        ]
        self.trouble: K8smpiError | None = None
        self.synced: set[str] = set()
        #: Launcher pods as last seen before they were deleted: their exit status stays known
        #: (a JobSet deletes its failed launcher's pod with the rest).
        self.departed: dict[str, JSON] = {}

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        for t in self._threads:
            t.stop()

    def apply(self, event: Event) -> None:
        """Fold one event into the caches; a Fatal one raises its error."""
        cache = self.pods if event.source == "pods" else self.owners
        msg = event.message
        if isinstance(msg, Synced):
            cache.replace(msg.pods)
            self.synced.add(event.source)
            self.trouble = None
        elif isinstance(msg, Changed):
            cache.apply(msg.kind, msg.pod)
            if msg.kind == "DELETED" and event.source == "pods" and _role(msg.pod) == "launcher":
                self.departed[pod_name(msg.pod)] = msg.pod
            self.trouble = None
        elif isinstance(msg, Trouble):
            self.trouble = msg.error
        elif isinstance(msg, Fatal):
            raise msg.error

    @property
    def ready(self) -> bool:
        return self.synced == {"pods", "owner"}

    def all_pods(self) -> list[JSON]:
        """The pods now, and the launcher pods already deleted (last seen state)."""
        now = self.pods.values()
        names = {pod_name(p) for p in now}
        return now + [p for n, p in self.departed.items() if n not in names]

    @property
    def owner(self) -> JSON | None:
        values = self.owners.values()
        return values[0] if values else None


class LogCopier(threading.Thread):
    """Copy one container's log (``follow=true``) to ``out`` as it arrives."""

    def __init__(
        self, api: Api, namespace: str, pod: str, out: BinaryIO, container: str = "launcher"
    ) -> None:
        super().__init__(name=f"logs-{pod}", daemon=True)
        self.api = api
        self.path = f"/api/v1/namespaces/{namespace}/pods/{pod}/log"
        self.params: dict[str, str | int | bool] = {"container": container, "follow": True}
        self.out = out
        self.error: K8smpiError | None = None
        self.copied = 0

    def run(self) -> None:
        try:
            for chunk in self.api.stream(self.path, self.params):
                self.out.write(chunk)
                self.out.flush()
                self.copied += len(chunk)
        except K8smpiError as e:
            self.error = e
        except OSError as e:  # stdout closed
            logger.debug("log copy stopped: %s", e)
