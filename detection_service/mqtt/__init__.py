"""MQTT and Home Assistant (docs/mqtt.md): the bus, states and commands over an MQTT broker."""

from detection_service.mqtt.bridge import MqttBridge, MqttCommands, build_mqtt_bridge, pipeline_commands

__all__ = ["MqttBridge", "MqttCommands", "build_mqtt_bridge", "pipeline_commands"]
