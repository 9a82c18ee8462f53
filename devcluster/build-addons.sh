#!/usr/bin/env bash
# Build the devcluster's optional controllers -- JobSet and Kueue, for k8smpi-job's JobSet shape
# and gang admission -- from the pinned Go modules in gobuild/{jobset,kueue} into a cache outside
# the repo, once per version pair. Also copies each project's CRDs and webhook/RBAC manifests
# from the module cache next to the binaries (the devcluster applies them).
# Prints the folder (bin/, <name>-crds/, <name>-webhooks.yaml) on stdout; progress goes to stderr. Exit 0: present. Exit 1: a build failed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"

stamp="jobset-${JOBSET_VERSION}_kueue-${KUEUE_VERSION}"
cache="${K8SMPI_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/k8smpi}/devcluster-addons/$stamp"
if [ -f "$cache/.complete" ] && [ -x "$cache/bin/jobset" ] && [ -x "$cache/bin/kueue" ] \
  && [ -s "$cache/kueue-converted-crds.txt" ]; then
  echo "$cache"; exit 0
fi

check_pin() {  # module-dir module version
  grep -q "^require $2 v$3\$" "$here/gobuild/$1/go.mod" || {
    echo "build-addons.sh: gobuild/$1/go.mod does not require $2 v$3 (versions.env); run 'make devcluster-pin'" >&2
    exit 1
  }
}
check_pin jobset sigs.k8s.io/jobset "$JOBSET_VERSION"
check_pin kueue sigs.k8s.io/kueue "$KUEUE_VERSION"

command -v go >/dev/null || { echo "build-addons.sh: 'go' not found; install Go >= 1.26 (see README)" >&2; exit 1; }
export GOSUMDB=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0
mkdir -p "$cache"
tmp=$(mktemp -d "$cache/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
t0=$(date +%s)
build() {  # module-dir output ldflags package
  echo "devcluster: building $4 ($(($(date +%s) - t0))s so far)" >&2
  (cd "$here/gobuild/$1" && nice -n 10 go build -trimpath -ldflags "-s -w $3" -o "$tmp/$2" "$4") >&2
}
build jobset jobset "" sigs.k8s.io/jobset
build kueue kueue "-X sigs.k8s.io/kueue/pkg/version.GitVersion=v$KUEUE_VERSION" sigs.k8s.io/kueue/cmd/kueue

# The manifests each project ships, from the exact module versions just built.
modsrc() { (cd "$here/gobuild/$1" && go list -m -f '{{.Dir}}' "$2"); }
js=$(modsrc jobset sigs.k8s.io/jobset)
kq=$(modsrc kueue sigs.k8s.io/kueue)
mkdir -p "$tmp/jobset-crds" "$tmp/kueue-crds"
cp "$js"/config/components/crd/bases/*.yaml "$tmp/jobset-crds/"
cp "$js/config/components/webhook/manifests.yaml" "$tmp/jobset-webhooks.yaml"
cp "$kq"/config/components/crd/bases/*.yaml "$tmp/kueue-crds/"
cp "$kq/config/components/webhook/manifests.yaml" "$tmp/kueue-webhooks.yaml"
# The CRDs upstream converts through Kueue's webhook: its crd/kustomization.yaml's active patches.
sed -nE 's#^- path: patches/webhook_in_(.*)\.yaml#\1.kueue.x-k8s.io#p' \
  "$kq/config/components/crd/kustomization.yaml" >"$tmp/kueue-converted-crds.txt"
chmod -R u+w "$tmp"
rm -rf "$cache/bin" "$cache/jobset-crds" "$cache/kueue-crds" "$cache/.complete"
mkdir -p "$cache/bin"
mv "$tmp/jobset" "$tmp/kueue" "$cache/bin/"
mv "$tmp/jobset-crds" "$tmp/kueue-crds" "$tmp/jobset-webhooks.yaml" "$tmp/kueue-webhooks.yaml" \
  "$tmp/kueue-converted-crds.txt" "$cache/"
touch "$cache/.complete"
echo "devcluster: built JobSet v$JOBSET_VERSION and Kueue v$KUEUE_VERSION in $(($(date +%s) - t0))s into $cache" >&2
echo "$cache"
