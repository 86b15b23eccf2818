"""After a broker outage the ingest is back on the broker within seconds of its return."""

from __future__ import annotations

import time

import pytest
from ingest_support import scalar, wait_until

from shulian.devservices import Mosquitto


@pytest.mark.timeout(90)
def test_the_ingest_reconnects_within_three_seconds_of_a_long_outage_ending(
    start_ingest, fake_gateway, mosquitto: Mosquitto, pg_url
):
    service = start_ingest()
    assert service.consumer is not None
    service.consumer.subscribed.wait(10)
    mosquitto.stop()
    wait_until(lambda: not service.consumer.connected.is_set(), what="the ingest to notice")
    time.sleep(20)  # long enough for an exponential backoff to reach long waits
    mosquitto.start()
    back = time.monotonic()
    wait_until(lambda: service.consumer.subscribed.is_set(), timeout_s=30, what="resubscribed")
    assert time.monotonic() - back < 3.0
    gw = fake_gateway(enterprise="ent-r", gateway="gw-r", devices=["lathe-1"])
    gw.birth()
    wait_until(lambda: scalar(pg_url, "SELECT count(*) FROM gateways") == 1, what="registered")
