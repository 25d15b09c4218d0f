#!/usr/bin/env bash
# Build the real Kubernetes test environment (etcd, kube-apiserver, kubectl and a
# kube-controller-manager for garbage collection, namespaces and service accounts) from
# Go modules with `go build`, and cache the binaries outside the repository.
#
# Idempotent: when the cached binaries exist and answer `--version`, it exits in
# well under a second. CI calls this before pytest; tests marked `kube` skip with a
# clear reason when the binaries are absent.
#
#   tools/kubeenv/build.sh            # build (or reuse) the pinned versions
#   tools/kubeenv/build.sh --print    # print the bin directory and exit
#
# Environment: FLYSLICE_CACHE (default ~/.cache/flyslice), FLYSLICE_K8S_VERSION,
# FLYSLICE_ETCD_VERSION. Why etcd is built too: Kubernetes >= 1.31 calls etcd
# health endpoints that only etcd >= 3.5.11 / 3.4.29 serve, and Debian bookworm
# ships etcd 3.4.23.
set -euo pipefail

K8S_VERSION="${FLYSLICE_K8S_VERSION:-1.35.4}"
ETCD_VERSION="${FLYSLICE_ETCD_VERSION:-3.6.16}"
CACHE="${FLYSLICE_CACHE:-$HOME/.cache/flyslice}"
OUT="$CACHE/kube-v${K8S_VERSION}"
BIN="$OUT/bin"
ETCD_BIN="$BIN/etcd"   # the etcd version is recorded in $BIN/etcd.version
K8S_COMMANDS=(kube-apiserver kubectl kube-controller-manager)

if [[ "${1:-}" == "--print" ]]; then
  echo "$BIN"
  exit 0
fi

have_all() {
  local b
  for b in "${K8S_COMMANDS[@]}"; do [[ -x "$BIN/$b" ]] || return 1; done
  [[ -x "$ETCD_BIN" ]] || return 1
  [[ "$(cat "$BIN/etcd.version" 2>/dev/null)" == "$ETCD_VERSION" ]] || return 1
  "$BIN/kube-apiserver" --version >/dev/null 2>&1 || return 1
  "$BIN/kube-controller-manager" --version >/dev/null 2>&1 || return 1
  "$BIN/kubectl" version --client >/dev/null 2>&1 || return 1
  "$ETCD_BIN" --version >/dev/null 2>&1 || return 1
}

if have_all; then
  echo "kubeenv: cached binaries in $BIN (kubernetes v$K8S_VERSION, etcd v$ETCD_VERSION)"
  exit 0
fi

command -v go >/dev/null || { echo "kubeenv: 'go' is not installed; cannot build the test API server" >&2; exit 1; }
mkdir -p "$BIN"
export CGO_ENABLED=0
# Never fetch another Go toolchain: a version this Go cannot build should fail here, clearly.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
start=$(date +%s)

build_kubernetes() {
  local src="$OUT/src-kubernetes"
  mkdir -p "$src"
  # The k8s.io/kubernetes go.mod points its staging modules (k8s.io/api, ...) at
  # ./staging/src paths that do not exist outside its repository; the wrapper
  # module replaces each of them with its published v0.X.Y release.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f "$gomod" ]] || { echo "kubeenv: could not download k8s.io/kubernetes v$K8S_VERSION" >&2; exit 1; }
  local staging_version="v0.${K8S_VERSION#1.}"
  {
    echo "module flyslice.local/kubeenv/kubernetes"
    echo
    echo "go 1.25.0"
    echo
    echo "godebug default=go1.25"
    echo
    echo "require k8s.io/kubernetes v${K8S_VERSION}"
    echo
    echo "replace ("
    grep -E '^[[:space:]]*k8s\.io/[a-z0-9-]+ => \./staging/src/' "$gomod" |
      awk -v v="$staging_version" '{print "\t" $1 " => " $1 " " v}'
    echo ")"
  } >"$src/go.mod"
  : >"$src/go.sum"
  (
    cd "$src"
    local b pkgs=()
    for b in "${K8S_COMMANDS[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$b@v${K8S_VERSION}"); done
    go get "${pkgs[@]}"
    local minor="${K8S_VERSION#1.}"
    minor="${minor%%.*}"
    local ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $pkg.gitVersion=v${K8S_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${minor}"
      ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for b in "${K8S_COMMANDS[@]}"; do
      [[ -x "$BIN/$b" ]] && continue
      echo "kubeenv: go build $b"
      go build -trimpath -ldflags "$ldflags" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$BIN/$b.tmp" "$BIN/$b"
    done
  )
}

build_etcd() {
  local src="$OUT/src-etcd"
  mkdir -p "$src"
  cat >"$src/go.mod" <<GOMOD
module flyslice.local/kubeenv/etcd

go 1.24

require go.etcd.io/etcd/server/v3 v${ETCD_VERSION}
GOMOD
  cat >"$src/main.go" <<'GOSRC'
// Command etcd is the upstream etcd server, built from its published Go module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GOSRC
  (
    cd "$src"
    go mod tidy
    go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN.tmp" .
    mv "$ETCD_BIN.tmp" "$ETCD_BIN"
    echo "$ETCD_VERSION" >"$BIN/etcd.version"
  )
}

if ! { [[ -x "$ETCD_BIN" ]] && [[ "$(cat "$BIN/etcd.version" 2>/dev/null)" == "$ETCD_VERSION" ]]; }; then
  echo "kubeenv: building etcd v$ETCD_VERSION ..."
  build_etcd
fi
for b in "${K8S_COMMANDS[@]}"; do
  if [[ ! -x "$BIN/$b" ]]; then
    echo "kubeenv: building ${K8S_COMMANDS[*]} v$K8S_VERSION (several minutes on 2 cores) ..."
    build_kubernetes
    break
  fi
done

have_all || { echo "kubeenv: build finished but the binaries do not run" >&2; exit 1; }
echo "kubeenv: built in $(( $(date +%s) - start ))s into $BIN"
