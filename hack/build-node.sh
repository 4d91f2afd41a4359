#!/usr/bin/env bash
# Build the binaries of a real node from the Go module proxy and cache them:
# kubelet and kube-proxy at the control plane's Kubernetes version (the same wrapper-module
# recipe as hack/build-binaries.sh), containerd 2.x with its runc shim and ctr, and crictl.
# runc and the CNI plugins come from Debian (hack/setup installs them).
# The cache directory is keyed by every version, so a bump rebuilds and a warm cache costs
# nothing.  Prints the binary directory on stdout; progress goes to stderr.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.36.4}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-2.4.2}"
CRICTL_VERSION="${CRICTL_VERSION:-1.37.0}"
CACHE_ROOT="${KAITO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kaito-py}"
BIN="$CACHE_ROOT/node-k8s${K8S_VERSION}-containerd${CONTAINERD_VERSION}-crictl${CRICTL_VERSION}/bin"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
command -v go >/dev/null || { echo "hack/build-node.sh: Go is required (go >= 1.26)" >&2; exit 1; }
mkdir -p "$BIN"
log() { printf '[build-node] %s\n' "$*" >&2; }
# shellcheck source=hack/lib/k8s-wrapper.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/k8s-wrapper.sh"

k8s=(kubelet kube-proxy)
missing=0
for c in "${k8s[@]}"; do [ -x "$BIN/$c" ] || missing=1; done
if [ "$missing" = 1 ]; then
  log "building kubelet and kube-proxy v$K8S_VERSION"
  build_k8s_commands "$K8S_VERSION" "$BIN" "${k8s[@]}"
fi

# containerd: cgo-free, without the snapshotters that want cgo or extra kernel support.
tags="no_btrfs no_devmapper no_zfs no_aufs"
for c in containerd containerd-shim-runc-v2 ctr; do
  if [ ! -x "$BIN/$c" ]; then
    log "building $c v$CONTAINERD_VERSION"
    GOBIN="$BIN" go install -trimpath -tags "$tags" \
      -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=v$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/$c@v$CONTAINERD_VERSION" >&2
  fi
done

if [ ! -x "$BIN/crictl" ]; then
  log "building crictl v$CRICTL_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" \
    "sigs.k8s.io/cri-tools/cmd/crictl@v$CRICTL_VERSION" >&2
fi

echo "$BIN"
