"""kubexec: an ssh-compatible rsh agent that runs commands in pods through pods/exec.

``sshargs`` parses ssh's command line; ``remote`` builds the argv that runs in the pod (the
lifeline wrapper that leaves no orphans and switches to the job's user).
"""

from __future__ import annotations
