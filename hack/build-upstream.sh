#!/usr/bin/env bash
# Build upstream Kaito's workspace controller (github.com/kaito-project/kaito, cmd/workspace)
# for bench/workspaces.py's upstream column, and print the binary's path.
#
#   hack/build-upstream.sh [SOURCE]
#
# SOURCE is a clone (or bare git directory) of the public repository, or a directory
# holding its source at the wanted tag; without it the module is fetched through the Go
# module proxy.  The tag is UPSTREAM_VERSION (default v0.12.0).  Only the source comes
# from there: every dependency comes through the Go module proxy, checked against the
# tag's go.sum.  Nothing is committed: the binary is cached under the kaito-py cache,
# keyed by the version, with upstream's CRDs (from its chart) in crds/ beside it; the source
# is unpacked into a temporary directory.
#
#   git clone --bare https://github.com/kaito-project/kaito kaito.git
#   KAITO_UPSTREAM_BIN="$(hack/build-upstream.sh kaito.git)" bench/workspaces.py --profile stock 100
set -euo pipefail

VERSION="${UPSTREAM_VERSION:-v0.12.0}"
SRC="${1:-${KAITO_UPSTREAM_SRC:-}}"
CACHE_ROOT="${KAITO_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kaito-py}"
BIN="$CACHE_ROOT/upstream-kaito-$VERSION/kaito-workspace"
CRDS="$(dirname "$BIN")/crds"
MODULE=github.com/kaito-project/kaito

export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-mod=mod
command -v go >/dev/null || { echo "hack/build-upstream.sh: Go is required (go >= 1.26)" >&2; exit 1; }
log() { printf '[build-upstream] %s\n' "$*" >&2; }

if [ -x "$BIN" ] && [ -d "$CRDS" ]; then
  echo "$BIN"
  exit 0
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/kaito-upstream-build.XXXXXX")"
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
if [ -z "$SRC" ]; then
  log "fetching $MODULE@$VERSION through the Go module proxy"
  # go mod download exits non-zero and says why in its JSON's "Error" when the proxy refuses
  info="$(cd "$work" && go mod download -json "$MODULE@$VERSION" 2>&1)" || true
  dir="$(printf '%s\n' "$info" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  if [ ! -d "$dir" ]; then
    echo "hack/build-upstream.sh: the Go module proxy does not serve $MODULE@$VERSION:" >&2
    printf '%s\n' "$info" | sed -n 's/.*"Error": "\(.*\)".*/  \1/p' >&2
    echo "  pass a clone of the repository instead: hack/build-upstream.sh PATH-TO-CLONE" >&2
    exit 1
  fi
  cp -r "$dir/." "$work/src"
elif git --git-dir="$SRC" rev-parse --verify -q "$VERSION^{commit}" >/dev/null 2>&1 \
  || git -C "$SRC" rev-parse --verify -q "$VERSION^{commit}" >/dev/null 2>&1; then
  log "unpacking $VERSION from $SRC"
  mkdir -p "$work/src"
  # docker/ (test images with model weights) and website/ play no part in the Go build;
  # a partial clone may lack their large blobs
  if git --git-dir="$SRC" rev-parse --verify -q "$VERSION^{commit}" >/dev/null 2>&1; then
    git_src=(git --git-dir="$SRC")
  else
    git_src=(git -C "$SRC")
  fi
  "${git_src[@]}" archive "$VERSION" -- . ':!docker' ':!website' | tar -x -C "$work/src"
elif [ -f "$SRC/go.mod" ] && grep -q "^module $MODULE\$" "$SRC/go.mod"; then
  log "copying the source in $SRC (taken to be $VERSION)"
  cp -r "$SRC/." "$work/src"
else
  echo "hack/build-upstream.sh: $SRC is neither a git repository with tag $VERSION nor a source tree of $MODULE" >&2
  exit 1
fi
chmod -R u+w "$work/src"

mkdir -p "$(dirname "$BIN")"
if [ ! -x "$BIN" ]; then
  log "building $MODULE/cmd/workspace $VERSION (cold: several minutes)"
  (
    cd "$work/src"
    go build -trimpath \
      -ldflags "-s -w -X $MODULE/pkg/version.Version=$VERSION -X $MODULE/pkg/version.BuildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
      -o "$BIN.tmp" ./cmd/workspace
  )
  mv "$BIN.tmp" "$BIN"
fi
# the CRDs its chart installs, those that are plain YAML (not Helm templates)
rm -rf "$CRDS.tmp" && mkdir -p "$CRDS.tmp"
chart="$work/src/charts/kaito/workspace"
for f in "$chart"/crds/*.yaml "$chart"/templates/kaito.sh_*.yaml; do
  grep -q '{{' "$f" || cp "$f" "$CRDS.tmp/"
done
rm -rf "$CRDS" && mv "$CRDS.tmp" "$CRDS"
"$BIN" --version >&2
echo "$BIN"
