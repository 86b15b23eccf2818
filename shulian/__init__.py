"""shulian: edge-to-cloud industrial telemetry (gateway, ingest, monitoring, simulators)."""

__version__ = "0.1.0"
__all__ = ["__version__"]
