"""The cloud ingest: consume MQTT telemetry, store it exactly once, serve the monitoring module."""

__all__: list[str] = []  # nothing re-exported: import the submodule that has the one job
