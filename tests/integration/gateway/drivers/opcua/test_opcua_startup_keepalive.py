"""Two groups on one session against a real asyncua server: every initial value arrives, and the
server's empty first keep-alive of the second subscription (which asyncua sees before it has
registered that subscription) no longer logs a warning."""

from __future__ import annotations

import logging

import pytest
from opcua_server_fixture import GrinderServer, make_driver, module_grinder, shared_grinder
from support import wait_until_async

from gateway.drivers.base import RawReading
from gateway.drivers.opcua.models import OpcUaProfile
from gateway.profiles.models import GroupSpec

__all__ = ["module_grinder", "shared_grinder"]  # fixtures, used by name
pytestmark = pytest.mark.asyncio(loop_scope="module")

GROUPS = [GroupSpec(name="fast", interval_ms=100), GroupSpec(name="slow", interval_ms=500)]


async def test_every_group_gets_its_initial_values_without_a_warning(
    shared_grinder: GrinderServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The fixture quietens asyncua to ERROR; a gateway runs it at WARNING.
    caplog.set_level(logging.WARNING, logger="asyncua.client.ua_session.UaSession")
    caplog.set_level(logging.DEBUG, logger="gateway.drivers.opcua.transport")  # (last: handler)
    profile = OpcUaProfile.model_validate(
        {
            "id": "two-groups",
            "protocol": "opcua",
            "groups": [g.model_dump() for g in GROUPS],
            "signals": [
                {
                    "name": "spindle_speed",
                    "node_id": "ns=2;s=Grinder.SpindleSpeed",
                    "group": "fast",
                },
                {"name": "part_count", "node_id": "ns=2;s=Grinder.PartCount", "group": "slow"},
            ],
            "opcua": {"keepalive_s": 0.5, "timeout_s": 1.0},
        }
    )
    for _ in range(3):  # a fresh session each time
        readings: list[RawReading] = []
        driver = make_driver(shared_grinder.endpoint, profile)
        async with driver:
            for group in GROUPS:
                await driver.subscribe(group, readings.extend)
            await wait_until_async(
                lambda got=readings: {r.signal for r in got} == {"spindle_speed", "part_count"},
                timeout_s=5,
                what="the initial value of both groups",
            )
    warned = [r for r in caplog.records if "unknown subscription" in r.getMessage()]
    assert warned, "the server's early keep-alive was seen (else this test proves nothing)"
    assert all(r.levelno == logging.DEBUG for r in warned), [r.levelname for r in warned]
