#!/usr/bin/env bash
# Point apt at the InfiniBand user space of one OFED flavour (images/base/Dockerfile, both stages).
#
#   ofed-repo.sh FLAVOR VERSION OS      e.g.  doca 3.3.0 ubuntu24.04
#
# rdma-core  the OS's own rdma-core packages (upstream kernels, inbox drivers); VERSION must be
#            empty: the version is the OS's (versions.json records the installed one).
# doca       DOCA-OFED from NVIDIA's repository (the successor of MLNX_OFED); VERSION is the DOCA
#            release the hosts run, e.g. 3.3.0.
# mlnx       MLNX_OFED from NVIDIA's repository (last standalone release line 24.10); VERSION as
#            the hosts' `ofed_info -s`, e.g. 24.10-3.2.5.0.
# The package names are the same for all three (libibverbs1, ibverbs-providers, librdmacm1, ...):
# the repository decides where they come from, and an apt pin makes it win over the OS.
#
# Always writes the three files below (empty for rdma-core), so that the runtime stage can copy
# them from the devel stage and needs neither curl nor gnupg.
set -euo pipefail
flavor=${1:?usage: ofed-repo.sh FLAVOR VERSION OS}
version=${2-}
os=${3:?usage: ofed-repo.sh FLAVOR VERSION OS}
list=/etc/apt/sources.list.d/k8smpi-ofed.list
keyring=/usr/share/keyrings/k8smpi-ofed.gpg
prefs=/etc/apt/preferences.d/k8smpi-ofed
mkdir -p "$(dirname "$list")" "$(dirname "$keyring")" "$(dirname "$prefs")"

case "$(uname -m)" in
  x86_64) doca_arch=x86_64 mlnx_arch=x86_64 ;;
  aarch64) doca_arch=arm64-sbsa mlnx_arch=aarch64 ;;
  *) echo "ofed-repo.sh: unsupported architecture $(uname -m)" >&2; exit 1 ;;
esac

case "$flavor" in
  rdma-core)
    if [ -n "$version" ]; then
      echo "ofed-repo.sh: OFED_VERSION=$version is for doca/mlnx; rdma-core is the OS's" >&2
      exit 1
    fi
    echo "# OFED_FLAVOR=rdma-core: the OS's rdma-core packages" >"$list"
    : >"$keyring"
    : >"$prefs"
    exit 0
    ;;
  doca)
    url="https://linux.mellanox.com/public/repo/doca/${version}/${os}/${doca_arch}/"
    key=https://linux.mellanox.com/public/repo/doca/GPG-KEY-Mellanox.pub
    ;;
  mlnx)
    url="https://linux.mellanox.com/public/repo/mlnx_ofed/${version}/${os}/${mlnx_arch}/"
    key=https://www.mellanox.com/downloads/ofed/RPM-GPG-KEY-Mellanox
    ;;
  *)
    echo "ofed-repo.sh: OFED_FLAVOR must be rdma-core, doca or mlnx, not '$flavor'" >&2
    exit 1
    ;;
esac
if [ -z "$version" ]; then
  echo "ofed-repo.sh: OFED_FLAVOR=$flavor needs OFED_VERSION (the version the hosts run)" >&2
  exit 1
fi
curl -fsSL --retry 3 "$key" | gpg --dearmor >"$keyring"
echo "deb [signed-by=$keyring] $url ./" >"$list"
printf 'Package: *\nPin: origin linux.mellanox.com\nPin-Priority: 1001\n' >"$prefs"
