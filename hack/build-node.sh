#!/usr/bin/env bash
# Build the binaries of a real node from the Go module proxy and cache them:
# kubelet and kube-proxy at the control plane's Kubernetes version (the same wrapper-module
# recipe as hack/build-binaries.sh), containerd 2.x with its runc shim and ctr, crictl, and
# CoreDNS (the cluster DNS of the real nodes' pods) with only the plugins the nodes use.
# runc and the CNI plugins come from Debian (hack/setup installs them).
# The cache directory is keyed by every version, so a bump rebuilds and a warm cache costs
# nothing.  Prints the binary directory on stdout; progress goes to stderr.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.36.4}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-2.4.2}"
CRICTL_VERSION="${CRICTL_VERSION:-1.37.0}"
COREDNS_VERSION="${COREDNS_VERSION:-1.15.0}"
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

# CoreDNS: our own main package with the few plugins hack/realnode.py's Corefile names
# (its stock build links every plugin, cloud SDKs included: minutes more on two cores).
# A directory of its own, keyed by the version and the plugins (BIN's key has neither), and
# `coredns` links to it.
coredns_plugins=(bind errors health kubernetes log ready)
coredns_key="$(printf '%s\n' "${coredns_plugins[@]}" | sha256sum | cut -c1-8)"
coredns_dir="coredns-v$COREDNS_VERSION-$coredns_key"
if [ ! -x "$BIN/$coredns_dir/coredns" ]; then
  log "building coredns v$COREDNS_VERSION (plugins: ${coredns_plugins[*]})"
  work="$(mktemp -d "${TMPDIR:-/tmp}/kaito-coredns-build.XXXXXX")"
  (
    cd "$work"
    go mod init local.invalid/kaito-coredns >/dev/null 2>&1
    {
      printf '%s\n' "// The cluster DNS of hack/realnode.py: CoreDNS with only the plugins it uses." \
        "package main" "" "import (" '	"github.com/coredns/coredns/coremain"' ""
      for plugin in "${coredns_plugins[@]}"; do
        printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$plugin"
      done
      printf '%s\n' ")" "" "func main() { coremain.Run() }"
    } >main.go
    go get "github.com/coredns/coredns@v$COREDNS_VERSION" >&2
    mkdir -p "$BIN/$coredns_dir"
    go build -trimpath -ldflags "-s -w" -o "$BIN/$coredns_dir/coredns.tmp" .
    mv "$BIN/$coredns_dir/coredns.tmp" "$BIN/$coredns_dir/coredns"
  )
  rm -rf "$work"
fi
ln -sfn "$coredns_dir/coredns" "$BIN/coredns"

echo "$BIN"
