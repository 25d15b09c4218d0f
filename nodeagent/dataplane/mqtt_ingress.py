"""MQTT ingress: devices publish to a broker (e.g. mosquitto on the gateway) and the agent
subscribes with paho-mqtt.

Topic convention: ``<prefix>/<slice>/<topic...>``; the payload is JSON (anything else is kept as
a string). A full envelope may also be published to ``<prefix>/<slice>/$envelope``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from flyslice.nodeagent.message import EnvelopeError, Message, device_envelope, new_message

log = logging.getLogger("flyslice.nodeagent.mqtt")

#: paho's reconnect back-off: the first retry after 1 s, doubling up to this many seconds. Short
#: enough that a broker started late (a gateway booting mosquitto after the agent) is picked up
#: within seconds, long enough not to hammer a host that refuses.
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 8


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
        self.broker = f"{host}:{port}"
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        self.subscribed = False
        #: Whether a broker session is up now; False from the start until the first CONNACK, so a
        #: broker that never answers is never mistaken for a quiet one.
        self.connected = False
        #: Failed connection attempts since the last successful one (each retried with back-off).
        self.failed_attempts = 0
        self.down_since: float | None = time.time()
        # paho calls back from its network thread; readers (status, heartbeat) are other threads.
        self._lock = threading.Lock()
        self._closing = False
        self.client.connect_async(host, port, keepalive=30)
        self.client.loop_start()

    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any = None
    ) -> None:
        if getattr(reason, "is_failure", False):
            with self._lock:
                self.failed_attempts += 1
                self.last_error = f"connect refused: {reason}"
            log.warning("MQTT broker %s refused the connection: %s", self.broker, reason)
            return
        client.subscribe(f"{self.prefix}/+/#", qos=self.qos)
        with self._lock:
            was_down = self.failed_attempts
            self.subscribed = self.connected = True
            self.failed_attempts = 0
            self.down_since = None
            self.last_error = ""
        if was_down:
            log.info("MQTT broker %s connected after %d failed attempt(s)", self.broker, was_down)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho does not hand over the OSError; a refused or unroutable TCP connect is all it can be.
        with self._lock:
            self.failed_attempts += 1
            first = self.failed_attempts == 1
            self.last_error = f"cannot connect to MQTT broker {self.broker}"
        if first:  # one line per outage, not one per retry
            log.warning("%s; retrying with back-off (up to %ss)", self.last_error, RECONNECT_MAX_S)

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any = None
    ) -> None:
        with self._lock:
            if not self.connected or self._closing:
                return
            self.connected = self.subscribed = False
            self.down_since = time.time()
            self.last_error = f"lost the connection to MQTT broker {self.broker}: {reason}"
        log.warning("%s; reconnecting with back-off", self.last_error)

    def health(self) -> tuple[bool, str]:
        """(connected, why not): what the agent reports to status while devices cannot reach it."""
        with self._lock:
            if self.connected:
                return True, ""
            since = self.down_since or time.time()
            return False, (
                f"{self.last_error or f'connecting to MQTT broker {self.broker}'} "
                f"(down {time.time() - since:.0f}s, {self.failed_attempts} failed attempt(s), "
                f"retrying with back-off up to {RECONNECT_MAX_S}s); devices' readings are not received"
            )

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
        self._closing = True  # our own disconnect is not an outage to report
        self.client.disconnect()
        self.client.loop_stop()
