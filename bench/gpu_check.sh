#!/usr/bin/env bash
# The GPU checks of k8smpi-preflight on a machine that has an NVIDIA GPU (elsewhere the fixture
# trees of tests/unit/test_preflight_checks.py stand in). From the repository root:
#
#   bash bench/gpu_check.sh            # the driver, cuInit, device count, the preflight here
#   bash bench/gpu_check.sh --image    # also build base-pypi here and check its CUDA-aware MPI
#
# 1. the driver as the kernel reports it (/proc/driver/nvidia/version) and nvidia-smi's view;
# 2. the preflight's own live probe (ctypes: cuDriverGetVersion, cuInit, cuDeviceGetCount);
# 3. `k8smpi-preflight --gpus N` on this machine, N = its /dev/nvidia<N> nodes: device count,
#    the driver against the CUDA of the image the tool runs in (none here), cuInit agreement;
# 4. with --image: `python -m images.build base-pypi`, then in that image with the GPUs (docker
#    --gpus all, or podman with the CDI spec nvidia-ctk writes): k8smpi-preflight, ompi_info's
#    CUDA support, ucx_info's CUDA transports, and MPIX_Query_cuda_support() from 2 ranks.
# Output goes to the terminal and to ${OUT:-gpu-check-out}/; the exit status is non-zero when a
# check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-check-out}
mkdir -p "$out"
exec > >(tee "$out/gpu-check.log") 2>&1
failed=0
step() { printf '\n== %s\n' "$*"; }

step "driver"
if [ -r /proc/driver/nvidia/version ]; then
  cat /proc/driver/nvidia/version
else
  echo "no /proc/driver/nvidia/version: no NVIDIA kernel module on this machine"
  failed=1
fi
if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv || failed=1
fi
gpus=$(find /dev -maxdepth 1 -regex '/dev/nvidia[0-9]+' | wc -l)
echo "device nodes: $gpus"

step "python environment"
if [ ! -x .venv/bin/k8smpi-preflight ]; then
  python3 -m venv .venv
  .venv/bin/pip install -q -e .
fi

step "live probe (ctypes)"
.venv/bin/python - <<'PY' | tee "$out/probe.txt"
from k8smpi_runtime.preflight import native

cuda = native.probe_cuda()
print(f"libcuda loaded={cuda.loaded} cuInit={cuda.init_name()} devices={cuda.devices} "
      f"driver CUDA={cuda.driver_cuda} {cuda.error}")
verbs = native.probe_verbs()
print(f"libibverbs loaded={verbs.loaded} devices={verbs.devices} {verbs.error}")
PY

step "k8smpi-preflight --gpus $gpus (this machine)"
.venv/bin/k8smpi-preflight --gpus "$gpus" || failed=1
.venv/bin/k8smpi-preflight --gpus "$gpus" --json >"$out/preflight-host.json" || true

if [ "${1-}" = "--image" ]; then
  step "build base-pypi"
  .venv/bin/pip install -q -e '.[images]'
  .venv/bin/python -m images.build base-pypi --json "$out/build.json" --quiet || failed=1
  tag=$(.venv/bin/python -m images.build base-pypi --dry-run | .venv/bin/python -c \
    'import json,sys; print(json.loads(sys.stdin.readline())["tag"])')
  if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    engine=(docker) gpu_args=(--gpus all)
  elif command -v podman >/dev/null && { [ -e /etc/cdi/nvidia.yaml ] || [ -e /var/run/cdi/nvidia.yaml ]; }; then
    engine=(.venv/bin/python -m images.build podman) gpu_args=(--device nvidia.com/gpu=all)
  else
    echo "no container engine with GPU support (docker --gpus, or podman + CDI from nvidia-ctk)"
    exit 1
  fi
  step "in $tag"
  "${engine[@]}" run --rm "${gpu_args[@]}" "$tag" sh -c '
    k8smpi-preflight --gpus "$(ls /dev | grep -cE "^nvidia[0-9]+$")"; rc=$?
    ompi_info --parsable --all | grep -E "mpi_built_with_cuda_support|^mca:pml:ucx:version"
    ucx_info -d | grep -E "Transport: (cuda|gdr)"
    exit $rc' || failed=1
  step "MPIX_Query_cuda_support from 2 ranks"
  cat >"$out/cuda_aware.c" <<'C'
#include <mpi.h>
#include <mpi-ext.h>
#include <stdio.h>
int main(int argc, char **argv) {
    int rank, aware = -1;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
#if defined(MPIX_CUDA_AWARE_SUPPORT)
    aware = MPIX_Query_cuda_support();
#endif
    printf("rank %d: CUDA-aware at run time: %d\n", rank, aware);
    MPI_Finalize();
    return aware == 1 ? 0 : 1;
}
C
  "${engine[@]}" run --rm "${gpu_args[@]}" -v "$PWD/$out:/out:z" "$tag-devel" sh -c '
    mpicc -o /tmp/cuda_aware /out/cuda_aware.c &&
    mpirun --oversubscribe -np 2 --mca pml ucx /tmp/cuda_aware' || failed=1
fi

step "result"
if [ "$failed" = 0 ]; then echo "all GPU checks passed"; else echo "some GPU check failed"; fi
exit "$failed"
