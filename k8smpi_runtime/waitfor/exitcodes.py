"""k8s-waitfor's exit statuses: one per thing a Job's author can act on.

Shared meanings with hostfile-gen (2 usage, 3 denied, 4 API, 5 output) so an init container
that runs both reads the same way. 1 is left to Python itself (an unexpected error, with a
traceback): a known failure never exits 1.
"""

from __future__ import annotations

OK = 0
"""Every expected pod is Ready and resolvable (and passed --exec-probe); outputs written."""
USAGE = 2
"""Bad arguments or configuration: options, selector syntax, kubeconfig, a hostfile to read."""
DENIED = 3
"""API access denied (401/403): credentials or RBAC; the message names the permission."""
API = 4
"""The API server stayed unreachable or failing until the deadline."""
OUTPUT = 5
"""The wait succeeded but --hostfile-out/--configmap could not be written (or was refused)."""
TIMEOUT = 6
"""--timeout passed with pods still not ready; the table on stderr says why for each."""
POD_FAILED = 7
"""A pod failed or can never become ready: phase Failed/Succeeded, image pull errors,
CrashLoopBackOff, Unschedulable for longer than --unschedulable-grace, a failed --exec-probe, a
fatal --preflight finding."""
NOT_FOUND = 8
"""Nothing to wait for: no pod matched by the deadline, or the namespace, StatefulSet or Job
does not exist."""
INTERRUPTED = 130
"""SIGINT (as a shell reports it)."""

EPILOG = f"""\
exit status:
  {OK}    every expected pod is Ready and resolvable; outputs written
  {USAGE}    bad arguments or configuration (options, selector, kubeconfig, hostfile)
  {DENIED}    API access denied (401/403): credentials or RBAC
  {API}    the API server stayed unreachable or failing until the deadline
  {OUTPUT}    ready, but --hostfile-out/--configmap could not be written
  {TIMEOUT}    timed out: pods still not ready (a table on stderr says why, one line per pod)
  {POD_FAILED}    a pod failed or can never be ready (Failed/Succeeded, ErrImagePull,
       ImagePullBackOff, CrashLoopBackOff, Unschedulable beyond the grace, --exec-probe,
       a fatal --preflight finding)
  {NOT_FOUND}    no pods matched by the deadline, or no such namespace/StatefulSet/Job
  {INTERRUPTED}  interrupted (SIGINT)
"""
