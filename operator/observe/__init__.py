"""Observability served next to the status API: Prometheus metrics (``/metrics``) and the read-only web
console (``/console/``, live over server-sent events), for ``flyslice up`` and the operator alike.

It reads what the controllers already publish (the Slice status documents, the controller state, the
source status) and never changes anything; the runtimes hand it callables, so it imports neither.
"""
