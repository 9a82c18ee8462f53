#!/usr/bin/env bash
# Build the devcluster's upstream binaries from the pinned Go modules into a cache outside the
# repo, once per version set. Prints the bin directory on stdout; progress goes to stderr.
# Exit 0: binaries present. Exit 1: a build failed (its output is on stderr).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

stamp="k8s-${KUBE_VERSION}_etcd-${ETCD_VERSION}_kwok-${KWOK_VERSION}_coredns-${COREDNS_VERSION}_containerd-${CONTAINERD_VERSION}"
cache="${K8SMPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8smpi}/devcluster/$stamp"
bin="$cache/bin"
want="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet etcd kwok coredns"
# The real node's runtime.
want="$want containerd containerd-shim-runc-v2 ctr"

have_all() { for b in $want; do [ -x "$bin/$b" ] || return 1; done; }
build_podexec() {
  # Our own code: rebuilt on every call (seconds with a warm Go cache) so edits take effect.
  local out="$bin/.podexec.$$"
  (cd "$here/gobuild/podexec" && GOSUMDB=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
    go build -trimpath -ldflags "-s -w" -o "$out" .) >&2
  mv -f "$out" "$bin/podexec"
}
if have_all; then build_podexec; echo "$bin"; exit 0; fi

# go.mod files pin the same versions as versions.env; a drift would build the wrong thing.
check_pin() {  # module-dir module version
  grep -q "^require $2 v$3\$" "$here/gobuild/$1/go.mod" || {
    echo "build.sh: gobuild/$1/go.mod does not require $2 v$3 (versions.env); run 'make devcluster-pin'" >&2
    exit 1
  }
}
check_pin kube k8s.io/kubernetes "$KUBE_VERSION"
check_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
check_pin kwok sigs.k8s.io/kwok "$KWOK_VERSION"
check_pin coredns github.com/coredns/coredns "$COREDNS_VERSION"
check_pin containerd github.com/containerd/containerd/v2 "$CONTAINERD_VERSION"

command -v go >/dev/null || { echo "build.sh: 'go' not found; install Go >= 1.26 (see README)" >&2; exit 1; }
# sum.golang.org may be unreachable; the committed go.sum files pin every module hash instead.
export GOSUMDB=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

minor=${KUBE_VERSION#*.}; minor=${minor%%.*}
kv="-X k8s.io/component-base/version.gitVersion=v$KUBE_VERSION -X k8s.io/component-base/version.gitMajor=1"
kv="$kv -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
kv="$kv -X k8s.io/client-go/pkg/version.gitVersion=v$KUBE_VERSION"

t0=$(date +%s)
build() {  # module-dir ldflags packages...
  local dir=$1 ldflags=$2; shift 2
  echo "devcluster: building $* ($(($(date +%s) - t0))s so far)" >&2
  (cd "$here/gobuild/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/" "$@") >&2
}
build kube "$kv" k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl k8s.io/kubernetes/cmd/kubelet
build etcd "" .
build kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=v$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok
build coredns "" github.com/coredns/coredns
# Static (CGO_ENABLED=0, as every binary here): no btrfs, devmapper or zfs snapshotters.
cmd=github.com/containerd/containerd/v2/cmd
GOFLAGS="$GOFLAGS -tags=no_btrfs,no_devmapper,no_zfs" build containerd \
  "-X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
  $cmd/containerd $cmd/containerd-shim-runc-v2 $cmd/ctr
mkdir -p "$bin"
for b in $want; do mv -f "$tmp/$b" "$bin/$b"; done
build_podexec
echo "devcluster: built in $(($(date +%s) - t0))s into $bin" >&2
echo "$bin"
