#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run every test and check.
# This is the README's test command; CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

# Exact, hash-checked versions from requirements.lock into a project venv, so a clean machine next
# month runs the same ruff, mypy, pytest, PuLP, highspy and kopf as today, whatever else the system
# Python has. The lock must match pyproject.toml (refresh it with `bash tools/lock.sh`).
python3 tools/lockfile.py check
venv=$(realpath -m "${FLYSLICE_VENV:-.venv}")
stamp="$venv/.flyslice-lock-sha256"
lock_sum=$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -d' ' -f1)
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null)" != "$lock_sum" ]]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
  pipi=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input)
  "${pipi[@]}" --require-hashes --no-deps -r requirements.lock
  # The build backend comes from the lock too, hence no build isolation.
  "${pipi[@]}" --no-deps --no-build-isolation -e .
  "$venv/bin/python" -m pip check
  echo "$lock_sum" >"$stamp"
fi
export PATH="$venv/bin:$PATH"
export VIRTUAL_ENV="$venv"
python tools/lockfile.py check

# Real components for integration tests: an MQTT broker, gpg for signed commits, sshd for git over SSH,
# and chromium for the web console.
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v gpg >/dev/null 2>&1 || need+=(gnupg)
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
# A real headless browser for the web console's tests (driven over WebDriver, no selenium).
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
# Argo CD's health checks are Lua 5.1 (gopher-lua); the tests run them in the reference interpreter.
command -v lua5.1 >/dev/null 2>&1 || need+=(lua5.1)
# The real kubelet nodes of tests/cluster run their containers with Debian's runc.
command -v runc >/dev/null 2>&1 || need+=(runc)
# tests/cluster/test_arm64_emulated.py runs the arm64 image's programs under QEMU user-mode emulation.
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi

# A real kube-apiserver + etcd for the operator and agent tests, built from Go modules and cached
# outside the repository (a second run takes seconds).
if [ -f tools/kubeenv/build.sh ]; then
  bash tools/kubeenv/build.sh
fi
# Real kubelet + containerd nodes (tests/cluster), built the same way. On a fresh, quiet 2-core
# machine the API server took 6 min and these 2 min (docs/kubernetes.md, "CI time"); seconds once cached.
if [ -f tools/kubeenv/build-node.sh ]; then
  bash tools/kubeenv/build-node.sh
fi

ruff check .
ruff format --check crds operator solver nodeagent benchmarks tools tests flyslice_pkg examples
# mypy --strict on every flyslice package. mypy cannot follow setuptools' package-dir mapping, so
# it reads the packages through a throw-away tree of links laid out as they install.
typeroot=$(mktemp -d)
trap 'rm -rf "$typeroot"' EXIT
mkdir "$typeroot/flyslice"
for f in flyslice_pkg/*.py; do ln -s "$PWD/$f" "$typeroot/flyslice/$(basename "$f")"; done
for d in crds operator solver nodeagent; do ln -s "$PWD/$d" "$typeroot/flyslice/$d"; done
MYPYPATH="$typeroot" mypy -p flyslice.solver -p flyslice.crds -p flyslice.operator -p flyslice.nodeagent -m flyslice.testing

# Three workers (pytest-xdist): the suite mostly waits on real servers, so on 2 cores it takes about
# half the serial time. tests/conftest.py deals out whole modules, and tests/cluster as one unit,
# first (collection order, hence --no-loadscope-reorder): it is the longest.
python -m pytest -n "${FLYSLICE_TEST_WORKERS:-3}" --no-loadscope-reorder "$@"
