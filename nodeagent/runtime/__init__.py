"""Where NF code runs: fNFs as modules loaded into the agent, VNFs in processes of their own.

The Modular Platform (install, start, stop, update, uninstall, configure), module references and
their digest and signature checks, and the VNF drivers and the runner a VNF process executes.
"""
