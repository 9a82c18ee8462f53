"""Lean Kubernetes API access: credentials (config), REST (rest), pods/exec (exec).

Standard library plus websocket-client only, so kubexec starts fast.
"""

from __future__ import annotations
