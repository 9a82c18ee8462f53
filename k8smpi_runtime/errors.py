"""The package's own error hierarchy.

Tools catch :class:`K8smpiError` and print its message as one line; the HTTP client and the
websocket library underneath can change without the tools noticing. Response bodies are cut
short so a misbehaving server cannot flood a terminal.
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from typing import Any

BODY_LIMIT = 256


class K8smpiError(Exception):
    """A known failure: its message is one line a user can act on."""


class ConfigError(K8smpiError):
    """No usable credentials, or a kubeconfig that cannot be read."""


class TransportError(K8smpiError):
    """The API server could not be reached (refused, DNS, TLS, timeout, stream cut).

    ``retryable=False`` when trying again cannot help or could do harm: the server's certificate
    is not trusted (a TLS verification failure stays one), or a request that may already have
    taken effect (an exec whose upgrade went out without an answer coming back).
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class ApiError(K8smpiError):
    """The API server answered with an error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        reason: str = "",
        body: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.body = body or {}
        self.retry_after = retry_after

    @property
    def transient(self) -> bool:
        """Worth retrying: throttled or a server-side failure."""
        return self.status == 429 or self.status >= 500


class UnauthorizedError(ApiError):
    """401: the credentials were rejected (expired token, wrong CA...)."""


class ForbiddenError(ApiError):
    """403: authenticated, but RBAC does not allow the request."""


class NotFoundError(ApiError):
    """404."""


class ConflictError(ApiError):
    """409: someone else changed the object; re-read and retry."""


class GoneError(ApiError):
    """410: a watch's resourceVersion is too old; list again."""


_BY_STATUS: dict[int, type[ApiError]] = {
    401: UnauthorizedError,
    403: ForbiddenError,
    404: NotFoundError,
    409: ConflictError,
    410: GoneError,
}


def api_error(
    status: int, body: dict[str, Any] | None, text: str = "", retry_after: float | None = None
) -> ApiError:
    """The error for an HTTP status and its body (a ``metav1.Status`` when the server sent one)."""
    cls = _BY_STATUS.get(status, ApiError)
    status_body = body if body and body.get("kind") == "Status" else None
    message = (status_body or {}).get("message") or text.strip() or f"HTTP {status}"
    reason = (status_body or {}).get("reason", "")
    return cls(
        message[:BODY_LIMIT].replace("\n", " "),
        status=status,
        reason=reason,
        body=status_body,
        retry_after=retry_after,
    )
