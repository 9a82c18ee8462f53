#!/bin/sh
# The seed's batch script, unchanged from the HPC cluster: one rank per GPU, UCX over the HCA.
# (The launcher's environment supplies the agent and the hostfile.)
set -eu
cat "${OMPI_MCA_orte_default_hostfile:-/opt/mpi/etc/hostfile}"
mpirun --map-by ppr:4:node --bind-to none -x UCX_TLS /opt/app/bin/app
