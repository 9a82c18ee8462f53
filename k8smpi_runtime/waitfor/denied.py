"""API refusals (401/403) as one line naming who lacks which permission."""

from __future__ import annotations

from typing import TYPE_CHECKING

from k8smpi_runtime.errors import UnauthorizedError
from k8smpi_runtime.kubexec.failures import subject
from k8smpi_runtime.waitfor.readiness import one_line

if TYPE_CHECKING:
    from k8smpi_runtime.errors import K8smpiError

NEEDED = "k8s-waitfor needs pods: get, list, watch"


def explain_denied(
    error: K8smpiError, *, verb: str, resource: str, namespace: str, needed: str = NEEDED
) -> str:
    """A 401/403 as one line naming who lacks which permission."""
    if isinstance(error, UnauthorizedError):
        return f"API access denied: the credentials were rejected ({one_line(error)})"
    text = str(error)
    who = ""
    if 'User "' in text:
        who = subject(text.split('User "', 1)[1].split('"', 1)[0]) + " "
    return f"API access denied: {who}may not {verb} {resource} in namespace {namespace} ({needed})"
