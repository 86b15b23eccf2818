"""After a broker outage the ingest is back on the broker within seconds of its return."""

from __future__ import annotations

import time

import pytest
from ingest_support import FakeGateway, ingest_settings, scalar, wait_until

from ingest.service import IngestService
from shulian.devservices import Mosquitto


@pytest.mark.timeout(90)
def test_the_ingest_reconnects_within_three_seconds_of_a_long_outage_ending(
    mosquitto: Mosquitto, pg_url_per_path: dict[str, str]
):
    """One ingest per storage path (each its own database and share group) through the same
    20 s outage: both paths checked in one outage rather than one outage per path."""
    services: dict[str, IngestService] = {}
    gw: FakeGateway | None = None
    try:
        for path, url in pg_url_per_path.items():
            services[path] = IngestService(
                ingest_settings(
                    url, mosquitto.url, storage={"path": path}, mqtt={"share_group": f"i-{path}"}
                )
            )
            services[path].start(wait_for_db_s=10)
        consumers = {path: service.consumer for path, service in services.items()}
        for path, consumer in consumers.items():
            assert consumer is not None and consumer.subscribed.wait(10), path
        mosquitto.stop()
        for path, consumer in consumers.items():
            wait_until(lambda c=consumer: not c.connected.is_set(), what=f"{path}: noticed")
        time.sleep(20)  # long enough for an exponential backoff to reach long waits
        mosquitto.start()
        back = time.monotonic()
        for path, consumer in consumers.items():
            wait_until(lambda c=consumer: c.subscribed.is_set(), timeout_s=30, what=path)
            assert time.monotonic() - back < 3.0, f"{path}: resubscribed after 3 s"
        gw = FakeGateway(mosquitto.url, "ent-r", "gw-r", ["lathe-1"]).connect()
        gw.birth()
        for path, url in pg_url_per_path.items():
            wait_until(
                lambda u=url: scalar(u, "SELECT count(*) FROM gateways") == 1,
                what=f"{path}: registered",
            )
    finally:
        if gw is not None:
            gw.close()
        for service in services.values():
            service.stop()
