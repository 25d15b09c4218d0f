"""Firewall NF: a stateful match-action table in the style of NFD (seed 003).

config:
  rules: ordered list; the first whose ``match`` holds decides:
    {match: {topic?: <MQTT filter>, fields?: {<path>: <value>}, state?: {key: <path>, is: <state>}},
     action: allow|drop,
     setState?: {key: <path>, value: <state>, ttlSeconds?: n}}
  default: allow|drop (default drop: a firewall fails closed)
The state table maps the value at ``key`` (e.g. a device id) to a state with an expiry; a timer
(NFD's timer abstraction) removes expired entries. The table is handed over on update.
"""

from __future__ import annotations

import time
from typing import Any

from flyslice.nodeagent.message import Message
from flyslice.nodeagent.nfkit import get_field, topic_matches
from flyslice.nodeagent.sdk import NetworkFunction, Output

_RULE = {
    "type": "object",
    "required": ["action"],
    "properties": {
        "match": {
            "type": "object",
            "properties": {
                "topic": {"type": "string"},
                "fields": {"type": "object"},
                "state": {
                    "type": "object",
                    "required": ["key", "is"],
                    "properties": {"key": {"type": "string"}, "is": {"type": "string"}},
                },
            },
            "additionalProperties": False,
        },
        "action": {"enum": ["allow", "drop"]},
        "setState": {
            "type": "object",
            "required": ["key", "value"],
            "properties": {
                "key": {"type": "string"},
                "value": {"type": "string"},
                "ttlSeconds": {"type": "number", "exclusiveMinimum": 0},
            },
            "additionalProperties": False,
        },
    },
    "additionalProperties": False,
}


class NF(NetworkFunction):
    config_schema = {
        "type": "object",
        "properties": {"rules": {"type": "array", "items": _RULE}, "default": {"enum": ["allow", "drop"]}},
        "additionalProperties": False,
    }

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config
        self.rules: list[dict[str, Any]] = config.get("rules", [])
        self.default_allow = config.get("default", "drop") == "allow"
        self.table: dict[str, tuple[str, float]] = getattr(self, "table", {})
        self.denied = 0

    def start(self) -> None:
        self.ctx.every(1.0, self.expire)

    def _state_of(self, key: Any) -> str | None:
        entry = self.table.get(str(key))
        if entry is None or entry[1] < time.monotonic():
            return None
        return entry[0]

    def _matches(self, rule: dict[str, Any], msg: Message) -> bool:
        match = rule.get("match", {})
        if "topic" in match and not topic_matches(match["topic"], msg["topic"]):
            return False
        for path, want in match.get("fields", {}).items():
            if get_field(msg, path) != want:
                return False
        st = match.get("state")
        return not (st and self._state_of(get_field(msg, st["key"])) != st["is"])

    def process(self, msg: Message) -> Output:
        for rule in self.rules:
            if self._matches(rule, msg):
                set_state = rule.get("setState")
                if set_state:
                    key = get_field(msg, set_state["key"])
                    if key is not None:
                        ttl = set_state.get("ttlSeconds", 3600.0)
                        self.table[str(key)] = (set_state["value"], time.monotonic() + ttl)
                allow = rule["action"] == "allow"
                break
        else:
            allow = self.default_allow
        if allow:
            return msg
        self.denied += 1
        return None

    def expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (_, exp) in self.table.items() if exp < now]:
            del self.table[key]

    def export_state(self) -> Any:
        now = time.monotonic()
        return {"table": {k: [s, exp - now] for k, (s, exp) in self.table.items()}}

    def import_state(self, state: Any) -> None:
        now = time.monotonic()
        if isinstance(state, dict):
            for k, (s, left) in state.get("table", {}).items():
                self.table[k] = (s, now + float(left))
