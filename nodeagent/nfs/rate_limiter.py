"""Rate limiter NF: a token bucket per key, refilled by a timer (NFD's timer abstraction).

config:
  rate: tokens added per second (per key)
  burst: bucket size (default = rate)
  key: field path whose value selects the bucket (e.g. payload.device); absent = one bucket
  refillMs: timer period (default 100)
A message takes one token or is dropped (counted in ``limited``). Buckets go over on update.
"""

from __future__ import annotations

from typing import Any

from flyslice.nodeagent.message import Message
from flyslice.nodeagent.nfkit import get_field
from flyslice.nodeagent.sdk import NetworkFunction, Output

MAX_BUCKETS = 100_000


class NF(NetworkFunction):
    config_schema = {
        "type": "object",
        "required": ["rate"],
        "properties": {
            "rate": {"type": "number", "exclusiveMinimum": 0},
            "burst": {"type": "number", "minimum": 1},
            "key": {"type": "string"},
            "refillMs": {"type": "number", "exclusiveMinimum": 0},
        },
        "additionalProperties": False,
    }

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config
        self.rate = float(config["rate"])
        self.burst = float(config.get("burst", max(self.rate, 1.0)))
        self.key = config.get("key")
        self.refill_s = config.get("refillMs", 100) / 1000
        self.buckets: dict[str, float] = getattr(self, "buckets", {})
        self.limited = 0

    def start(self) -> None:
        self.ctx.every(self.refill_s, self.refill)

    def process(self, msg: Message) -> Output:
        key = str(get_field(msg, self.key)) if self.key else ""
        tokens = self.buckets.get(key)
        if tokens is None:
            if len(self.buckets) >= MAX_BUCKETS:
                self.limited += 1
                return None
            tokens = self.burst
        if tokens >= 1.0:
            self.buckets[key] = tokens - 1.0
            return msg
        self.buckets[key] = tokens
        self.limited += 1
        return None

    def refill(self) -> None:
        add = self.rate * self.refill_s
        burst = self.burst
        full = []
        for key, tokens in self.buckets.items():
            tokens += add
            if tokens >= burst:
                full.append(key)
            else:
                self.buckets[key] = tokens
        for key in full:  # a full bucket is the same as no bucket: forget it to bound memory
            del self.buckets[key]

    def export_state(self) -> Any:
        return {"buckets": self.buckets}

    def import_state(self, state: Any) -> None:
        if isinstance(state, dict):
            self.buckets.update(state.get("buckets", {}))
