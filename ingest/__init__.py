"""The cloud ingest: consume MQTT telemetry, store it exactly once, serve the monitoring module."""
