"""``k8smpi-job submit``: create the job, follow it, stream its output, clean up, exit with it.

1. Check what the job needs before creating anything: the namespace, the JobSet API for that
   shape, the LocalQueue for ``--queue``.
2. Create every object (all or nothing) and give them an ownerReference to the launcher Job
   (or the JobSet): if this process dies, the garbage collector still removes them with it.
3. Follow: a progress line on stderr at each change (queued, the scheduler's reasons for each
   worker it cannot place, the waiter checking them, running); the launcher's output to stdout
   as it comes.
4. When the job is over: delete it (``--keep``: keep the finished launcher for ``status`` and
   ``logs``; the workers end anyway), and exit with the batch script's exit status, or a
   documented status saying why it never ran.

Ctrl-C (or SIGTERM) cancels: the job is deleted and submit waits until none of its pods is
left, then exits 130. A second Ctrl-C leaves at once (the deletion continues in the cluster).
"""

from __future__ import annotations

import contextlib
import queue
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from k8smpi_runtime.errors import ForbiddenError, K8smpiError, NotFoundError
from k8smpi_runtime.job import applying, exitcodes, following, pods, render

if TYPE_CHECKING:
    from collections.abc import Iterator

    from k8smpi_runtime.job.spec import JobSpec
    from k8smpi_runtime.kube.rest import Api

PROG = "k8smpi-job"
JSON = dict[str, Any]
#: After the job is over: how long the launcher's output may take to arrive in full.
DRAIN = 10.0
#: Seconds between two progress lines that only repeat the same state.
REPEAT = 30.0


class Cancelled(Exception):
    """SIGINT or SIGTERM during submit."""


class Unmet(K8smpiError):
    """What the job needs is not in the cluster (namespace, JobSet, LocalQueue)."""


class Reporter:
    """Progress lines on stderr: one per change, and now and then while nothing changes."""

    def __init__(self, stream: TextIO, *, quiet: bool, clock: Any = time.monotonic) -> None:
        self.stream = stream
        self.quiet = quiet
        self.clock = clock
        self.start = clock()
        self._last = ""
        self._last_at = float("-inf")

    def say(self, text: str) -> None:
        self.stream.write(f"{PROG}: {text}\n")
        self.stream.flush()

    def state(self, state: following.State) -> None:
        if self.quiet:
            return
        line = state.line()
        now = self.clock()
        if line == self._last and now - self._last_at < REPEAT:
            return
        self.say(f"{now - self.start:.0f}s {line}")
        self._last, self._last_at = line, now


def preflight(api: Api, spec: JobSpec) -> None:
    """What the job needs, checked before anything is created; K8smpiError when missing."""
    try:
        api.get(f"/api/v1/namespaces/{spec.namespace}")
    except NotFoundError:
        raise Unmet(f"no namespace {spec.namespace} (kubectl create namespace ...)") from None
    except ForbiddenError:
        pass  # may not read namespaces: creating the objects will tell
    if spec.shape == "jobset":
        try:
            api.get("/apis/jobset.x-k8s.io/v1alpha2")
        except NotFoundError:
            raise Unmet(
                "JobSet is not installed in this cluster (no jobset.x-k8s.io/v1alpha2): "
                "use --shape statefulset"
            ) from None
    if spec.queue:
        version = kueue_version(api)
        if version is None:
            raise Unmet(
                f"--queue {spec.queue}: Kueue is not installed in this cluster "
                "(no kueue.x-k8s.io API)"
            )
        queues = f"/apis/{version}/namespaces/{spec.namespace}/localqueues"
        try:
            api.get(f"{queues}/{spec.queue}")
        except NotFoundError:
            raise Unmet(
                f"--queue {spec.queue}: no LocalQueue {spec.queue} in namespace {spec.namespace}"
            ) from None
        if spec.shape == "statefulset" and _exists(api, f"{queues}/default"):
            raise Unmet(
                f"namespace {spec.namespace} has a LocalQueue named default: Kueue would queue "
                "the launcher Job and the workers apart, not as one group; use --shape jobset"
            )


def _exists(api: Api, path: str) -> bool:
    try:
        api.get(path)
    except NotFoundError:
        return False
    return True


def kueue_version(api: Api) -> str | None:
    """``kueue.x-k8s.io/<preferred version>``, or None when Kueue is not installed."""
    try:
        group = api.get("/apis/kueue.x-k8s.io")
    except NotFoundError:
        return None
    preferred = (group.get("preferredVersion") or {}).get("groupVersion")
    return str(preferred) if preferred else None


@contextlib.contextmanager
def cancellable() -> Iterator[None]:
    """SIGINT and SIGTERM raise :class:`Cancelled` in the main thread while inside."""

    def handler(signum: int, frame: object) -> None:
        raise Cancelled(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def submit(api: Api, spec: JobSpec, *, keep: bool = False, quiet: bool = False) -> int:
    """Submit ``spec`` and follow it to the end; the exit status (see :mod:`.exitcodes`)."""
    report = Reporter(sys.stderr, quiet=quiet)
    preflight(api, spec)
    objects = render.manifests(spec)
    with cancellable():
        try:
            created = applying.create_all(api, objects)
        except applying.Taken as e:
            raise applying.JobExists(
                f"job {spec.name} already exists in namespace {spec.namespace} ({e}): "
                f"k8smpi-job status {spec.name}, or delete it with k8smpi-job delete {spec.name}"
            ) from e
        except Cancelled:
            report.say("interrupted; nothing was left behind")
            return exitcodes.INTERRUPTED
        owner = created[-1]
        applying.own(api, created, owner)
        queue_text = f", queue {spec.queue}" if spec.queue else ""
        report.say(
            f"submitted job {spec.name} to namespace {spec.namespace} ({spec.shape}: "
            f"{render.summary(spec)}{queue_text})"
        )
        try:
            state = follow(api, spec, applying.path_of(owner), report)
        except Cancelled:
            return cancel(api, spec, report)
        except K8smpiError:
            with contextlib.suppress(Cancelled, K8smpiError):
                report.say(f"following job {spec.name} failed; deleting it")
                applying.delete_job(api, spec.namespace, spec.name)
            raise
        try:
            finish(api, spec, state, keep=keep, report=report)
        except Cancelled:
            report.say("interrupted while deleting; the deletion continues in the cluster")
            return exitcodes.INTERRUPTED
    return state.code if state.code is not None else exitcodes.NOT_RUN


def follow(api: Api, spec: JobSpec, owner_path: str, report: Reporter) -> following.State:
    """Watch until the job is over, copying the launcher's output to stdout."""
    from k8smpi_runtime.kube.rest import Api as RestApi  # noqa: PLC0415

    # One connection per thread: the client is not thread-safe.
    clients = [RestApi(api.config) for _ in range(3)]
    watcher = following.Watcher(
        clients[0], clients[1], namespace=spec.namespace, job=spec.name, owner_path=owner_path
    )
    copiers: dict[str, following.LogCopier] = {}
    out = sys.stdout.buffer
    limit = pods.duration(spec.time_limit)
    watcher.start()
    try:
        state: following.State | None = None
        over_at: float | None = None
        last_trouble: str | None = None
        while True:
            try:
                event = watcher.events.get(timeout=1.0)
                watcher.apply(event)
                while True:  # fold everything already queued before judging
                    watcher.apply(watcher.events.get_nowait())
            except queue.Empty:
                pass
            if not watcher.ready:
                continue
            state = following.assess(
                watcher.owner,
                watcher.all_pods(),
                workers=spec.workers,
                queue_name=spec.queue,
                time_limit=limit,
            )
            trouble = str(watcher.trouble) if watcher.trouble is not None else None
            if trouble is not None and trouble != last_trouble:
                report.say(f"API trouble (retrying): {trouble}")
            last_trouble = trouble
            if state.output_ready and state.launcher_pod and state.launcher_pod not in copiers:
                copier = following.LogCopier(clients[2], spec.namespace, state.launcher_pod, out)
                copiers[state.launcher_pod] = copier
                copier.start()
            if not state.over:
                over_at = None
                report.state(state)
                continue
            # Over: give the pod watch a moment for the launcher's last status, then end.
            if over_at is None:
                over_at = time.monotonic()
                continue
            if time.monotonic() - over_at >= 1.0:
                break
        _drain(copiers, report)
        return state
    finally:
        watcher.stop()
        for c in clients:
            c.close()


def _drain(copiers: dict[str, following.LogCopier], report: Reporter) -> None:
    deadline = time.monotonic() + DRAIN
    for copier in copiers.values():
        copier.join(max(0.0, deadline - time.monotonic()))
        if copier.error is not None:
            report.say(f"the launcher's output could not be read: {copier.error}")


def finish(
    api: Api, spec: JobSpec, state: following.State, *, keep: bool, report: Reporter
) -> None:
    report.say(f"job {spec.name} {state.phase.lower()}: {state.detail}")
    if state.more:
        # The waiter's table of the pods it gave up on, as it wrote it.
        report.stream.write(state.more + "\n")
        report.stream.flush()
    if keep:
        if spec.shape == "statefulset":
            # The finished launcher stays (logs); the workers' GPUs go back now.
            with contextlib.suppress(NotFoundError):
                api.request(
                    "DELETE",
                    f"{applying.collection('StatefulSet', spec.namespace)}/{spec.names.workers}",
                    body={"propagationPolicy": "Background"},
                )
        report.say(
            f"kept for {pods.duration(spec.keep_for)}: k8smpi-job logs {spec.name}; "
            f"k8smpi-job delete {spec.name} when done"
        )
        return
    applying.delete_job(api, spec.namespace, spec.name)
    report.say(f"deleted job {spec.name}")


def cancel(api: Api, spec: JobSpec, report: Reporter) -> int:
    report.say(f"cancelling job {spec.name}: deleting it")
    try:
        applying.delete_job(api, spec.namespace, spec.name)
    except Cancelled:
        report.say("interrupted again; the deletion continues in the cluster")
        return exitcodes.INTERRUPTED
    report.say(f"cancelled; nothing of job {spec.name} is left")
    return exitcodes.INTERRUPTED
