"""Fixtures that start the ingest in-process and fake gateways: shared by the ingest's tests and by
the monitoring tests that feed their data through the real ingest (each conftest imports them)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from ingest_support import FakeGateway, ingest_settings

from ingest.db.migrate import INGEST_CHAIN, Chain
from ingest.service import IngestService
from shulian.devservices import Mosquitto


@pytest.fixture()
def migration_chains() -> tuple[Chain, ...]:
    """What ``start_ingest``'s services migrate: the ingest's chain (the monitoring's conftest
    adds its own, as a process that also serves the monitoring does)."""
    return (INGEST_CHAIN,)


@pytest.fixture()
def start_ingest(
    pg_url: str, mosquitto: Mosquitto, migration_chains: tuple[Chain, ...]
) -> Iterator[Callable[..., IngestService]]:
    """Start in-process ingest services (stopped at the end); kwargs are settings sections."""
    started: list[IngestService] = []

    def start(**sections: dict[str, object]) -> IngestService:
        settings = ingest_settings(pg_url, mosquitto.url, **sections)
        service = IngestService(settings, chains=migration_chains)
        service.start(wait_for_db_s=10)
        assert service.consumer is not None
        assert service.consumer.subscribed.wait(10), "ingest did not subscribe at the broker"
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture()
def fake_gateway(mosquitto: Mosquitto) -> Iterator[Callable[..., FakeGateway]]:
    made: list[FakeGateway] = []

    def make(
        enterprise: str = "ent-001", gateway: str = "gw-01", devices: list[str] | None = None
    ) -> FakeGateway:
        gw = FakeGateway(
            mosquitto.url, enterprise, gateway, devices or ["dev-1", "dev-2"]
        ).connect()
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.close()
