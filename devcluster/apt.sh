#!/usr/bin/env bash
# Install the Debian packages `make test` needs, only those missing. Debian/Ubuntu, root or sudo.
set -euo pipefail
pkgs=(
  openssl          # devcluster certificates
  util-linux       # unshare: tests resolve pod names with a private /etc/resolv.conf
  gcc make         # building the MPI test program (launchers: devcluster/mpi/install.sh)
  python3-venv     # the .venv (Debian splits venv out of python3)
  ca-certificates
  # images/: the e2e tier builds and runs the CPU and waiter images without a registry or
  # Docker daemon: podman (its API socket serves the image tool), buildah, runc (crun fails on
  # hybrid cgroups), fuse-overlayfs/uidmap (overlay storage), iptables (container networking),
  # debootstrap (the debian:<suite> base image is made locally).
  podman buildah runc fuse-overlayfs uidmap iptables debootstrap
  # The real node (devcluster/realnode.py): Debian's runc above, the CNI bridge and host-local
  # plugins (/usr/lib/cni), ip(8) for its bridge, a static libc for the pause image.
  containernetworking-plugins iproute2 libc6-dev
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# python3-venv is irrelevant when python3 is not Debian's (e.g. pyenv) and already has venv.
if [[ " ${missing[*]-} " == *" python3-venv "* ]] && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  missing=("${missing[@]/python3-venv}")
fi
read -r -a missing <<<"${missing[*]-}"
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "apt: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get -o DPkg::Lock::Timeout=600 update -qq
$sudo apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
