#!/usr/bin/env bash
# Point the Go build modules at the versions in versions.env and refresh their go.sum files.
# Run after editing versions.env, then commit gobuild/*/go.{mod,sum}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.env"
export GOSUMDB=off GOFLAGS=-mod=mod
minor=${KUBE_VERSION#*.}
cd "$here/gobuild/kube"
# Every k8s.io staging module is published as v0.<minor>.<patch> of the same release.
sed -i -E "s#^(require k8s.io/kubernetes) v.*#\1 v$KUBE_VERSION#; s#^(\t(k8s.io/[a-z-]+) => k8s.io/[a-z-]+) v0\..*#\1 v0.$minor#" go.mod
go mod tidy
cd "$here/gobuild/etcd" && go mod edit -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION" && go mod tidy
cd "$here/gobuild/kwok" && go mod edit -require="sigs.k8s.io/kwok@v$KWOK_VERSION" && go mod tidy
cd "$here/gobuild/coredns" && go mod edit -require="github.com/coredns/coredns@v$COREDNS_VERSION" && go mod tidy
cd "$here/gobuild/containerd" && go mod edit -require="github.com/containerd/containerd/v2@v$CONTAINERD_VERSION" && go mod tidy
cd "$here/gobuild/jobset" && go mod edit -require="sigs.k8s.io/jobset@v$JOBSET_VERSION" && go mod tidy
cd "$here/gobuild/kueue" && go mod edit -require="sigs.k8s.io/kueue@v$KUEUE_VERSION" && go mod tidy
cd "$here/gobuild/podexec" && go mod edit -require="k8s.io/api@v0.$minor" \
  -require="k8s.io/cri-streaming@v0.$minor" && go mod tidy
echo "pinned: kubernetes $KUBE_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION, coredns $COREDNS_VERSION, containerd $CONTAINERD_VERSION, jobset $JOBSET_VERSION, kueue $KUEUE_VERSION"
