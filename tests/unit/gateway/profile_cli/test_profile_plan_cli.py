"""`shulian profile plan` shows how few requests a poll cycle costs against one per signal.

The grinder-like and press-like Modbus profiles are gear_grinder and servo_press: the raceway
grinder is an OPC UA machine (one subscription per group, nothing to plan).
"""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from gateway.profile_cli import app
from gateway.profiles.loader import REPO_PROFILES


def _plan(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["plan", *args])
    return result.exit_code, result.output


SHIPPED_MODBUS = sorted(
    path
    for path in REPO_PROFILES.rglob("*.yaml")
    if "protocol: modbus" in path.read_text(encoding="utf-8")
)


def test_every_shipped_modbus_profile_needs_five_times_fewer_requests() -> None:
    """Issue 12: the planner reads across small gaps, so every shipped map merges well."""
    figures = []
    for path in SHIPPED_MODBUS:
        status, output = _plan("--profile", str(path), "--json")
        assert status == 0, output
        plan = json.loads(output)
        figures.append((plan["profile"], plan["requests_per_cycle"], plan["one_per_signal"]))
    table = "\n".join(
        f"{profile:20} {requests:3} request(s) per cycle vs {signals:3} one per signal "
        f"({signals / requests:.1f}x fewer)"
        for profile, requests, signals in figures
    )
    print(f"\nshulian profile plan, every shipped Modbus profile:\n{table}")
    assert len(figures) >= 9, table
    assert all(signals >= 5 * requests for _, requests, signals in figures), table


@pytest.mark.parametrize("profile", ["gear_grinder", "servo_press"])
def test_plan_needs_at_least_five_times_fewer_requests(profile: str) -> None:
    status, output = _plan("--profile", profile)
    assert status == 0, output
    totals = re.search(
        r"per cycle: (\d+) request\(s\) vs (\d+) with one request per signal", output
    )
    assert totals, output
    requests, one_per_signal = int(totals.group(1)), int(totals.group(2))
    assert one_per_signal >= 5 * requests, output
    # Every block is listed with its function code, range and signals.
    assert (
        len(
            re.findall(r"^    FC3 holding \d+\.\.\d+ \(\d+ registers, \d+ signals?\)", output, re.M)
        )
        == requests
    )


def test_plan_json_has_each_request() -> None:
    status, output = _plan("--profile", "servo_press", "--json")
    assert status == 0
    plan = json.loads(output)
    assert plan["one_per_signal"] >= 5 * plan["requests_per_cycle"]
    blocks = [r for g in plan["groups"] for r in g["requests"]]
    assert [(b["start"], b["count"]) for b in blocks] == [(0, 15), (16, 14)]


def test_a_lower_device_limit_costs_more_requests() -> None:
    _, default = _plan("--profile", "gear_grinder", "--json")
    _, limited = _plan("--profile", "gear_grinder", "--json", "--max-registers", "8")
    assert json.loads(limited)["requests_per_cycle"] > json.loads(default)["requests_per_cycle"]
    assert all(r["count"] <= 8 for g in json.loads(limited)["groups"] for r in g["requests"])


def test_unreadable_ranges_are_never_read_through() -> None:
    _, output = _plan("--profile", "energy_meter", "--json")
    blocks = [
        (r["table"], r["start"], r["start"] + r["count"] - 1)
        for g in json.loads(output)["groups"]
        for r in g["requests"]
    ]
    # The meter's holes, listed under modbus.unreadable: not served by every DTSU666.
    holes = set(range(0x2022, 0x202A)) | set(range(0x2032, 0x2044))
    assert not [b for b in blocks if holes & set(range(b[1], b[2] + 1))], blocks


def test_max_gap_zero_reads_only_mapped_registers() -> None:
    _, output = _plan("--profile", "gear_hobber", "--json", "--max-gap", "0")
    blocks = [(r["start"], r["count"]) for g in json.loads(output)["groups"] for r in g["requests"]]
    reserved = {6, 7, 8, 9, 18, 19, 26, 27, 28, 29, 38, 39}  # listed by nobody
    assert not [b for b in blocks if reserved & set(range(b[0], b[0] + b[1]))], blocks
    assert len(blocks) > 2


def test_plan_prints_addresses_as_the_profile_writes_them() -> None:
    status, output = _plan("--profile", "energy_meter")
    assert status == 0, output
    # The DTSU666 map is written in hex (address: 0x2000), and so is the plan.
    assert "FC3 holding 0x2000..0x2021 (34 registers, 17 signals): voltage.l12@0x2000," in output
    assert "frequency@0x2044" in output and "never reading holding 0x2022..0x2029" in output
    assert "8192" not in output
    # A profile written in decimal stays decimal.
    assert "FC3 holding 0..25 " in _plan("--profile", "gear_hobber")[1]


def test_plan_refuses_an_opcua_profile() -> None:
    status, output = _plan("--profile", "raceway_grinder")
    assert status == 2 and "opcua" in output


def test_plan_of_an_unknown_profile_is_a_clear_error() -> None:
    status, output = _plan("--profile", "no_such_machine")
    assert status == 2 and "no profile with id 'no_such_machine'" in output
