"""Stream processor NF: filter, tumbling-window aggregate and threshold alarm.

config:
  filter: {field, op: > >= < <= == !=, value}      messages failing it are dropped
  window: {seconds, field, agg: mean|min|max|sum|count, topic}   aggregate emitted by a timer
  alarm:  {field, above?, below?, topic}            an alarm message on each crossing into alarm
  passthrough: forward the (filtered) input messages too (default true)
Values that are not numbers never match a numeric test; they are counted in ``skipped``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flyslice.nodeagent.message import Message
from flyslice.nodeagent.nfkit import get_field, number
from flyslice.nodeagent.sdk import NetworkFunction, Output

OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
}


class NF(NetworkFunction):
    config_schema = {
        "type": "object",
        "properties": {
            "filter": {
                "type": "object",
                "required": ["field", "op", "value"],
                "properties": {"field": {"type": "string"}, "op": {"enum": list(OPS)}, "value": {}},
                "additionalProperties": False,
            },
            "window": {
                "type": "object",
                "required": ["seconds", "field"],
                "properties": {
                    "seconds": {"type": "number", "exclusiveMinimum": 0},
                    "field": {"type": "string"},
                    "agg": {"enum": ["mean", "min", "max", "sum", "count"]},
                    "topic": {"type": "string"},
                },
                "additionalProperties": False,
            },
            "alarm": {
                "type": "object",
                "required": ["field"],
                "properties": {
                    "field": {"type": "string"},
                    "above": {"type": "number"},
                    "below": {"type": "number"},
                    "topic": {"type": "string"},
                },
                "additionalProperties": False,
            },
            "passthrough": {"type": "boolean"},
        },
        "additionalProperties": False,
    }

    def configure(self, config: dict[str, Any]) -> None:
        self.config = config
        flt = config.get("filter")
        self.filter = (flt["field"], OPS[flt["op"]], flt["value"]) if flt else None
        self.window = config.get("window")
        self.alarm = config.get("alarm")
        self.passthrough = config.get("passthrough", True)
        self.acc: dict[str, float] = getattr(self, "acc", {"n": 0, "sum": 0.0, "min": 0.0, "max": 0.0})
        self.in_alarm: bool = getattr(self, "in_alarm", False)
        self.skipped = 0
        self.last_parent: Message | None = None

    def start(self) -> None:
        if self.window:
            self.ctx.every(float(self.window["seconds"]), self.flush_window)

    def process(self, msg: Message) -> Output:
        if self.filter is not None:
            field, op, ref = self.filter
            value = get_field(msg, field)
            try:
                if value is None or not op(value, ref):
                    return None
            except TypeError:
                self.skipped += 1
                return None
        out: list[Message] = [msg] if self.passthrough else []
        if self.window:
            v = number(get_field(msg, self.window["field"]))
            if v is None:
                self.skipped += 1
            else:
                acc = self.acc
                if acc["n"] == 0:
                    acc["min"] = acc["max"] = v
                else:
                    acc["min"] = min(acc["min"], v)
                    acc["max"] = max(acc["max"], v)
                acc["n"] += 1
                acc["sum"] += v
                self.last_parent = msg
        if self.alarm:
            alarm = self._check_alarm(msg)
            if alarm is not None:
                out.append(alarm)
        return out

    def _check_alarm(self, msg: Message) -> Message | None:
        assert self.alarm is not None
        v = number(get_field(msg, self.alarm["field"]))
        if v is None:
            self.skipped += 1
            return None
        above, below = self.alarm.get("above"), self.alarm.get("below")
        now_alarm = (above is not None and v > above) or (below is not None and v < below)
        fired = now_alarm and not self.in_alarm
        self.in_alarm = now_alarm
        if not fired:
            return None
        payload = {
            "field": self.alarm["field"],
            "value": v,
            "above": above,
            "below": below,
            "source": msg["topic"],
        }
        return self.ctx.message(self.alarm.get("topic", "alarm"), payload, parent=msg)

    def flush_window(self) -> Output:
        acc = self.acc
        if acc["n"] == 0 or self.window is None:
            return None
        agg = self.window.get("agg", "mean")
        value = {
            "mean": acc["sum"] / acc["n"],
            "min": acc["min"],
            "max": acc["max"],
            "sum": acc["sum"],
            "count": acc["n"],
        }[agg]
        payload = {"agg": agg, "field": self.window["field"], "value": value, "count": int(acc["n"])}
        out = self.ctx.message(self.window.get("topic", "aggregate"), payload, parent=self.last_parent)
        self.acc = {"n": 0, "sum": 0.0, "min": 0.0, "max": 0.0}
        return out

    def export_state(self) -> Any:
        return {"acc": self.acc, "in_alarm": self.in_alarm}

    def import_state(self, state: Any) -> None:
        if isinstance(state, dict):
            self.acc = dict(state.get("acc", self.acc))
            self.in_alarm = bool(state.get("in_alarm", False))
