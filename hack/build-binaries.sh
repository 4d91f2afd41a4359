#!/usr/bin/env bash
# Build the real control-plane binaries from the Go module proxy and cache them.
#
# Nothing ships kube-apiserver as a package, so we compile k8s.io/kubernetes
# through a throw-away wrapper module that maps every ./staging/ module to its
# published tag (the go.mod of k8s.io/kubernetes cannot be used directly).
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

want=(kube-apiserver kube-controller-manager kube-scheduler kubectl)
missing_k8s=0
for c in "${want[@]}"; do [ -x "$BIN/$c" ] || missing_k8s=1; done

if [ "$missing_k8s" = 1 ]; then
  log "building Kubernetes v$K8S_VERSION (cold: several minutes)"
  work="$(mktemp -d "${TMPDIR:-/tmp}/kaito-k8s-build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  (
    cd "$work"
    minor="${K8S_VERSION#*.}"; minor="${minor%%.*}"
    staging="v0.${K8S_VERSION#*.}"
    gomod="$(go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    [ -f "$gomod" ] || { echo "cannot fetch go.mod of k8s.io/kubernetes v$K8S_VERSION" >&2; exit 1; }
    go mod init local.invalid/kaito-k8s-build >/dev/null 2>&1
    for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod"); do
      go mod edit -replace="$m=$m@$staging"
    done
    gd="$(sed -n 's/^godebug[[:space:]]\{1,\}\(default=go[0-9.]*\)[[:space:]]*$/\1/p' "$gomod")"
    if [ -n "$gd" ]; then go mod edit -godebug="$gd"; fi
    pkgs=""
    for c in "${want[@]}"; do pkgs="$pkgs k8s.io/kubernetes/cmd/$c@v$K8S_VERSION"; done
    # shellcheck disable=SC2086
    go get $pkgs >&2
    ld="-s -w"
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    for c in "${want[@]}"; do
      log "  go build $c"
      go build -trimpath -ldflags "$ld" -o "$BIN/$c.tmp" "k8s.io/kubernetes/cmd/$c"
      mv "$BIN/$c.tmp" "$BIN/$c"
    done
  )
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
