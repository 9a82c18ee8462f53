"""Fixtures for the e2e tests that need JobSet and Kueue beside the cluster."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from devcluster import kueue
from devcluster.client import Cluster, devcluster

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def gang(cluster: Cluster) -> Cluster:
    """The cluster with JobSet and Kueue: started beside the devcluster (``up --with``).

    Against another cluster (``KUBECONFIG``) they must be installed already: the JobSet API and
    Kueue with a ClusterQueue named ``devcluster`` (see devcluster/kueue.py).
    """
    if cluster.root is not None:
        if devcluster("up", "--with", "jobset,kueue", timeout=1800).returncode != 0:
            pytest.fail("JobSet and Kueue did not start beside the devcluster", pytrace=False)
        return cluster
    for what in ("crd/jobsets.jobset.x-k8s.io", f"clusterqueue/{kueue.CLUSTER_QUEUE}"):
        if cluster.kubectl("get", what, check=False).returncode != 0:
            pytest.fail(f"this cluster lacks {what} (JobSet and Kueue)", pytrace=False)
    return cluster


@pytest.fixture
def queued_namespace(gang: Cluster, namespace: str) -> Iterator[str]:
    """A namespace Kueue manages, with a LocalQueue ``hpc`` of the devcluster's queue."""
    gang.apply(kueue.namespace_objects(namespace), namespace)
    yield namespace
