"""Versioned SQL migrations (package data: ``NNNN_name[.postgresql|.timescaledb].sql``)."""
