"""The factory gateway agent: read devices by profile, normalize, buffer on disk, publish over MQTT."""
