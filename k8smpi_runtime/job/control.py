"""``status``, ``logs`` and ``delete`` on a job name (what squeue, sacct's log and scancel do).

A job is found by its label (``k8smpi.dev/job=<name>``) whatever its shape: the launcher Job
``<name>-launcher`` (seed shape) or the JobSet ``<name>``, and its pods.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from k8smpi_runtime.errors import NotFoundError
from k8smpi_runtime.job import applying, exitcodes, following, shared
from k8smpi_runtime.selection import pod_name
from k8smpi_runtime.waitfor import readiness

if TYPE_CHECKING:
    from k8smpi_runtime.kube.rest import Api

JSON = dict[str, Any]


@dataclass(frozen=True)
class Found:
    name: str
    shape: str
    owner: JSON | None
    pods: list[JSON]
    workers: int
    queue: str | None

    def state(self) -> following.State:
        return following.assess(self.owner, self.pods, workers=self.workers, queue_name=self.queue)


def _labels(obj: JSON) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _pod_template_labels(template: JSON) -> dict[str, str]:
    return dict((template.get("metadata") or {}).get("labels") or {})


def _from_objects(name: str, objects: dict[str, list[JSON]]) -> Found:
    """What ``find`` returned, read as one job."""
    pods = objects.get("Pod", [])
    jobsets = objects.get("JobSet", [])
    launchers = [o for o in objects.get("Job", []) if o["metadata"]["name"].endswith("-launcher")]
    workers = 0
    queue = None
    if jobsets:
        owner: JSON | None = jobsets[0]
        shape = "jobset"
        queue = _labels(jobsets[0]).get(shared.KUEUE_QUEUE_LABEL)
        for rj in jobsets[0]["spec"].get("replicatedJobs") or []:
            if rj.get("name") == "cnode":
                workers = int(rj["template"]["spec"].get("parallelism") or 0)
    else:
        owner = launchers[0] if launchers else None
        shape = "statefulset"
        for sts in objects.get("StatefulSet", []):
            workers = int(sts["spec"].get("replicas") or 0)
            queue = _pod_template_labels(sts["spec"]["template"]).get(shared.KUEUE_QUEUE_LABEL)
    if not workers:
        workers = sum(1 for p in pods if _labels(p).get(shared.ROLE_LABEL) == "worker")
    return Found(name, shape, owner, pods, workers, queue)


def find(api: Api, namespace: str, name: str) -> Found:
    objects = applying.find(api, namespace, name)
    if not objects:
        raise applying.NoSuchJob(f"no job {name} in namespace {namespace}")
    return _from_objects(name, objects)


def _jobs_in(api: Api, namespace: str) -> list[Found]:
    """Every k8smpi-job job in the namespace, by name."""
    found: dict[str, dict[str, list[JSON]]] = {}
    for kind in (*applying.DELETE_ORDER, "Pod"):
        try:
            items, _ = api.list(
                applying.collection(kind, namespace), {"labelSelector": shared.JOB_LABEL}
            )
        except NotFoundError:
            continue
        for obj in items:
            job = _labels(obj).get(shared.JOB_LABEL)
            if job:
                found.setdefault(job, {}).setdefault(kind, []).append(obj)
    return [_from_objects(name, objs) for name, objs in sorted(found.items())]


def _age(obj: JSON | None) -> str:
    import datetime as dt  # noqa: PLC0415

    stamp = ((obj or {}).get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "-"
    try:
        then = dt.datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return "-"
    seconds = int((dt.datetime.now(dt.timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines) + "\n"


def status(api: Api, namespace: str, name: str | None, out: TextIO) -> int:
    """One job in detail (state, then each pod), or one line per job in the namespace."""
    if name is None:
        jobs = _jobs_in(api, namespace)
        if not jobs:
            out.write(f"no jobs in namespace {namespace}\n")
            return exitcodes.OK
        rows = [["JOB", "SHAPE", "STATE", "WORKERS", "AGE", "DETAIL"]]
        for job in jobs:
            state = job.state()
            rows.append(
                [
                    job.name,
                    job.shape,
                    state.phase,
                    f"{state.workers_placed}/{job.workers}",
                    _age(job.owner),
                    readiness.one_line(state.detail, limit=100),
                ]
            )
        out.write(_table(rows))
        return exitcodes.OK
    job = find(api, namespace, name)
    state = job.state()
    queue = f", queue {job.queue}" if job.queue else ""
    out.write(f"job {job.name} ({job.shape}{queue}) in namespace {namespace}: {state.phase}\n")
    out.write(f"  {state.detail}\n")
    if state.more:
        out.write(state.more + "\n")
    if job.pods:
        rows = [["POD", "ROLE", "PHASE", "NODE", "WHY"]]
        for pod in sorted(
            job.pods, key=lambda p: (_labels(p).get(shared.ROLE_LABEL, ""), pod_name(p))
        ):
            placed = (pod.get("spec") or {}).get("nodeName") or "-"
            if readiness.phase(pod) == "Succeeded":
                why = ""  # nothing to explain (a sidecar's exit would read as the reason)
            elif readiness.phase(pod) in ("Failed", "Terminating"):
                why = readiness.why_ended(pod)
            elif readiness.condition(pod, "Ready").get("status") != "True":
                why = readiness.why_not_ready(pod)
            else:
                why = ""
            rows.append(
                [
                    pod_name(pod),
                    _labels(pod).get(shared.ROLE_LABEL, "-"),
                    readiness.phase(pod),
                    placed,
                    readiness.one_line(why, limit=120),
                ]
            )
        out.write(_table(rows))
    return exitcodes.OK


def logs(
    api: Api,
    namespace: str,
    name: str,
    *,
    follow: bool = False,
    waiter: bool = False,
    tail: int | None = None,
    out: Any = None,
) -> int:
    """The launcher's output (or its waiter's) to stdout."""
    job = find(api, namespace, name)
    launcher = following.launcher_of(job.pods)
    if launcher is None:
        raise applying.NoSuchJob(
            f"job {name} has no launcher pod (yet, or any more): k8smpi-job status {name}"
        )
    pod = pod_name(launcher)
    params: dict[str, str | int | bool] = {"container": "waiter" if waiter else "launcher"}
    if follow:
        params["follow"] = True
    if tail is not None:
        params["tailLines"] = tail
    sink = out if out is not None else sys.stdout.buffer
    for chunk in api.stream(f"/api/v1/namespaces/{namespace}/pods/{pod}/log", params):
        sink.write(chunk)
        sink.flush()
    return exitcodes.OK


def delete(api: Api, namespace: str, name: str, *, wait: bool = True) -> int:
    """Cancel the job and delete all of it (waiting until its pods are gone, unless told not)."""
    if not applying.find(api, namespace, name):
        raise applying.NoSuchJob(f"no job {name} in namespace {namespace}")
    deleted = applying.delete_job(api, namespace, name, wait=wait)
    gone = "; nothing of it is left" if wait else ""
    objects = f"{len(deleted)} object{'s' if len(deleted) != 1 else ''}"
    sys.stderr.write(f"k8smpi-job: deleted job {name} ({objects}){gone}\n")
    return exitcodes.OK
