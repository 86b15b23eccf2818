"""What a gateway tells the ingest about each signal's longest silence (DeviceStatus 1.2)."""

from __future__ import annotations

from pathlib import Path

from gateway.profiles.loader import ProfileResolver

PROFILES = Path(__file__).resolve().parents[4] / "device_profiles"


def test_max_silence_is_the_heartbeat_plus_the_group_interval() -> None:
    profile = ProfileResolver().load(str(PROFILES / "345" / "raceway_grinder.yaml")).profile
    silence = profile.max_silence_s()
    assert set(silence) == {s.name for s in profile.signals}
    assert silence["machine_state"] == 60 + 1.0  # base heartbeat 60 s, group fast: 1 s
    assert silence["active_energy"] == 60 + 5.0  # group slow: 5 s
