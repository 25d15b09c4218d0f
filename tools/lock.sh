#!/usr/bin/env bash
# Refresh requirements.lock: every package tools/test.sh installs, pinned to exact versions with
# hashes, resolved for every platform Python >= 3.11 runs on (x86_64 CI, aarch64 Raspberry Pis).
#
#   bash tools/lock.sh                      # re-resolve within pyproject.toml's ranges
#   bash tools/lock.sh --upgrade-package X  # extra arguments go to `uv pip compile`
#
# uv itself is pinned here and installed into a private venv under ~/.cache/flyslice, never into
# the project; pip alone installs from the lock (tools/test.sh), so users need no uv.
set -euo pipefail
cd "$(dirname "$0")/.."

UV_VERSION=0.13.9
CACHE="${FLYSLICE_CACHE:-$HOME/.cache/flyslice}"
TOOLS="$CACHE/lock-tools-uv-$UV_VERSION"
if [[ ! -x "$TOOLS/bin/uv" ]]; then
  python3 -m venv "$TOOLS"
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi

build_in=$(mktemp --suffix=.in)
out=$(mktemp)
trap 'rm -f "$build_in" "$out"' EXIT
python3 tools/lockfile.py inputs >"$build_in"
# uv keeps the versions already pinned in its output file unless told to upgrade them, so adding
# one dependency moves nothing else (the solver's output depends on exact versions).
cp requirements.lock "$out"

extras=()
for e in highs test bench; do extras+=(--extra "$e"); done

# --no-strip-markers keeps the per-platform pins of a universal resolution.
"$TOOLS/bin/uv" pip compile pyproject.toml "$build_in" "${extras[@]}" \
  --universal --python-version 3.11 --generate-hashes --no-header --quiet \
  --custom-compile-command "bash tools/lock.sh" "$@" -o "$out"

{
  echo "# Exact versions and hashes of everything tools/test.sh installs. Do not edit by hand:"
  echo "# refresh with \`bash tools/lock.sh\` after changing dependencies in pyproject.toml."
  echo "# pyproject-fingerprint: $(python3 tools/lockfile.py fingerprint)"
  # uv names the temporary input file in 'via' comments; name what it stands for instead.
  sed "s#$build_in#pyproject.toml (build-system)#g" "$out"
} >requirements.lock
python3 tools/lockfile.py check
echo "lock: requirements.lock refreshed ($(grep -c '^[A-Za-z0-9]' requirements.lock) pins)"
