"""The built-in network functions (broker, stream processor, storage, firewall, rate limiter).

Written against ``flyslice.nodeagent.sdk`` only, like any third-party NF, so each runs unchanged as an
fNF inside the agent or as a VNF in the runner; manifests reference them as ``builtin:<name>``.
"""
