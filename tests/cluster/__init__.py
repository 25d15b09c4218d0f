"""Tests on real kubelet + containerd nodes (tools/kubeenv/nodes.py); skipped unless built and asked for."""
