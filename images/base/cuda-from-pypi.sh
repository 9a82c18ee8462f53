#!/usr/bin/env bash
# Lay out a CUDA tree from NVIDIA's PyPI wheels (CUDA_SOURCE=pypi in images/base/Dockerfile):
#
#   cuda-from-pypi.sh CUDA_VERSION PREFIX       e.g.  12.8.1 /usr/local/cuda
#
# NVIDIA's metapackage `cuda-toolkit` pins, per toolkit release, the wheel of each component:
# its `cudart` extra is nvidia-cuda-runtime-cu<major> (cuda.h, cuda_runtime.h, libcudart), its
# `nvcc` extra nvidia-cuda-nvcc-cu<major> (the crt/ headers cuda_runtime.h includes, ptxas), its
# `nvml` extra nvidia-nvml-dev-cu<major> (nvml.h). What PyPI does not have:
#   - the driver stubs libcuda.so and libnvidia-ml.so that link steps want (UCX's configure
#     links -lcuda -lnvidia-ml; Open MPI 5 -lcuda). They are generated here from the headers:
#     every cu*/nvml* function the headers declare (versioned and unversioned names), each
#     returning CUDA_ERROR_STUB_LIBRARY (34) / NVML_ERROR_LIBRARY_NOT_FOUND (12), with the
#     drivers' sonames libcuda.so.1 / libnvidia-ml.so.1, under PREFIX/lib64/stubs. At run time
#     the container toolkit mounts the host's real libraries under those sonames.
#   - nvcc itself (the nvcc wheels of the 12.x line carry ptxas and libnvvm, not the driver
#     program); UCX and Open MPI need no CUDA compiler.
# PREFIX/version.json records the toolkit version and each wheel's version, in the shape of
# the toolkit's own version.json (images/common/record-versions.py reads "cuda"); the shared
# libraries a runtime image needs are also copied to PREFIX/lib64/runtime/.
set -euo pipefail
version=${1:?usage: cuda-from-pypi.sh CUDA_VERSION PREFIX}
prefix=${2:?usage: cuda-from-pypi.sh CUDA_VERSION PREFIX}
major=${version%%.*}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# shellcheck source=images/common/pip-ca.sh
. /usr/local/lib/k8smpi/pip-ca.sh

python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check \
  "cuda-toolkit[cudart,nvcc,nvml]==${version}"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
# The wheels' trees: nvidia/cuda_runtime, nvidia/nvml_dev (cu12); nvidia/cu13 (13.x).
runtime_dir=$(dirname "$(find "$site/nvidia" -name cuda.h -path '*include*' | head -n1)")/..
nvml_h=$(find "$site/nvidia" -name nvml.h | head -n1)
if [ ! -f "$runtime_dir/include/cuda.h" ] || [ -z "$nvml_h" ]; then
  echo "cuda-from-pypi.sh: cuda-toolkit $version brought no cuda.h or nvml.h" >&2
  exit 1
fi

install -d "$prefix/include" "$prefix/lib64/stubs" "$prefix/lib64/runtime" "$prefix/bin"
# Every component's headers in one include directory, as the toolkit installs them.
for include in "$site"/nvidia/*/include; do
  cp -a "$include/." "$prefix/include/"
done
find "$prefix/include" -name '__init__.py' -delete
find "$prefix/include" -name '__pycache__' -prune -exec rm -rf {} +
for lib in "$runtime_dir"/lib/libcudart.so.* "$runtime_dir"/lib/*.a; do
  [ -e "$lib" ] && cp -a "$lib" "$prefix/lib64/"
done
cudart=$(basename "$(find "$prefix/lib64" -maxdepth 1 -name 'libcudart.so.*' | head -n1)")
ln -sf "$cudart" "$prefix/lib64/libcudart.so"
cp -a "$prefix/lib64/$cudart" "$prefix/lib64/runtime/"

# stub OUTPUT SONAME HEADER PREFIX-REGEX RETURN: a shared library defining every function the
# header names: declarations `name(`, and every name on a `#define name ...` line (the versioned
# symbols: `#define cuMemcpyHtoD __CUDA_API_PTDS(cuMemcpyHtoD_v2)`).
stub() {
  local out=$1 soname=$2 header=$3 pattern=$4 ret=$5 c="$work/$(basename "$1").c"
  {
    grep -ohE "\b${pattern}[A-Za-z0-9_]*[[:space:]]*\(" "$header" | sed -E 's/[[:space:]]*\($//'
    grep -E "^#[[:space:]]*define[[:space:]]+${pattern}" "$header" | grep -oE "\b${pattern}[A-Za-z0-9_]*"
  } | sort -u | awk -v r="$ret" '{ printf "int %s(void) { return %d; }\n", $1, r }' >"$c"
  gcc -shared -fPIC -O0 -Wl,-soname,"$soname" -o "$out" "$c"
  echo "cuda-from-pypi.sh: $(basename "$out") stub with $(wc -l <"$c") functions"
}
stub "$prefix/lib64/stubs/libcuda.so" libcuda.so.1 "$prefix/include/cuda.h" 'cu[A-Z]' 34
stub "$prefix/lib64/stubs/libnvidia-ml.so" libnvidia-ml.so.1 "$prefix/include/nvml.h" 'nvml[A-Z]' 12

"$work/venv/bin/python" - "$prefix/version.json" "$version" <<'PY'
import json
import sys
from importlib.metadata import distributions

out = {"cuda": {"name": "CUDA SDK", "version": sys.argv[2]}}
for dist in distributions():
    name = dist.metadata["Name"]
    if name.startswith("nvidia-"):
        key = name.removeprefix("nvidia-").rsplit("-cu", 1)[0].replace("-", "_")
        out[key] = {"name": f"{name} (PyPI)", "version": dist.version}
with open(sys.argv[1], "w") as fh:
    json.dump(out, fh, indent=2, sort_keys=True)
    fh.write("\n")
PY
echo "cuda-from-pypi.sh: CUDA $version from PyPI in $prefix ($cudart)"
