#!/usr/bin/env bash
# Run an MPI program with NP ranks on this machine only, with one of the launchers that
# devcluster/mpi/install.sh installed. Tests and humans use this same invocation.
#
#   devcluster/mpi/run-local.sh FLAVOUR NP [PROGRAM [ARGS...]]
#
# FLAVOUR is openmpi4, openmpi5, mpich or impi; PROGRAM defaults to the env file's
# MPI_TEST_PROGRAM (allreduce.c built against that flavour). The exact command is echoed to
# stderr before it runs; the launcher's exit status is returned. Settings that this script
# chooses (OMPI_*/PRTE_*/I_MPI_*/FI_*) may be overridden from the environment.
set -euo pipefail

die() {
  printf 'run-local.sh: %s\n' "$*" >&2
  exit 2
}

(($# >= 2)) || die "usage: run-local.sh FLAVOUR NP [PROGRAM [ARGS...]]"
flavour=$1
np=$2
shift 2
[[ $np =~ ^[1-9][0-9]*$ ]] || die "NP must be a positive integer, got '$np'"
case $flavour in
  openmpi4 | openmpi5 | mpich | impi) ;;
  *) die "unknown flavour '$flavour' (openmpi4, openmpi5, mpich, impi)" ;;
esac

cache_root=${K8SMPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8smpi}
env_file="$cache_root/mpi/env/$flavour.env"
[[ -f $env_file ]] || die "$env_file is missing: run devcluster/mpi/install.sh first"
# shellcheck disable=SC1090
. "$env_file"
[[ ${MPI_FLAVOUR:-} == "$flavour" ]] || die "$env_file does not set MPI_FLAVOUR=$flavour"
[[ -x ${MPI_LAUNCHER:-} ]] || die "launcher '${MPI_LAUNCHER:-}' from $env_file is not executable"

if (($# == 0)); then
  set -- "$MPI_TEST_PROGRAM"
fi

settings=()
setting() { # setting NAME DEFAULT: export NAME (the caller's value wins) and record it
  local name=$1 default=$2
  export "$name=${!name:-$default}"
  settings+=("$name=${!name}")
}

case $flavour in
  openmpi4)
    # ORTE refuses to run as root unless both variables are set (same as --allow-run-as-root).
    if ((EUID == 0)); then
      setting OMPI_ALLOW_RUN_AS_ROOT 1
      setting OMPI_ALLOW_RUN_AS_ROOT_CONFIRM 1
    fi
    # --oversubscribe: without it ORTE allows only one rank per core ("not enough slots").
    cmd=("$MPI_LAUNCHER" --oversubscribe -np "$np" "$@")
    ;;
  openmpi5)
    # PRRTE honours the same root variables; the slot limit is per core here too.
    if ((EUID == 0)); then
      setting OMPI_ALLOW_RUN_AS_ROOT 1
      setting OMPI_ALLOW_RUN_AS_ROOT_CONFIRM 1
    fi
    cmd=("$MPI_LAUNCHER" --oversubscribe -np "$np" "$@")
    ;;
  mpich)
    # Hydra forks local hosts directly (no ssh); -hosts localhost keeps every rank here.
    cmd=("$MPI_LAUNCHER" -n "$np" -hosts localhost "$@")
    ;;
  impi)
    # shm: all ranks on one node need no libfabric. For ranks on several nodes use
    # I_MPI_FABRICS=shm:ofi FI_PROVIDER=tcp (Debian's libfabric1; its default provider
    # search fails in containers without RDMA devices).
    setting I_MPI_FABRICS shm
    if [[ -n ${FI_PROVIDER:-} ]]; then
      settings+=("FI_PROVIDER=$FI_PROVIDER")
    fi
    cmd=("$MPI_LAUNCHER" -n "$np" -hosts localhost "$@")
    ;;
esac

printf 'run-local.sh: + ' >&2
if ((${#settings[@]})); then
  printf '%q ' "${settings[@]}" >&2
fi
printf '%q ' "${cmd[@]}" >&2
printf '\n' >&2
exec "${cmd[@]}"
