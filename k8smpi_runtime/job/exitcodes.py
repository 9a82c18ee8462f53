"""k8smpi-job's exit statuses.

``submit`` exits with the batch script's own exit status (mpirun's) whenever the script ran:
0..255, whatever it is. Its own failures use the statuses below and always print one line
``k8smpi-job: <why>`` on stderr first, so a script that happens to exit 2 is told apart by that
line. 1 is left to Python itself (an unexpected error, with a traceback).
"""

from __future__ import annotations

OK = 0
USAGE = 2
"""Bad arguments or job spec, a kubeconfig that cannot be used, or what the job needs is not in
the cluster (its namespace, JobSet, the LocalQueue): nothing was applied."""
DENIED = 3
"""The API server refused (401/403): the message names the permission."""
API = 4
"""The API server could not be reached or kept failing."""
EXISTS = 5
"""submit: a job of that name already exists in the namespace."""
NOT_FOUND = 8
"""status/logs/delete: no job of that name in the namespace (or no such namespace)."""
TIME_LIMIT = 124
"""The job ran past its time limit (``--time``), as ``timeout`` reports it."""
NOT_RUN = 125
"""The job ended without the batch script's exit status: the waiter failed (pods that cannot be
placed or started), a worker failed, or the launcher pod was lost. The line on stderr says why."""
INTERRUPTED = 130
"""Ctrl-C (SIGINT) or SIGTERM: the job was cancelled and deleted."""

EPILOG = f"""\
exit status:
  0-255  submit: the batch script's own exit status (mpirun's), when it ran
  {USAGE}      bad arguments or job spec, or the namespace, JobSet or LocalQueue is missing
         (nothing applied)
  {DENIED}      API access denied (401/403)
  {API}      API server unreachable or failing
  {EXISTS}      submit: a job of that name already exists
  {NOT_FOUND}      status/logs/delete: no such job
  {TIME_LIMIT}    the job ran past its --time limit
  {NOT_RUN}    the job ended before the script could run (the waiter failed, a worker failed)
  {INTERRUPTED}    interrupted: the job was cancelled and deleted
  (k8smpi-job's own failures print one line 'k8smpi-job: <why>' first)
"""
