"""MQTT ingress: devices publish to a broker (e.g. mosquitto on the gateway) and the agent
subscribes with paho-mqtt.

Topic convention: ``<prefix>/<slice>/<topic...>``; the payload is JSON (anything else is kept as
a string). A full envelope may also be published to ``<prefix>/<slice>/$envelope``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from flyslice.nodeagent.message import EnvelopeError, Message, device_envelope, new_message

log = logging.getLogger("flyslice.nodeagent.mqtt")


class MqttIngress:
    def __init__(
        self,
        host: str,
        port: int,
        deliver: Callable[[Message, float], bool],
        *,
        prefix: str = "flyslice",
        client_id: str = "",
        qos: int = 1,
    ) -> None:
        self.prefix = prefix.rstrip("/")
        self.deliver = deliver
        self.qos = qos
        self.received = 0
        self.errors = 0
        self.dropped = 0
        self.last_error = ""
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 5)
        self.subscribed = False
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any = None
    ) -> None:
        if getattr(reason, "is_failure", False):
            self.last_error = f"connect refused: {reason}"
            return
        client.subscribe(f"{self.prefix}/+/#", qos=self.qos)
        self.subscribed = True

    def _on_message(self, client: mqtt.Client, userdata: Any, m: mqtt.MQTTMessage) -> None:
        # The prefix may span several levels (the embedded mode uses flyslice/<node>).
        rest = m.topic[len(self.prefix) + 1 :] if m.topic.startswith(self.prefix + "/") else ""
        parts = rest.split("/", 1)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            self.errors += 1
            self.last_error = f"topic {m.topic!r} is not {self.prefix}/<slice>/<topic>"
            return
        slice_, topic = parts
        try:
            payload: Any = json.loads(m.payload)
        except ValueError:
            payload = m.payload.decode(errors="replace")
        try:
            if topic == "$envelope":
                msg = device_envelope(payload, default_slice=slice_)
                msg["slice"] = slice_  # the topic decides the slice: no crossing into another slice
            else:
                msg = new_message(slice_, topic, payload)
        except EnvelopeError as exc:
            self.errors += 1
            self.last_error = f"{m.topic}: {exc}"
            return
        self.received += 1
        if not self.deliver(msg, 0.0):
            self.dropped += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
