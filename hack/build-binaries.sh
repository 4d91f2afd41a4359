#!/usr/bin/env bash
# Build the real control-plane binaries from the Go module proxy and cache them.
#
# Nothing ships kube-apiserver as a package, so we compile k8s.io/kubernetes
# through a throw-away wrapper module (hack/lib/k8s-wrapper.sh).
# The cache directory is keyed by all versions, so a bump rebuilds and a warm
# cache costs nothing.  Prints the binary directory on stdout.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.36.4}"
ETCD_VERSION="${ETCD_VERSION:-3.6.14}"
KWOK_VERSION="${KWOK_VERSION:-0.8.0}"
CACHE_ROOT="${KAITO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kaito-py}"
BIN="$CACHE_ROOT/k8s${K8S_VERSION}-etcd${ETCD_VERSION}-kwok${KWOK_VERSION}/bin"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
command -v go >/dev/null || { echo "hack/build-binaries.sh: Go is required (go >= 1.26)" >&2; exit 1; }
mkdir -p "$BIN"
log() { printf '[build] %s\n' "$*" >&2; }
# shellcheck source=hack/lib/k8s-wrapper.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib/k8s-wrapper.sh"

want=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
missing_k8s=0
for c in "${want[@]}"; do [ -x "$BIN/$c" ] || missing_k8s=1; done

if [ "$missing_k8s" = 1 ]; then
  log "building Kubernetes v$K8S_VERSION (cold: several minutes)"
  build_k8s_commands "$K8S_VERSION" "$BIN" "${want[@]}"
fi

if [ ! -x "$BIN/etcd" ]; then
  log "building etcd v$ETCD_VERSION"
  work="$(mktemp -d "${TMPDIR:-/tmp}/kaito-etcd-build.XXXXXX")"
  (
    cd "$work"
    go mod init local.invalid/kaito-etcd-build >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >&2
    go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$BIN/etcd.tmp" "$BIN/etcd"
  )
  rm -rf "$work"
fi

if [ ! -x "$BIN/kwok" ]; then
  log "building kwok v$KWOK_VERSION"
  GOBIN="$BIN" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION" >&2
fi

echo "$BIN"
