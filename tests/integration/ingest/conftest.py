"""Fixtures for the ingest's integration tests: an in-process service and fake gateways."""

from ingest_fixtures import fake_gateway, migration_chains, start_ingest

__all__ = ["fake_gateway", "migration_chains", "start_ingest"]
