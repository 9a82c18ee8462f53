"""Lean Kubernetes API access: credentials (config), REST (rest), pods/exec (exec).

Standard library only (websocket: a minimal RFC 6455 client of our own), so kubexec starts fast.
"""

from __future__ import annotations
