"""Pure rules of the monitoring module: the access policy and the warning colours."""

from __future__ import annotations

from datetime import date

import pytest

from monitoring.api.access import Capability, Reach, can, knows_of
from monitoring.auth import Principal, Role, hash_secret, new_secret
from monitoring.kpis import classify_warning

BUREAU = Principal(1, Role.BUREAU)
ENT_A = Principal(2, Role.ENTERPRISE, enterprise="ent-a")
PROVIDER = Principal(3, Role.PROVIDER, provider="sp-1")


def test_enterprise_reaches_only_itself() -> None:
    for cap in (Capability.ENTERPRISE_SUMMARY, Capability.DEVICE_STATUS, Capability.DEVICE_DATA):
        assert can(ENT_A, cap, "ent-a", Reach())
        assert not can(ENT_A, cap, "ent-b", Reach())
    assert not can(ENT_A, Capability.CITY_KPIS, None, Reach())
    assert not knows_of(ENT_A, "ent-b", Reach())


def test_bureau_needs_a_grant_for_device_data() -> None:
    assert can(BUREAU, Capability.ENTERPRISE_SUMMARY, "ent-a", Reach())
    assert not can(BUREAU, Capability.DEVICE_DATA, "ent-a", Reach())
    assert can(BUREAU, Capability.DEVICE_DATA, "ent-a", Reach(granted=frozenset({"ent-a"})))


def test_provider_sees_status_of_served_enterprises_only() -> None:
    reach = Reach(served=frozenset({"ent-a"}))
    assert can(PROVIDER, Capability.DEVICE_STATUS, "ent-a", reach)
    assert not can(PROVIDER, Capability.DEVICE_DATA, "ent-a", reach)
    assert not can(PROVIDER, Capability.DEVICE_STATUS, "ent-b", reach)


def test_tokens_are_random_and_hashed() -> None:
    first, second = new_secret(), new_secret()
    assert first != second and first.startswith("slk_") and len(first) > 40
    assert len(hash_secret(first)) == 32 and hash_secret(first) != hash_secret(second)


@pytest.mark.parametrize(
    ("output", "energy", "colour"),
    [
        (1000, 500, "green"),
        (800, 500, "blue"),
        (600, 500, "orange"),
        (400, 500, "red"),
        (1000, 800, "orange"),
        (1000, 700, "blue"),
    ],
)
def test_warning_colour_rule(output: float, energy: float, colour: str) -> None:
    warning = classify_warning("e", date(2025, 6, 9), output, energy, [1000] * 14, [500] * 14, 5)
    assert warning.colour == colour


def test_short_baseline_is_grey_and_energy_only_enterprises_use_the_output_scale() -> None:
    assert (
        classify_warning("e", date(2025, 6, 9), 0, 0, [0] * 10 + [5] * 4, [0] * 14, 5).colour
        == "grey"
    )
    assert classify_warning("e", date(2025, 6, 9), 0, 200, [0] * 14, [500] * 14, 5).colour == "red"
