"""MQTT ingress: paho-mqtt sensors publish to a real mosquitto broker; the agent subscribes."""

from __future__ import annotations

import json
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from flyslice.nodeagent.agent import Agent

from .conftest import Sink, make_spec, wait_for

pytestmark = pytest.mark.mqtt


def sensor(port: int) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sensor-1")
    client.connect("127.0.0.1", port)
    client.loop_start()
    return client


def test_sensor_messages_enter_the_slice_chain(agents: Callable[..., Agent], mosquitto: int) -> None:
    agent = agents(mqtt=("127.0.0.1", mosquitto))
    sink = Sink()
    agent.on_sink(sink)
    agent.converge(
        [
            make_spec(
                "fw", "firewall", {"rules": [{"match": {"topic": "sensors/#"}, "action": "allow"}]}, ["sp"]
            ),
            make_spec("sp", "stream_processor", {"filter": {"field": "temp", "op": ">", "value": 0}}),
        ]
    )
    assert agent.mqtt is not None
    wait_for(lambda: agent.mqtt.subscribed)  # type: ignore[union-attr]
    client = sensor(mosquitto)
    try:
        for temp in (21.5, -3, 30):
            client.publish(
                "flyslice/s1/sensors/gw1/temp", json.dumps({"temp": temp}), qos=1
            ).wait_for_publish(5)
        client.publish("flyslice/s1/other/topic", json.dumps({"temp": 99}), qos=1).wait_for_publish(5)
        client.publish("flyslice/s1/sensors/gw1/raw", b"not json", qos=1).wait_for_publish(5)
        client.publish(
            "flyslice/s1/$envelope",
            json.dumps({"slice": "s9", "to": "sp", "topic": "sensors/x", "payload": {"temp": 5}}),
            qos=1,
        ).wait_for_publish(5)
        client.publish("flyslice/nowhere/sensors/t", json.dumps({"temp": 1}), qos=1).wait_for_publish(5)
        wait_for(lambda: agent.mqtt.received == 7)  # type: ignore[union-attr]
        wait_for(lambda: len(sink.messages) == 3)
    finally:
        client.loop_stop()
        client.disconnect()
    assert [m["payload"]["temp"] for m in sink.messages] == [21.5, 30, 5]
    assert all(m["slice"] == "s1" for m in sink.messages)  # an envelope cannot jump into another slice
    assert agent.platform.instances["fw"].nf.denied == 1  # other/topic
    assert agent.platform.instances["fw"].counters.in_ == 6  # the envelope's "to" could not skip the firewall
    sp = agent.platform.instances["sp"].counters
    assert (sp.in_, sp.out) == (5, 3)  # -3 and the raw (non-JSON, kept as a string) payload filtered
    assert agent.plane.unroutable == 1 and agent.mqtt.dropped == 1  # type: ignore[union-attr]


def test_multi_level_prefix_selects_the_slice_after_the_prefix(
    agents: Callable[..., Agent], mosquitto: int
) -> None:
    agent = agents(mqtt=("127.0.0.1", mosquitto), mqtt_prefix="flyslice/gw1")
    sink = Sink()
    agent.on_sink(sink)
    agent.converge([make_spec("b", "broker", slice_="wildfire")])
    wait_for(lambda: agent.mqtt.subscribed)  # type: ignore[union-attr]
    client = sensor(mosquitto)
    try:
        client.publish("flyslice/gw1/wildfire/sensors/t", json.dumps({"t": 1}), qos=1).wait_for_publish(5)
        client.publish("flyslice/gw1/wildfire", b"{}", qos=1).wait_for_publish(5)  # no topic after the slice
        wait_for(lambda: len(sink.messages) == 1 and agent.mqtt.errors == 1)  # type: ignore[union-attr]
    finally:
        client.loop_stop()
        client.disconnect()
    assert (sink.messages[0]["slice"], sink.messages[0]["topic"]) == ("wildfire", "sensors/t")
