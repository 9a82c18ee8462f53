"""podexec with a short stream idle timeout, for the tests of long silent exec streams."""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING

from devcluster.client import Cluster, devcluster
from devcluster.kwoknodes import PODEXEC_IDLE_ENV

if TYPE_CHECKING:
    from collections.abc import Iterator


@contextlib.contextmanager
def short_stream_idle_timeout(cluster: Cluster, seconds: int) -> Iterator[None]:
    """podexec restarted with ``--stream-idle-timeout={seconds}s`` (as containerd's
    ``stream_idle_timeout``), then restarted as before. Tests using it restart a component:
    mark them ``restarts_cluster``."""
    if cluster.root is None:
        raise AssertionError("restarting podexec needs the devcluster")
    before = os.environ.get(PODEXEC_IDLE_ENV)
    os.environ[PODEXEC_IDLE_ENV] = f"{seconds}s"
    try:
        restart = devcluster("restart", "podexec", capture=True, timeout=300)
        assert restart.returncode == 0, restart.stderr
        yield
    finally:
        if before is None:
            os.environ.pop(PODEXEC_IDLE_ENV, None)
        else:
            os.environ[PODEXEC_IDLE_ENV] = before
        devcluster("restart", "podexec", capture=True, timeout=300)
