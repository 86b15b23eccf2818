"""The ingest's database layer: migrations, storage paths, partitions, rollups, binary COPY."""

__all__: list[str] = []  # nothing re-exported: import the submodule that has the one job
