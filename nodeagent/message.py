"""The message envelope every hop of the data plane carries (the Di interface's unit).

A message is a plain JSON-able dict so that it crosses TCP, MQTT and HTTP unchanged::

    {"slice": "wildfire", "topic": "sensors/gw1/temp", "payload": {...},
     "to": "wildfire-sp-gw1",                   # optional: the instance it is addressed to
     "trace": {"id": "…", "t0": <ns>, "hops": [["wildfire-broker-gw1", <ns>], ...]}}

``t0`` is the wall-clock time (``time.time_ns``) the message entered the first agent and every
instance appends ``[instance, time_ns]`` when it has processed it, so that per-hop and end-to-end
latencies can be read off any message, on any node of one host (or of hosts with synced clocks).
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any

Message = dict[str, Any]

_ids = itertools.count()
_prefix = f"{os.getpid():x}-{time.time_ns() & 0xFFFFFF:x}"


class EnvelopeError(ValueError):
    """A message that is not a valid envelope."""


def new_message(slice_: str, topic: str, payload: Any, *, parent: Message | None = None) -> Message:
    """A fresh envelope; a derived message (``parent``) keeps the trace id and origin time."""
    if parent is not None and isinstance(parent.get("trace"), dict):
        ptrace = parent["trace"]
        trace = {
            "id": ptrace.get("id", ""),
            "t0": ptrace.get("t0", time.time_ns()),
            "hops": list(ptrace.get("hops", ())),
        }
    else:
        trace = {"id": f"{_prefix}-{next(_ids)}", "t0": time.time_ns(), "hops": []}
    return {"slice": slice_, "topic": topic, "payload": payload, "trace": trace}


def check_envelope(obj: Any, *, default_slice: str | None = None) -> Message:
    """Validate (and complete) an envelope received from outside; raises EnvelopeError naming the field."""
    if not isinstance(obj, dict):
        raise EnvelopeError(f"message must be a JSON object, got {type(obj).__name__}")
    slice_ = obj.get("slice", default_slice)
    if not isinstance(slice_, str) or not slice_:
        raise EnvelopeError("message field 'slice' must be a non-empty string")
    topic = obj.get("topic", "")
    if not isinstance(topic, str):
        raise EnvelopeError("message field 'topic' must be a string")
    if "to" in obj and not isinstance(obj["to"], str):
        raise EnvelopeError("message field 'to' must be a string")
    trace = obj.get("trace")
    if trace is None:
        trace = {"id": f"{_prefix}-{next(_ids)}", "t0": time.time_ns(), "hops": []}
    elif (
        not isinstance(trace, dict)
        or not isinstance(trace.get("t0", 0), int)
        or not isinstance(trace.setdefault("hops", []), list)
    ):
        raise EnvelopeError("message field 'trace' must be an object with integer 't0' and list 'hops'")
    trace.setdefault("t0", time.time_ns())
    obj["slice"] = slice_
    obj["topic"] = topic
    obj.setdefault("payload", None)
    obj["trace"] = trace
    return obj


def device_envelope(obj: Any, *, default_slice: str | None = None) -> Message:
    """An envelope from a device (MQTT, HTTP): checked, and without ``to``, so that a device always
    enters its slice at the entry instances and can never skip one (a firewall, say)."""
    msg = check_envelope(obj, default_slice=default_slice)
    msg.pop("to", None)
    msg.pop("route", None)
    return msg


def e2e_latency_ns(msg: Message, now_ns: int | None = None) -> int:
    """Time since the message entered the first agent."""
    return (now_ns if now_ns is not None else time.time_ns()) - int(msg["trace"]["t0"])


def hop_latencies_ns(msg: Message) -> list[int]:
    """Time spent between consecutive stamps (the first from ``t0``)."""
    trace = msg["trace"]
    last = int(trace["t0"])
    out = []
    for _name, t in trace["hops"]:
        out.append(int(t) - last)
        last = int(t)
    return out
