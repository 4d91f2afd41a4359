#!/usr/bin/env bash
# Build prometheus-adapter (the custom.metrics.k8s.io server the HPA reads vLLM's metrics
# through) from the Go module proxy and cache it, as hack/build-binaries.sh does for the
# control plane.  `go install pkg@version` would ask the proxy for the module's version list,
# which it refuses, so a throw-away module pins the exact version instead.  Prints the binary.
set -euo pipefail

ADAPTER_VERSION="${ADAPTER_VERSION:-0.12.0}"
CACHE_ROOT="${KAITO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kaito-py}"
BIN="$CACHE_ROOT/prometheus-adapter${ADAPTER_VERSION}/bin"

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
if [ ! -x "$BIN/prometheus-adapter" ]; then
  command -v go >/dev/null || { echo "hack/build-metrics-adapter.sh: Go is required" >&2; exit 1; }
  mkdir -p "$BIN"
  work="$(mktemp -d "${TMPDIR:-/tmp}/kaito-adapter-build.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  printf '[build] prometheus-adapter v%s (cold: about 3 minutes)\n' "$ADAPTER_VERSION" >&2
  (
    cd "$work"
    go mod init local.invalid/kaito-adapter-build >/dev/null 2>&1
    go get "sigs.k8s.io/prometheus-adapter@v$ADAPTER_VERSION" >&2
    go build -trimpath -ldflags "-s -w" -o "$BIN/prometheus-adapter.tmp" \
      sigs.k8s.io/prometheus-adapter/cmd/adapter
    mv "$BIN/prometheus-adapter.tmp" "$BIN/prometheus-adapter"
  )
fi
echo "$BIN/prometheus-adapter"
