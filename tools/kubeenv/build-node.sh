#!/usr/bin/env bash
# Build what a real Kubernetes node needs, from Go modules, and cache it outside the repository:
# kubelet and kube-scheduler (k8s.io/kubernetes, through the same wrapper module as build.sh),
# containerd v2 with its runc shim and ctr, and the CNI plugins bridge, host-local, loopback and
# portmap; plus a static `pause` program for the sandbox image (gcc; its C source is below).
# The OCI runtime is Debian's runc (apt-get install runc): it is not built here.
#
# Opt-in (tools/test.sh does not call it): the cold build takes tens of minutes on 2 cores.
# Idempotent: when every cached binary exists and answers its version flag, it exits at once.
#
#   tools/kubeenv/build-node.sh            # build (or reuse) the pinned versions
#   tools/kubeenv/build-node.sh --print    # print the bin directory and exit
#
# Environment: FLYSLICE_CACHE (default ~/.cache/flyslice), FLYSLICE_K8S_VERSION,
# FLYSLICE_CONTAINERD_VERSION, FLYSLICE_CNI_VERSION. Set NICE=0 to build at normal priority
# (by default `go build` runs under `nice -n 19`, the machine being shared).
set -euo pipefail

K8S_VERSION="${FLYSLICE_K8S_VERSION:-1.35.4}"
CONTAINERD_VERSION="${FLYSLICE_CONTAINERD_VERSION:-2.2.9}"
CNI_VERSION="${FLYSLICE_CNI_VERSION:-1.9.1}"
CACHE="${FLYSLICE_CACHE:-$HOME/.cache/flyslice}"
OUT="$CACHE/node-k${K8S_VERSION}-c${CONTAINERD_VERSION}-cni${CNI_VERSION}"
BIN="$OUT/bin"
K8S_COMMANDS=(kubelet kube-scheduler)
CONTAINERD_COMMANDS=(containerd containerd-shim-runc-v2 ctr)
CNI_PLUGINS=(main/bridge ipam/host-local main/loopback meta/portmap)

if [[ "${1:-}" == "--print" ]]; then
  echo "$BIN"
  exit 0
fi

have_all() {
  local b
  for b in "${K8S_COMMANDS[@]}" "${CONTAINERD_COMMANDS[@]}" pause; do [[ -x "$BIN/$b" ]] || return 1; done
  for b in "${CNI_PLUGINS[@]}"; do [[ -x "$BIN/cni/${b#*/}" ]] || return 1; done
  "$BIN/kubelet" --version >/dev/null 2>&1 || return 1
  "$BIN/kube-scheduler" --version >/dev/null 2>&1 || return 1
  "$BIN/containerd" --version >/dev/null 2>&1 || return 1
  "$BIN/ctr" --version >/dev/null 2>&1 || return 1
  # A CNI plugin called without CNI_COMMAND prints its "about" line and exits 0... or 1; only
  # VERSION is a stable probe.
  echo '{"cniVersion":"1.0.0"}' | CNI_COMMAND=VERSION "$BIN/cni/bridge" >/dev/null 2>&1 || return 1
}

if have_all; then
  echo "kubeenv-node: cached binaries in $BIN (kubernetes v$K8S_VERSION, containerd v$CONTAINERD_VERSION, CNI plugins v$CNI_VERSION)"
  exit 0
fi

command -v go >/dev/null || { echo "kubeenv-node: 'go' is not installed; cannot build the node binaries" >&2; exit 1; }
command -v gcc >/dev/null || { echo "kubeenv-node: 'gcc' is not installed; cannot build the pause program" >&2; exit 1; }
mkdir -p "$BIN/cni"
export CGO_ENABLED=0
# Never fetch another Go toolchain: a version this Go cannot build should fail here, clearly.
export GOTOOLCHAIN=local
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
GO=(nice -n "${NICE:-19}" go)
start=$(date +%s)

stamp() { echo "kubeenv-node: $1 after $(($(date +%s) - start))s"; }

build_kubernetes() {
  local src="$OUT/src-kubernetes"
  mkdir -p "$src"
  # Same wrapper as build.sh: k8s.io/kubernetes' go.mod points its staging modules at
  # ./staging/src paths that only exist in its repository; replace each with its release.
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@v${K8S_VERSION}" | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
  [[ -f "$gomod" ]] || { echo "kubeenv-node: could not download k8s.io/kubernetes v$K8S_VERSION" >&2; exit 1; }
  local staging_version="v0.${K8S_VERSION#1.}"
  {
    echo "module flyslice.local/kubeenv/kubernetes-node"
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
      echo "kubeenv-node: go build $b"
      "${GO[@]}" build -trimpath -ldflags "$ldflags" -o "$BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$BIN/$b.tmp" "$BIN/$b"
      stamp "$b built"
    done
  )
}

build_containerd() {
  # `go install pkg@version` builds with containerd's own go.mod (no wrapper, no replaces).
  # no_btrfs: the btrfs snapshotter needs C headers; overlayfs and native are what the nodes use.
  local b
  for b in "${CONTAINERD_COMMANDS[@]}"; do
    [[ -x "$BIN/$b" ]] && continue
    echo "kubeenv-node: go install $b"
    local v=github.com/containerd/containerd/v2/version
    GOBIN="$BIN" "${GO[@]}" install -trimpath -tags no_btrfs \
      -ldflags "-s -w -X $v.Version=v${CONTAINERD_VERSION} -X $v.Revision=flyslice" \
      "github.com/containerd/containerd/v2/cmd/$b@v${CONTAINERD_VERSION}"
    stamp "$b built"
  done
}

build_cni() {
  local p
  for p in "${CNI_PLUGINS[@]}"; do
    [[ -x "$BIN/cni/${p#*/}" ]] && continue
    echo "kubeenv-node: go install CNI plugin ${p#*/}"
    GOBIN="$BIN/cni" "${GO[@]}" install -trimpath -ldflags "-s -w" \
      "github.com/containernetworking/plugins/plugins/$p@v${CNI_VERSION}"
  done
  stamp "CNI plugins built"
}

build_pause() {
  # The sandbox ("pause") container only has to sleep until it is signalled; a static C program
  # does that with no libraries in its image.
  local src="$OUT/src-pause"
  mkdir -p "$src"
  cat >"$src/pause.c" <<'CSRC'
/* pause: PID 1 of a pod sandbox. Sleeps until SIGTERM or SIGINT, reaps orphaned children. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction stop = {.sa_handler = quit}, child = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP};
  if (sigaction(SIGINT, &stop, NULL) < 0 || sigaction(SIGTERM, &stop, NULL) < 0 ||
      sigaction(SIGCHLD, &child, NULL) < 0)
    return 1;
  for (;;) pause();
}
CSRC
  gcc -static -Os -s -o "$BIN/pause.tmp" "$src/pause.c"
  mv "$BIN/pause.tmp" "$BIN/pause"
}

[[ -x "$BIN/pause" ]] || build_pause
build_cni
build_containerd
for b in "${K8S_COMMANDS[@]}"; do
  if [[ ! -x "$BIN/$b" ]]; then
    echo "kubeenv-node: building ${K8S_COMMANDS[*]} v$K8S_VERSION (many minutes on 2 cores) ..."
    build_kubernetes
    break
  fi
done

have_all || { echo "kubeenv-node: build finished but the binaries do not run" >&2; exit 1; }
echo "kubeenv-node: built in $(($(date +%s) - start))s into $BIN"
