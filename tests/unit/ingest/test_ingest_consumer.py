"""Lane routing: one gateway's messages stay in one lane; a gateway is enterprise and gateway."""

from __future__ import annotations

from ingest.consumer import lane_of
from wire import topics


def test_every_topic_of_a_gateway_maps_to_one_lane():
    for lanes in (1, 2, 5, 32):
        for enterprise in ("ent-a", "ent-b", "x"):
            found = {
                lane_of(topic, lanes)
                for topic in (
                    topics.telemetry(enterprise, "gw-01"),
                    topics.gateway_status(enterprise, "gw-01"),
                    topics.device_status(enterprise, "gw-01", "dev-1"),
                    topics.metrics(enterprise, "gw-01"),
                )
            }
            assert len(found) == 1 and 0 <= found.pop() < lanes


def test_gateways_of_one_id_in_many_enterprises_spread_over_the_lanes():
    """Gateway ids repeat across enterprises (gw-01 everywhere): routing by the id alone would
    put every enterprise's gw-01 into one lane."""
    lanes = {lane_of(topics.telemetry(f"ent-{n:03d}", "gw-01"), 4) for n in range(40)}
    assert lanes == {0, 1, 2, 3}
