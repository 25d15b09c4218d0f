"""The embedded runtime: ``flyslice up`` on one machine, no cluster.

Runs the shared reconcile core against a directory or git source, one in-process agent per EdgeNode,
and serves the read-only status API and the terminal live view.
"""
