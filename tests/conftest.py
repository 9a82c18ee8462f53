"""Test tiers: ``tests/unit`` (no cluster) and ``tests/e2e`` (the devcluster, or ``KUBECONFIG``).

The e2e tier is never skipped: a cluster that does not start is an error, and with
``K8SMPI_REQUIRE_E2E=1`` (``make test``) a session in which no e2e test passed fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from devcluster.client import Cluster, devcluster

if TYPE_CHECKING:
    from collections.abc import Iterator

REPO = Path(__file__).resolve().parent.parent

_e2e_passed = 0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
    # Tests that stop and restart control-plane processes run last, so they disturb no other.
    items.sort(key=lambda it: it.get_closest_marker("restarts_cluster") is not None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    global _e2e_passed  # noqa: PLW0603 - a session-wide counter read in sessionfinish
    yield
    # Reached only when the test passed; only tests on the cluster count as the e2e tier.
    if "cluster" in getattr(item, "fixturenames", ()):
        _e2e_passed += 1


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("K8SMPI_REQUIRE_E2E") == "1" and exitstatus == 0 and _e2e_passed == 0:
        sys.stderr.write("\nerror: the e2e tier did not run (no test on the cluster passed)\n")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """The cluster under test: ``KUBECONFIG`` if set, else the devcluster (reused or started).

    A devcluster this fixture started is stopped again at the end of the session, unless
    ``K8SMPI_KEEP_DEVCLUSTER=1``.
    """
    if os.environ.get("KUBECONFIG"):
        yield Cluster.from_kubeconfig(Path(os.environ["KUBECONFIG"]))
        return
    started_here = devcluster("status", capture=True).returncode != 0
    if devcluster("up").returncode != 0:
        pytest.fail("the devcluster did not start (see its output above)", pytrace=False)
    c = Cluster.from_devcluster(REPO / ".devcluster")
    os.environ["KUBECONFIG"] = str(c.kubeconfig)
    try:
        yield c
    finally:
        del os.environ["KUBECONFIG"]
        keep = os.environ.get("K8SMPI_KEEP_DEVCLUSTER") == "1"
        if started_here and not keep and devcluster("down").returncode != 0:
            pytest.fail("devcluster down failed (see its output above)", pytrace=False)


@pytest.fixture
def namespace(cluster: Cluster, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test (kr8s style), deleted with everything in it afterwards."""
    name = cluster.create_namespace(request.node.name)
    try:
        yield name
    finally:
        cluster.delete_namespace(name)
