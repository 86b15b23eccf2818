"""The ingest's database layer: migrations, storage paths, partitions, rollups, binary COPY."""
