"""One list + watch of the candidate pods, in a thread, as messages on a queue.

Requests: one paginated list (``page_size`` pods a page), then one watch from the list's
resourceVersion. When the stream ends or breaks, the watch resumes from the last
resourceVersion seen (events and bookmarks); only a 410 Gone (the version is too old, e.g. after
an apiserver restart) lists again. Never a request per pod. Transient failures (connection
refused or cut, 429, 5xx) are retried with backoff and reported as :class:`Trouble`; a refusal
(401/403) on the first list, or one that lasts longer than :data:`DENIED_GRACE` later, is
:class:`Fatal`, as is any other API error.

:class:`PodCache` keeps the pods by uid, so a pod recreated under the same name is a different
pod; ``managedFields`` are dropped to keep memory small at scale.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from k8smpi_runtime.errors import (
    ApiError,
    ForbiddenError,
    GoneError,
    K8smpiError,
    TransportError,
    UnauthorizedError,
)

if TYPE_CHECKING:
    import queue
    from collections.abc import Callable, Iterator, Mapping

    from k8smpi_runtime.selection import Pod

logger = logging.getLogger(__name__)

#: Seconds a 401/403 may last after a successful list before it is fatal (apiserver restarts).
DENIED_GRACE = 15.0
#: The longest watch request; the watch resumes after it (one request more per period).
WATCH_PERIOD = 300
PAGE_SIZE = 5000


class PodApi(Protocol):
    """What the watch needs from :class:`k8smpi_runtime.kube.rest.Api`."""

    def list(
        self, path: str, params: Mapping[str, str | int | bool] | None = None, *, limit: int = 500
    ) -> tuple[list[Pod], str]: ...

    def watch(
        self,
        path: str,
        params: Mapping[str, str | int | bool] | None = None,
        *,
        resource_version: str,
        timeout_seconds: int = 300,
    ) -> Iterator[dict[str, Any]]: ...


class Listing(Protocol):
    """What to list and watch: a collection path and its query (a selection's Target, or any
    other collection, e.g. k8smpi-job's Job or JobSet by name)."""

    def path(self) -> str: ...

    def list_params(self) -> dict[str, str | int | bool]: ...


# -- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Synced:
    """A complete list: replace the cache."""

    pods: list[Pod]
    resource_version: str


@dataclass(frozen=True)
class Changed:
    """A watch event: ADDED, MODIFIED or DELETED."""

    kind: str
    pod: Pod


@dataclass(frozen=True)
class Trouble:
    """The API is failing for now (retrying); ``error`` says how."""

    error: K8smpiError


@dataclass(frozen=True)
class Fatal:
    error: K8smpiError


@dataclass
class Counters:
    lists: int = 0
    watches: int = 0
    relists: int = 0
    events: int = 0


# -- cache -------------------------------------------------------------------------------------


@dataclass
class PodCache:
    pods: dict[str, Pod] = field(default_factory=dict)

    @staticmethod
    def _key(pod: Pod) -> str:
        meta = pod.get("metadata") or {}
        return str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}")

    @staticmethod
    def _slim(pod: Pod) -> Pod:
        (pod.get("metadata") or {}).pop("managedFields", None)
        return pod

    def replace(self, pods: list[Pod]) -> None:
        self.pods = {self._key(p): self._slim(p) for p in pods}

    def apply(self, kind: str, pod: Pod) -> None:
        if kind == "DELETED":
            self.pods.pop(self._key(pod), None)
        elif kind in ("ADDED", "MODIFIED"):
            self.pods[self._key(pod)] = self._slim(pod)

    def values(self) -> list[Pod]:
        return list(self.pods.values())


# -- the watch thread --------------------------------------------------------------------------


def retry_delay(failures: int) -> float:
    """0.2 s doubling to 3 s, +-20%: an apiserver restart is noticed within seconds."""
    delay: float = min(0.2 * 2 ** max(0, failures - 1), 3.0)
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter


class PodWatch(threading.Thread):
    """List, then watch, until :meth:`stop`; messages go to ``out``.

    A daemon thread: a watch blocked on a quiet stream does not keep the process alive.
    """

    def __init__(
        self,
        api: PodApi,
        target: Listing,
        out: queue.Queue[object],
        *,
        deadline: float,
        page_size: int = PAGE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(name="pod-watch", daemon=True)
        self.api = api
        self.target = target
        self.out = out
        self.deadline = deadline
        self.page_size = page_size
        self.clock = clock
        self.counters = Counters()
        self._stop = threading.Event()
        self._synced_once = False
        self._denied_since: float | None = None
        #: The last resourceVersion seen (list, event or bookmark); None: list (again).
        self.version: str | None = None

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> None:
        try:
            self._loop()
        except Exception as e:  # reported to the main thread, which decides
            logger.debug("pod watch crashed", exc_info=True)
            self.out.put(Fatal(K8smpiError(f"pod watch failed: {type(e).__name__}: {e}")))

    def _loop(self) -> None:
        path, params = self.target.path(), self.target.list_params()
        failures = 0
        while not self._stop.is_set():
            try:
                if self.version is None:
                    self.counters.lists += 1
                    pods, version = self.api.list(path, params, limit=self.page_size)
                    self._synced_once = True
                    self._denied_since = None
                    self.version = version
                    self.out.put(Synced(pods, version))
                failures = 0
                self._watch(path, params, self.version)
            except GoneError:
                logger.debug("watch: resourceVersion %s too old; listing again", self.version)
                self.counters.relists += 1
                self.version = None
            except (TransportError, ApiError) as e:
                if not self._retryable(e):
                    self.out.put(Fatal(e))
                    return
                failures += 1
                self.out.put(Trouble(e))
                logger.debug("pod watch: %s; retry %d from %s", e, failures, self.version)
                self._stop.wait(retry_delay(failures))

    def _retryable(self, error: K8smpiError) -> bool:
        if isinstance(error, TransportError):
            return error.retryable  # an untrusted certificate stays untrusted
        if isinstance(error, UnauthorizedError | ForbiddenError):
            if not self._synced_once:
                return False
            now = self.clock()
            self._denied_since = self._denied_since or now
            return now - self._denied_since < DENIED_GRACE
        return isinstance(error, ApiError) and bool(error.transient)

    def _watch(self, path: str, params: Mapping[str, str | int | bool], version: str) -> None:
        """Watch from ``version`` until the stream ends, keeping :attr:`version` current."""
        remaining = max(1.0, self.deadline - self.clock())
        timeout = int(min(WATCH_PERIOD, remaining + 5)) + 1
        self.counters.watches += 1
        events = self.api.watch(path, params, resource_version=version, timeout_seconds=timeout)
        for event in events:
            if self._stop.is_set():
                return
            obj = event.get("object") or {}
            self.version = str((obj.get("metadata") or {}).get("resourceVersion") or self.version)
            kind = str(event.get("type"))
            if kind == "BOOKMARK":
                continue
            self.counters.events += 1
            self._denied_since = None
            self.out.put(Changed(kind, obj))
