"""The data plane (seed 000's SFC component): per-slice chains of hosted NFs and how messages move.

A hosted NF with its lifecycle state machine, counters and memory accounting; chains and next-hop
routing; the TCP transport between agents and runners; bounded queues; MQTT ingress from devices.
"""

from typing import TYPE_CHECKING

from flyslice._lazy import lazy_exports

if TYPE_CHECKING:
    from flyslice.nodeagent.dataplane.chains import DataPlane, SliceWorker
    from flyslice.nodeagent.dataplane.hosted import HostedNF, describe_fault
    from flyslice.nodeagent.dataplane.lifecycle import State
    from flyslice.nodeagent.dataplane.mqtt_ingress import MqttIngress
    from flyslice.nodeagent.dataplane.transport import ServerThread, TcpIngress, TcpSender, parse_address

__getattr__ = lazy_exports(
    __name__,
    {
        "chains": ["DataPlane", "SliceWorker"],
        "hosted": ["HostedNF", "describe_fault"],
        "lifecycle": ["State"],
        "mqtt_ingress": ["MqttIngress"],
        "transport": ["ServerThread", "TcpIngress", "TcpSender", "parse_address"],
    },
)

__all__ = [
    "DataPlane",
    "HostedNF",
    "MqttIngress",
    "ServerThread",
    "SliceWorker",
    "State",
    "TcpIngress",
    "TcpSender",
    "describe_fault",
    "parse_address",
]
