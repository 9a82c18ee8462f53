"""k8smpi_runtime: glue that lets an unmodified ``mpirun`` batch script run on Kubernetes.

The package runs inside the job's containers. Its tools arrive one module each:
``kubexec`` (ssh-compatible rsh agent over pods/exec), ``k8s-waitfor`` (the launcher's waiter)
and ``hostfile-gen`` (a slots-from-GPUs hostfile).
"""

from __future__ import annotations

__version__ = "0.1.0"
