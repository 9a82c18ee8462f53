"""An exec runtime with a short stream idle timeout, for the tests of long silent exec streams:
the kwok nodes' podexec, or the real node's containerd (its ``stream_idle_timeout``)."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from devcluster.client import Cluster, devcluster
from devcluster.kwoknodes import PODEXEC_IDLE_ENV

if TYPE_CHECKING:
    from collections.abc import Iterator

CONTAINERD_IDLE_ENV = "DEVCLUSTER_STREAM_IDLE_TIMEOUT"
"""What devcluster/realnode.py writes into containerd's ``stream_idle_timeout``."""


@contextlib.contextmanager
def short_stream_idle_timeout(
    cluster: Cluster, seconds: int, component: str = "podexec"
) -> Iterator[None]:
    """``component`` (``podexec``, or a real node's ``containerd.<node>``) restarted with a
    stream idle timeout of ``seconds``, then restarted as before. Tests using it restart a
    component: mark them ``restarts_cluster``."""
    if cluster.root is None:
        raise AssertionError("restarting a component needs the devcluster")
    name = PODEXEC_IDLE_ENV if component == "podexec" else CONTAINERD_IDLE_ENV
    before = os.environ.get(name)
    os.environ[name] = f"{seconds}s"
    try:
        restart = devcluster("restart", component, capture=True, timeout=300)
        assert restart.returncode == 0, restart.stderr
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before
        devcluster("restart", component, capture=True, timeout=300)
