# shellcheck shell=bash
# Build commands of k8s.io/kubernetes from the Go module proxy (sourced by the build scripts).
#
# The go.mod of k8s.io/kubernetes requires its staging modules at v0.0.0 and maps them to
# ./staging with replace lines that do not apply to a dependency, so `go install` cannot
# build it.  A throw-away wrapper module replaces every staging module with its published
# tag (v0.<minor>.<patch>), derived from the proxy's copy of that go.mod so a version bump
# needs no edit.  The version is stamped the way upstream's release build does.

# build_k8s_commands VERSION BIN_DIR COMMAND...
build_k8s_commands() {
  local version="$1" bin="$2"; shift 2
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/kaito-k8s-build.XXXXXX")"
  (
    trap 'rm -rf "$work"' EXIT
    cd "$work"
    local minor="${version#*.}"; minor="${minor%%.*}"
    local staging="v0.${version#*.}"
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@v$version" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    [ -f "$gomod" ] || { echo "cannot fetch go.mod of k8s.io/kubernetes v$version" >&2; exit 1; }
    go mod init local.invalid/kaito-k8s-build >/dev/null 2>&1
    local m
    for m in $(sed -n 's#^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\1#p' "$gomod"); do
      go mod edit -replace="$m=$m@$staging"
    done
    local gd
    gd="$(sed -n 's/^godebug[[:space:]]\{1,\}\(default=go[0-9.]*\)[[:space:]]*$/\1/p' "$gomod")"
    if [ -n "$gd" ]; then go mod edit -godebug="$gd"; fi
    local pkgs="" c
    for c in "$@"; do pkgs="$pkgs k8s.io/kubernetes/cmd/$c@v$version"; done
    # shellcheck disable=SC2086
    go get $pkgs >&2
    local ld="-s -w" p
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld="$ld -X $p.gitVersion=v$version -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ld="$ld -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    for c in "$@"; do
      printf '[build]   go build %s\n' "$c" >&2
      go build -trimpath -ldflags "$ld" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c"
      mv "$bin/$c.tmp" "$bin/$c"
    done
  )
}
