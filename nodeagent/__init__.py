"""The per-host node agent (seed 000's GNF agent: Function Management + SFC + Modular Platform).

Top level: the agent itself (``agent``), what it converges to (``spec``), its cache, heartbeat and
telemetry, and the SDK an NF author writes against (``sdk``, ``message``, ``nfkit``). Sub-packages:
``dataplane`` (chains of hosted NFs and transport), ``runtime`` (fNF modules, VNF drivers and runner),
``kube`` (cluster mode), ``nfs`` (the built-in NFs).
"""
