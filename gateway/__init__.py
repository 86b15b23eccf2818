"""The factory gateway agent: read devices by profile, normalize, buffer on disk, publish over MQTT."""

__all__: list[str] = []  # nothing re-exported: import the submodule that has the one job
