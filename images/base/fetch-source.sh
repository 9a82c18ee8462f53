#!/usr/bin/env bash
# Fetch and unpack one source tarball for the devel stage of images/base/Dockerfile.
#
#   fetch-source.sh SOURCES NAME VERSION SHA256 DIR      e.g.  debian ucx 1.13.1 "" .
#
# SOURCES  upstream  the project's release download (GitHub, open-mpi.org)
#          debian    the OS's source package through apt (deb-src of the image's own apt
#                    sources: Debian's or Ubuntu's mirror). The version whose upstream part is
#                    VERSION is taken (epoch, Debian revision and +ds/+dfsg repack suffix
#                    ignored); apt checks it against the signed index, SHA256 is optional.
#                    The .orig tarball is the upstream release as the distribution received
#                    it and is used as it is; only when it is a git snapshot without
#                    `configure` (UCX) is the tree unpacked as the distribution builds it
#                    (dpkg-source -x: its patches applied), because upstream's configure.ac
#                    then names packaging files only those patches account for.
# NAME     gdrcopy | ucx | openmpi
# SHA256   of the tarball; empty: not checked (beyond apt's own check for debian)
# DIR      unpacked here, without the tarball's top directory
set -euo pipefail
sources=${1:?usage: fetch-source.sh SOURCES NAME VERSION SHA256 DIR}
name=${2:?usage: fetch-source.sh SOURCES NAME VERSION SHA256 DIR}
version=${3:?usage: fetch-source.sh SOURCES NAME VERSION SHA256 DIR}
sha256=${4-}
dir=${5:?usage: fetch-source.sh SOURCES NAME VERSION SHA256 DIR}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

upstream_url() {
  case "$name" in
    gdrcopy) echo "https://github.com/NVIDIA/gdrcopy/archive/refs/tags/v${version}.tar.gz" ;;
    ucx) echo "https://github.com/openucx/ucx/releases/download/v${version}/ucx-${version}.tar.gz" ;;
    openmpi) echo "https://download.open-mpi.org/release/open-mpi/v${version%.*}/openmpi-${version}.tar.bz2" ;;
    *) echo "fetch-source.sh: unknown source '$name'" >&2; return 1 ;;
  esac
}

# The deb-src twin of every apt source of the image (deb822 *.sources and one-line *.list).
enable_deb_src() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -e "$f" ] || continue
    sed -E 's/^Types:.*/Types: deb-src/' "$f" >"/etc/apt/sources.list.d/k8smpi-src-$(basename "$f")"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -e "$f" ] || continue
    sed -n -E 's/^deb (.*)/deb-src \1/p' "$f" >"/etc/apt/sources.list.d/k8smpi-src-$(basename "$f").list"
  done
}

disable_deb_src() {
  rm -f /etc/apt/sources.list.d/k8smpi-src-*
  rm -rf /var/lib/apt/lists/*
}

fetch_debian() {
  enable_deb_src
  trap 'disable_deb_src; rm -rf "$work"' EXIT
  apt-get update -qq
  local found="" v up
  for v in $(apt-cache showsrc "$name" 2>/dev/null | sed -n 's/^Version: //p'); do
    up=${v#*:}
    up=${up%-*}
    up=${up%%+ds*}
    up=${up%%+dfsg*}
    if [ "$up" = "$version" ]; then
      found=$v
      break
    fi
  done
  if [ -z "$found" ]; then
    local have
    have=$(apt-cache showsrc "$name" 2>/dev/null | sed -n 's/^Version: //p' | tr '\n' ' ')
    echo "fetch-source.sh: the OS has no source package $name $version (it has: ${have:-none});" \
      "set the version to one of those, or SOURCES=upstream where its hosts are reachable" >&2
    return 1
  fi
  (cd "$work" && apt-get source --download-only -qq "$name=$found" >/dev/null)
  tarball=$(find "$work" -maxdepth 1 -name "${name}_*.orig.tar.*" | head -n1)
  if [ -z "$tarball" ]; then
    echo "fetch-source.sh: $name $found has no .orig tarball (a native package?)" >&2
    return 1
  fi
  # (The listing goes to a file: `tar | grep -q` fails on SIGPIPE under pipefail.)
  tar -tf "$tarball" >"$work/listing"
  if ! grep -qE '^[^/]+/configure$' "$work/listing"; then
    dpkg-source --no-check -x "$(find "$work" -maxdepth 1 -name '*.dsc' | head -n1)" "$work/tree" >/dev/null
    patched="$work/tree"
  fi
}

case "$sources" in
  upstream)
    url=$(upstream_url)
    tarball="$work/$(basename "$url")"
    curl -fsSL --retry 3 -o "$tarball" "$url"
    ;;
  debian) fetch_debian ;;
  *) echo "fetch-source.sh: SOURCES must be upstream or debian, not '$sources'" >&2; exit 1 ;;
esac
if [ -n "$sha256" ]; then
  echo "$sha256  $tarball" | sha256sum -c -
fi
mkdir -p "$dir"
if [ -n "${patched-}" ]; then
  cp -a "$patched/." "$dir/"
  echo "fetch-source.sh: $name $version from $sources ($(basename "$tarball") with the distribution's patches)"
else
  tar -xf "$tarball" -C "$dir" --strip-components=1
  # One mtime for every file: a repacked tarball may not keep the release's order of mtimes,
  # and make would then re-run autotools on the generated files (aclocal.m4: Error 127).
  find "$dir" -exec touch -h -d @0 {} +
  echo "fetch-source.sh: $name $version from $sources ($(basename "$tarball"))"
fi
