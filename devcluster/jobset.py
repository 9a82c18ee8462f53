"""The JobSet controller (sigs.k8s.io/jobset) beside the devcluster, for k8smpi-job's JobSet shape.

A local process with its own configuration: no leader election, its certificate manager off
(the webhook and metrics servers use the devcluster CA's loopback certificate), ports moved by
``DEVCLUSTER_PORT_OFFSET``. :mod:`devcluster.addons` builds, starts and wires it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from devcluster.addons import AddonPorts
    from devcluster.layout import Layout

NAME = "jobset"
API = "jobsets.jobset.x-k8s.io"


def config(ports: AddonPorts, certs: Path) -> str:
    cfg = {
        "apiVersion": "config.jobset.x-k8s.io/v1alpha1",
        "kind": "Configuration",
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "webhook": {
            "port": ports.of(NAME, "webhook"),
            "host": "127.0.0.1",
            "certDir": str(certs),
        },
        "metrics": {
            "bindAddress": f"127.0.0.1:{ports.of(NAME, 'metrics')}",
            "certDir": str(certs),
        },
        "health": {"healthProbeBindAddress": f"127.0.0.1:{ports.of(NAME, 'health')}"},
    }
    return json.dumps(cfg, indent=2) + "\n"


def argv(lay: Layout, binary: Path, config_file: Path) -> list[str]:
    return [
        str(binary),
        f"--kubeconfig={lay.component_kubeconfig(NAME)}",
        f"--config={config_file}",
    ]
