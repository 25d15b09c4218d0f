"""Broker NF: topic-based fan-out to the instance's next hops, with retained last values.

config:
  subscriptions: {<next-hop instance>: [<MQTT topic filter>, ...]}  (absent: every hop gets all)
  retain: keep the last payload per topic (handed over on update)
"""

from __future__ import annotations

from typing import Any

from flyslice.nodeagent.message import Message
from flyslice.nodeagent.nfkit import topic_matches
from flyslice.nodeagent.sdk import NetworkFunction, Output


class NF(NetworkFunction):
    config_schema = {
        "type": "object",
        "properties": {
            "subscriptions": {
                "type": "object",
                "additionalProperties": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
            "retain": {"type": "boolean"},
        },
        "additionalProperties": False,
    }

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config
        self.subscriptions: list[tuple[str, list[str]]] = sorted(config.get("subscriptions", {}).items())
        self.retain: bool = config.get("retain", False)
        self.retained: dict[str, Any] = getattr(self, "retained", {})
        self.unmatched = 0

    def process(self, msg: Message) -> Output:
        topic = msg["topic"]
        if self.retain:
            self.retained[topic] = msg["payload"]
        if not self.subscriptions:
            return msg
        targets = [
            hop for hop, filters in self.subscriptions if any(topic_matches(f, topic) for f in filters)
        ]
        if not targets:
            self.unmatched += 1
            return None
        msg["route"] = targets
        return msg

    def export_state(self) -> Any:
        return {"retained": self.retained}

    def import_state(self, state: Any) -> None:
        if isinstance(state, dict):
            self.retained.update(state.get("retained", {}))
