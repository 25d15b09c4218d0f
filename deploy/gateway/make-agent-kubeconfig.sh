#!/usr/bin/env bash
# Make the kubeconfig a bare gateway's agent uses: a client certificate for user
# system:flyslice-agent:<node> in group system:flyslice-agents, signed by the cluster through the
# CertificateSigningRequest API (signer kubernetes.io/kube-apiserver-client). Run it where kubectl
# has cluster-admin rights (on a k3s server: KUBECONFIG=/etc/rancher/k3s/k3s.yaml):
#
#   deploy/gateway/make-agent-kubeconfig.sh gw-1 --server https://192.168.1.10:6443 > gw-1.kubeconfig
#
# The private key is made here and never leaves the kubeconfig; copy that file to the gateway
# (install.sh --kubeconfig) and delete your copy.
#
# Options:
#   --server URL       API server address as the gateway reaches it (default: the current context's;
#                      k3s writes https://127.0.0.1:6443, which a gateway cannot reach)
#   --days N           certificate lifetime (default 365)
#   --kubectl PATH     kubectl to use (default: kubectl on PATH)
set -euo pipefail

die() { echo "make-agent-kubeconfig.sh: $*" >&2; exit 1; }

node="" server="" days=365 kubectl="kubectl"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --server) server="${2:-}"; shift 2 ;;
    --days) days="${2:-}"; shift 2 ;;
    --kubectl) kubectl="${2:-}"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [[ -z "$node" ]] || die "one node at a time"; node="$1"; shift ;;
  esac
done
[[ -n "$node" ]] || die "usage: make-agent-kubeconfig.sh NODE [--server URL] [--days N] > NODE.kubeconfig"
[[ "$node" =~ ^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$ && ${#node} -le 200 ]] ||
  die "'$node' is not a valid EdgeNode name (lower-case letters, digits, '-' and '.')"
[[ "$days" =~ ^[0-9]+$ && "$days" -ge 1 ]] || die "--days must be a positive number"
command -v openssl >/dev/null || die "openssl is needed"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
user="system:flyslice-agent:$node"
csr_name="flyslice-agent-$node-$(date +%s)"

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/key.pem" 2>/dev/null
openssl req -new -key "$work/key.pem" -subj "/O=system:flyslice-agents/CN=$user" -out "$work/csr.pem" 2>/dev/null

"$kubectl" apply -f - >/dev/null <<CSR
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: $csr_name
  labels: {app.kubernetes.io/part-of: flyslice, flyslice.io/node: "$node"}
spec:
  signerName: kubernetes.io/kube-apiserver-client
  expirationSeconds: $((days * 86400))
  usages: [digital signature, client auth]
  request: $(base64 <"$work/csr.pem" | tr -d '\n')
CSR
"$kubectl" certificate approve "$csr_name" >/dev/null
cert=""
for _ in $(seq 1 120); do
  cert="$("$kubectl" get csr "$csr_name" -o 'jsonpath={.status.certificate}')"
  [[ -n "$cert" ]] && break
  sleep 0.5
done
"$kubectl" delete csr "$csr_name" --wait=false >/dev/null 2>&1 || true
[[ -n "$cert" ]] || die "the cluster did not sign $csr_name in 60 s (is the csrsigning controller running?)"

[[ -n "$server" ]] || server="$("$kubectl" config view --minify -o 'jsonpath={.clusters[0].cluster.server}')"
ca="$("$kubectl" config view --raw --minify -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}')"
[[ -n "$ca" ]] || die "the current kubeconfig embeds no certificate-authority-data to hand on"

cat <<KUBECONFIG
apiVersion: v1
kind: Config
clusters:
  - name: flyslice
    cluster:
      server: $server
      certificate-authority-data: $ca
users:
  - name: $user
    user:
      client-certificate-data: $cert
      client-key-data: $(base64 <"$work/key.pem" | tr -d '\n')
contexts:
  - name: flyslice-agent
    context: {cluster: flyslice, user: "$user"}
current-context: flyslice-agent
KUBECONFIG
echo "make-agent-kubeconfig.sh: kubeconfig for $user written (valid $days days)" >&2
