"""kubexec's exit codes and the one-line messages for API refusals a user can act on."""

from __future__ import annotations

from k8smpi_runtime.errors import ForbiddenError, K8smpiError, UnauthorizedError

TYPE_CHECKING = False  # not typing's: see k8smpi_runtime/records.py
if TYPE_CHECKING:
    from k8smpi_runtime.errors import ApiError

EXIT_OK = 0
EXIT_FAILED = 255
"""ssh's code for everything that is not the remote command's own status: usage, credentials,
API refusals, a missing or not-Running pod, a cut stream, a status without an exit code, and
kubexec being interrupted (SIGINT/SIGTERM/SIGHUP)."""

RBAC_NEEDED = "kubexec needs pods: get, list and pods/exec: create, get"

# Compiled only for a refusal (re is one import more on every call's start otherwise).
_FORBIDDEN = (
    r'User "(?P<user>[^"]*)" cannot (?P<verb>\S+) resource "(?P<resource>[^"]+)"'
    r'(?: in API group "[^"]*")?(?: in the namespace "(?P<namespace>[^"]*)")?'
)


class AccessDenied(K8smpiError):
    """The API server refused a request kubexec needs (401/403)."""


def subject(user: str) -> str:
    """``system:serviceaccount:ns:name`` as "service account ns/name", others as "user X"."""
    prefix = "system:serviceaccount:"
    if user.startswith(prefix) and user.count(":") == 3:
        ns, _, name = user[len(prefix) :].partition(":")
        return f"service account {ns}/{name}"
    return f"user {user!r}"


def token_subject(token: str | None) -> str | None:
    """The ``sub`` claim of a JWT bearer token (service-account tokens are JWTs), unverified:
    only to name who was refused when the API server's message does not."""
    sub = _claims(token).get("sub")
    return sub if isinstance(sub, str) else None


def token_pod(token: str | None) -> tuple[str, str] | None:
    """``(namespace, pod name)`` a bound service-account token was issued for, unverified (the
    API server checks the token; this only says which pod to read kubexec's own labels from)."""
    k8s = _claims(token).get("kubernetes.io")
    if not isinstance(k8s, dict):
        return None
    pod = k8s.get("pod")
    namespace = k8s.get("namespace")
    name = pod.get("name") if isinstance(pod, dict) else None
    if isinstance(namespace, str) and isinstance(name, str) and namespace and name:
        return namespace, name
    return None


def _claims(token: str | None) -> dict[str, object]:
    if not token or token.count(".") != 2:
        return {}
    import base64  # noqa: PLC0415 - only refusals and in-cluster scopes need it
    import json  # noqa: PLC0415

    payload = token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return {}
    return claims if isinstance(claims, dict) else {}


def explain(
    error: ApiError, *, verb: str, resource: str, namespace: str, user: str | None = None
) -> K8smpiError:
    """A 401/403 rewritten to say what is missing; any other error unchanged.

    ``user`` (e.g. from :func:`token_subject`) names the subject when the server's message
    does not: the websocket upgrade's extra ``create`` check answers a bare "forbidden".
    """
    if isinstance(error, UnauthorizedError):
        return AccessDenied(
            f"the API server rejected kubexec's credentials ({error}); "
            "the token or certificate may have expired"
        )
    if not isinstance(error, ForbiddenError):
        return error
    import re  # noqa: PLC0415 - see _FORBIDDEN

    match = re.search(_FORBIDDEN, str(error))
    if match is None:
        who = subject(user) if user else "kubexec's credentials"
        return AccessDenied(
            f"{who} may not {verb} {resource} in namespace {namespace} ({RBAC_NEEDED})"
        )
    who = subject(match["user"])
    where = match["namespace"] or namespace
    return AccessDenied(
        f"{who} may not {match['verb']} {match['resource']} in namespace {where} ({RBAC_NEEDED})"
    )
