"""Retries of transient API failures while kubexec connects: :func:`call`.

Transient: connection refused or reset, a timeout, a DNS failure, HTTP 429 (honouring
``Retry-After``) and 5xx -- each before any byte of the request reached the server, or
answered by it with an HTTP status. Permanent, never retried: 401/403/404 and every other
answer, TLS verification failures, and an exec request that went out without an HTTP answer
coming back or anything after the exec stream is open (the command may be running: it is
not retried, ever; the remote wrapper also refuses a second start of a session id).

The budget follows ssh's options: ``-o ConnectionAttempts=N`` tries in all (default
:data:`DEFAULT_ATTEMPTS`), within ``-o ConnectTimeout=S`` seconds for the whole connect phase
when given. tenacity is imported only when a first try has failed: the common path pays nothing.
"""

from __future__ import annotations

import socket
import ssl
import time

from k8smpi_runtime import lazylog
from k8smpi_runtime.errors import ApiError, TransportError
from k8smpi_runtime.records import Record

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    import tenacity

    T = TypeVar("T")

logger = lazylog.getLogger(__name__)

DEFAULT_ATTEMPTS = 5
"""Tries when ``-o ConnectionAttempts`` is not given (ssh's 1 would make a 429 fatal)."""
MAX_WAIT = 5.0
"""The longest backoff between two tries, Retry-After included."""


class Policy(Record):
    """How often and how long the connect phase may try."""

    attempts: int = DEFAULT_ATTEMPTS
    deadline: float | None = None
    """Seconds from the start of the connect phase after which no new try begins."""
    started: float = 0.0
    """``time.monotonic()`` at the start of the connect phase."""

    def remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return max(0.0, self.deadline - (time.monotonic() - self.started))


def transient(error: BaseException) -> bool:
    """Whether ``error`` is worth another try."""
    if isinstance(error, ApiError):
        return error.transient
    if not isinstance(error, TransportError) or not error.retryable:
        return False
    cause = error.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return False
    return isinstance(cause, ConnectionError | TimeoutError | socket.timeout | socket.gaierror)


def call(fn: Callable[[], T], policy: Policy, *, what: str) -> T:
    """``fn()``, tried again on transient failures within ``policy``."""
    try:
        return fn()
    except (ApiError, TransportError) as e:
        if not transient(e) or policy.attempts <= 1 or policy.remaining() == 0:
            raise
        pause = backoff(e, 1)
        logger.debug("%s: try 1 failed: %s; next in %.2fs", what, e, pause)
    time.sleep(min(pause, policy.remaining() or pause))
    return _retry(fn, policy, what)


def backoff(error: BaseException | None, failed_tries: int) -> float:
    """Seconds to wait after ``failed_tries`` tries, the last failing with ``error``."""
    if isinstance(error, ApiError) and error.retry_after is not None:
        return min(max(error.retry_after, 0.0), MAX_WAIT)
    # Exponential with full jitter: many agents retrying together do not stay in step.
    import random  # noqa: PLC0415 - only a failed try needs it

    ceiling = min(MAX_WAIT, 0.2 * 2 ** (failed_tries - 1))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not cryptography


def _retry(fn: Callable[[], T], policy: Policy, what: str) -> T:
    import tenacity  # noqa: PLC0415 - only a failed first try pays for it

    stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(policy.attempts - 1)
    remaining = policy.remaining()
    if remaining is not None:
        stop = stop | tenacity.stop_after_delay(remaining)

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        pause = backoff(error, state.attempt_number + 1)
        logger.debug(
            "%s: try %d failed: %s; next in %.2fs", what, state.attempt_number + 1, error, pause
        )
        return pause

    retrying = tenacity.Retrying(
        stop=stop, wait=wait, retry=tenacity.retry_if_exception(transient), reraise=True
    )
    return retrying(fn)
