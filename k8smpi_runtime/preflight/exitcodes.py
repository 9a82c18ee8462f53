"""k8smpi-preflight's exit statuses (2, 3, 4 mean what they mean for the other tools)."""

from __future__ import annotations

OK = 0
"""Nothing fatal (warnings may have been printed)."""
FATAL = 1
"""At least one fatal finding: one line per finding on stderr (pod, check, found, expected)."""
USAGE = 2
"""Bad arguments or configuration (options, selector, kubeconfig)."""
DENIED = 3
"""API access denied (401/403) while selecting the pods."""
API = 4
"""The API server was unreachable or failing."""
NOT_FOUND = 8
"""Nothing to check: no pod matched, or no such StatefulSet/Job."""
INTERRUPTED = 130

EPILOG = f"""\
exit status:
  {OK}    nothing fatal (warnings may have been printed)
  {FATAL}    fatal findings: one line each on stderr, naming pod, check, found and expected
  {USAGE}    bad arguments or configuration
  {DENIED}    API access denied (401/403) while selecting the pods
  {API}    the API server was unreachable or failing
  {NOT_FOUND}    no pod to check (nothing matched, no such StatefulSet/Job)
  {INTERRUPTED}  interrupted
"""
