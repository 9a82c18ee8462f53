"""``k8smpi-job own-workers``: the launcher's sidecar that ties the workers' life to the job.

It runs as a native sidecar (an init container with ``restartPolicy: Always``) of the launcher
pod in the seed shape:

1. at start, it gives the worker StatefulSet an ownerReference to the launcher Job (found in its
   own pod's ownerReferences), so the garbage collector deletes the workers whenever the Job is
   deleted -- by ``k8smpi-job delete``, by the Job's ``ttlSecondsAfterFinished``, by hand;
2. then it sleeps until the kubelet stops it (SIGTERM), which happens when the batch script has
   ended (sidecars are stopped after the main container), when the Job fails or passes its
   deadline, or when the pod is deleted;
3. on SIGTERM it deletes the StatefulSet -- the workers' GPUs go back at once, not when the Job
   is deleted -- unless the pod is being evicted or preempted (condition ``DisruptionTarget``):
   then the Job starts another launcher pod, which needs the workers.

Needs ``pods: get`` (its own pod) and ``statefulsets: get, patch, delete`` on that one
StatefulSet (the launcher Role grants exactly that). Exit 0 after releasing; API failures are
retried until the kubelet's grace period is nearly over.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from k8smpi_runtime.errors import ApiError, K8smpiError, NotFoundError, TransportError
from k8smpi_runtime.job import applying, exitcodes

if TYPE_CHECKING:
    from collections.abc import Callable

    from k8smpi_runtime.kube.rest import Api

logger = logging.getLogger(__name__)
PROG = "k8smpi-job own-workers"
JSON = dict[str, Any]
#: How long a release may retry after SIGTERM (the pod's default grace period is 30 s).
RELEASE_WITHIN = 20.0


def _say(text: str) -> None:
    sys.stderr.write(f"{PROG}: {text}\n")
    sys.stderr.flush()


def retrying(fn: Callable[[], JSON], *, within: float, what: str) -> JSON:
    """``fn()``, retried on transport errors and 429/5xx for ``within`` seconds."""
    deadline = time.monotonic() + within
    delay = 0.2
    while True:
        try:
            return fn()
        except (TransportError, ApiError) as e:
            transient = (isinstance(e, TransportError) and e.retryable) or (
                isinstance(e, ApiError) and e.transient
            )
            if not transient or time.monotonic() + delay > deadline:
                raise
            logger.debug("%s: %s; retrying in %.1fs", what, e, delay)
            time.sleep(delay)
            delay = min(delay * 2, 3.0)


def job_owner(pod: JSON) -> JSON:
    for ref in (pod.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == "Job" and ref.get("controller"):
            return dict(ref)
    raise K8smpiError(
        f"pod {(pod.get('metadata') or {}).get('name')} is not a Job's pod: nothing to tie the "
        "workers to"
    )


def disrupted(pod: JSON) -> bool:
    """Being evicted or preempted: the Job will start another launcher pod."""
    return any(
        c.get("type") == "DisruptionTarget" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


def adopt(api: Api, namespace: str, statefulset: str, owner: JSON) -> bool:
    """Add the ownerReference (once); True when it was added now."""
    path = f"{applying.collection('StatefulSet', namespace)}/{statefulset}"
    sts = retrying(lambda: api.get(path), within=60, what=f"reading {statefulset}")
    refs = (sts.get("metadata") or {}).get("ownerReferences") or []
    if any(r.get("uid") == owner["uid"] for r in refs):
        return False
    ref = {k: owner[k] for k in ("apiVersion", "kind", "name", "uid")}
    body = {
        "metadata": {
            "ownerReferences": [*refs, ref],
            # Fails (409) if someone changed them meanwhile: read again then.
            "resourceVersion": sts["metadata"]["resourceVersion"],
        }
    }
    retrying(
        lambda: api.request("PATCH", path, body=body, content_type="application/merge-patch+json"),
        within=60,
        what=f"owning {statefulset}",
    )
    return True


def release(api: Api, namespace: str, statefulset: str, pod_name: str) -> str:
    """On SIGTERM: delete the workers unless this pod is only being disrupted; what it did."""
    pod_path = f"/api/v1/namespaces/{namespace}/pods/{pod_name}"
    try:
        pod = retrying(lambda: api.get(pod_path), within=RELEASE_WITHIN / 2, what="reading pod")
    except NotFoundError:
        pod = {}
    if disrupted(pod):
        return "this pod is being disrupted: the workers stay for the next launcher pod"
    path = f"{applying.collection('StatefulSet', namespace)}/{statefulset}"
    try:
        retrying(
            lambda: api.request("DELETE", path, body={"propagationPolicy": "Background"}),
            within=RELEASE_WITHIN,
            what=f"deleting {statefulset}",
        )
    except NotFoundError:
        return f"StatefulSet {statefulset} is already gone"
    return f"deleted StatefulSet {statefulset}: the workers are released"


def main(
    api: Api,
    namespace: str,
    statefulset: str,
    *,
    pod: str | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Own the workers, wait for SIGTERM (or ``stop``), release them; the exit status."""
    pod_name = pod or os.environ.get("K8SMPI_POD_NAME")
    if not pod_name:
        raise K8smpiError(
            "which pod is this? set K8SMPI_POD_NAME from the downward API (metadata.name) or "
            "pass --pod"
        )
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _s, _f: stop.set())
    pod_path = f"/api/v1/namespaces/{namespace}/pods/{pod_name}"
    me = retrying(lambda: api.get(pod_path), within=60, what=f"reading pod {pod_name}")
    owner = job_owner(me)
    if adopt(api, namespace, statefulset, owner):
        _say(f"StatefulSet {statefulset} now belongs to Job {owner['name']}")
    else:
        _say(f"StatefulSet {statefulset} already belongs to Job {owner['name']}")
    while not stop.wait(3600):
        pass
    _say(release(api, namespace, statefulset, pod_name))
    return exitcodes.OK
