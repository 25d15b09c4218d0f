"""The data plane (seed 000's SFC component): per-slice chains of hosted NFs and how messages move.

A hosted NF with its lifecycle state machine, counters and memory accounting; chains and next-hop
routing; the TCP transport between agents and runners; bounded queues; MQTT ingress from devices.
"""
