#!/usr/bin/env bash
# Install everything the test suite needs on a fresh machine, then run every test and check.
# This is the README's test command; CI (.ci/run) runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'

# Real components for integration tests: an MQTT broker, gpg for signed commits, sshd for git over SSH.
need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v gpg >/dev/null 2>&1 || need+=(gnupg)
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
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

ruff check .
ruff format --check crds operator solver nodeagent benchmarks tools tests
# mypy --strict on every flyslice package. mypy cannot follow setuptools' package-dir mapping, so
# it reads the packages through a throw-away tree of links laid out as they install.
typeroot=$(mktemp -d)
trap 'rm -rf "$typeroot"' EXIT
mkdir "$typeroot/flyslice"
ln -s "$PWD/flyslice_pkg/__init__.py" "$typeroot/flyslice/__init__.py"
for d in crds operator solver nodeagent; do ln -s "$PWD/$d" "$typeroot/flyslice/$d"; done
MYPYPATH="$typeroot" mypy -p flyslice.solver -p flyslice.crds -p flyslice.operator -p flyslice.nodeagent

python3 -m pytest "$@"
