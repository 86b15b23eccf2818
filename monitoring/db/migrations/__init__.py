"""Versioned SQL migrations (package data: ``NNNN_name[.postgresql|.timescaledb].sql``)."""

__all__: list[str] = []  # nothing re-exported: import the submodule that has the one job
