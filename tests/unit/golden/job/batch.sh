#!/bin/sh
# The seed's batch script, unchanged from the HPC cluster: one rank per GPU.
set -eu
mpirun --map-by ppr:4:node /opt/app/bin/app
