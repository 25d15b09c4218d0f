#!/usr/bin/env bash
# Install the flyslice node agent on a bare gateway (for example a Raspberry Pi without
# containers) as a systemd service. Run as root on the gateway:
#
#   sudo ./install.sh --node gw-1 --kubeconfig gw-1.kubeconfig [--source DIR|WHEEL|flyslice==X.Y.Z]
#
# The kubeconfig authenticates as system:flyslice-agent:<node> (make one with
# make-agent-kubeconfig.sh on the admin's machine); the API server lets that identity write only
# this node's NFInstance status and EdgeNode. Re-running the script upgrades in place.
#
# Options:
#   --node NAME         EdgeNode this gateway is (required)
#   --kubeconfig FILE   credentials for the API server (required)
#   --source SPEC       what to pip-install: a source directory, a wheel, or a requirement
#                       (default: the repository this script is in)
#   --agent-args ARGS   extra arguments for `flyslice agent`, for example "--mqtt 127.0.0.1:1883"
#                       (it always gets --no-pods: a gateway without a kubelet runs fNFs only)
#   --insecure-plaintext  plain-TCP data plane, UNAUTHENTICATED: any process that can reach the
#                       gateway's port can inject into any slice (default: mutual TLS with a
#                       certificate the operator signs; every agent of a cluster must agree, so use
#                       this only in a lab whose other agents also run with --insecure-plaintext)
#   --prefix DIR        where the virtualenv goes (default /opt/flyslice)
#   --root DIR          install into DIR as if it were / (packaging and tests); skips users and systemctl
#   --pip-args ARGS     extra pip arguments (for example "--no-index --find-links /media/usb/wheels")
#   --system-site-packages  let the virtualenv use Debian's python3-* packages
#   --no-start          install and enable, but do not start now
set -euo pipefail

die() { echo "install.sh: $*" >&2; exit 1; }

node="" kubeconfig="" source_spec="" agent_args="" prefix="/opt/flyslice" root="" pip_args=""
venv_args=() start=1 plaintext=""
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --node) node="${2:-}"; shift 2 ;;
    --kubeconfig) kubeconfig="${2:-}"; shift 2 ;;
    --source) source_spec="${2:-}"; shift 2 ;;
    --agent-args) agent_args="${2:-}"; shift 2 ;;
    --prefix) prefix="${2:-}"; shift 2 ;;
    --root) root="${2:-}"; shift 2 ;;
    --pip-args) pip_args="${2:-}"; shift 2 ;;
    --system-site-packages) venv_args+=(--system-site-packages); shift ;;
    --no-start) start=0; shift ;;
    --insecure-plaintext) plaintext="--insecure-plaintext"; shift ;;
    --no-tls) die "--no-tls is now --insecure-plaintext (mutual TLS is the agent's default)" ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[[ -n "$node" ]] || die "--node NAME is required (the EdgeNode this gateway is)"
[[ "$node" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ && ${#node} -le 253 ]] ||
  die "--node '$node' is not a valid EdgeNode name (lower-case letters, digits, '-' and '.')"
[[ -n "$kubeconfig" ]] || die "--kubeconfig FILE is required (see make-agent-kubeconfig.sh)"
[[ -r "$kubeconfig" ]] || die "cannot read kubeconfig $kubeconfig"
grep -q "client-certificate-data\|token:" "$kubeconfig" || die "$kubeconfig holds no credentials"
[[ -n "$root" || "$(id -u)" == 0 ]] || die "run as root (or with --root DIR)"
if [[ -z "$source_spec" ]]; then
  source_spec="$(cd "$here/../.." && pwd)"
  [[ -f "$source_spec/pyproject.toml" ]] || die "no --source given and $source_spec is not a flyslice checkout"
fi
python="$(command -v python3 || true)"
[[ -n "$python" ]] || die "python3 is not installed (apt-get install python3 python3-venv)"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  die "python3 >= 3.11 is needed, found $("$python" -V 2>&1) (Raspberry Pi OS bookworm has 3.11)"
"$python" -c 'import venv, ensurepip' 2>/dev/null || die "python3-venv is missing (apt-get install python3-venv)"

etc="$root/etc/flyslice"
venv="$root$prefix/venv"
unit_dir="$root/etc/systemd/system"
state="$root/var/lib/flyslice"

# 1. The service user: no login, no home beyond its state directory.
if [[ -z "$root" ]] && ! id flyslice >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/flyslice --no-create-home --shell /usr/sbin/nologin flyslice
fi

# 2. The software, in its own virtualenv (upgrades replace it wholesale).
echo "install.sh: installing flyslice into $venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "${venv_args[@]}" "$venv"
# shellcheck disable=SC2086  # pip_args is a list of words on purpose
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check $pip_args "$source_spec"
"$venv/bin/flyslice" --help >/dev/null || die "the installed flyslice command does not run"

# 3. Configuration and credentials, readable by the service user only.
install -d -m 0750 "$etc"
install -m 0600 "$kubeconfig" "$etc/kubeconfig"
umask 077
{
  echo "# flyslice agent settings (read by flyslice-agent.service)"
  echo "FLYSLICE_NODE=$node"
  echo "FLYSLICE_AGENT_ARGS=--no-pods${plaintext:+ $plaintext}${agent_args:+ $agent_args}"
} >"$etc/agent.env"
install -d -m 0700 "$state"
if [[ -z "$root" ]]; then
  chown -R root:flyslice "$etc" && chmod 0640 "$etc/kubeconfig" "$etc/agent.env"
  chown flyslice:flyslice "$state"
fi

# 4. The unit, pointing at this prefix.
install -d -m 0755 "$unit_dir"
sed "s#/opt/flyslice/venv#$prefix/venv#g" "$here/flyslice-agent.service" >"$unit_dir/flyslice-agent.service"
chmod 0644 "$unit_dir/flyslice-agent.service"

if [[ -n "$root" ]]; then
  echo "install.sh: installed into $root (no systemctl under --root)"
  exit 0
fi
systemctl daemon-reload
systemctl enable flyslice-agent.service
if [[ "$start" == 1 ]]; then
  systemctl restart flyslice-agent.service
  echo "install.sh: flyslice-agent is running as node $node; follow it with: journalctl -u flyslice-agent -f"
else
  echo "install.sh: flyslice-agent is enabled; start it with: systemctl start flyslice-agent"
fi
