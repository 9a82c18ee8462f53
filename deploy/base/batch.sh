#!/bin/sh
# An ordinary batch script: nothing in it knows about Kubernetes. The launcher's environment
# carries the agent (kubexec) and the hostfile (/opt/mpi/etc/hostfile, one slot per GPU).
set -eu
echo "hosts:"
cat "${OMPI_MCA_orte_default_hostfile:-/opt/mpi/etc/hostfile}"
mpirun ${MPI_TEST_PROGRAM:-/opt/app/bin/app}
