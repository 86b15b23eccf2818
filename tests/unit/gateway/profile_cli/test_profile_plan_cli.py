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


def _plan(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["plan", *args])
    return result.exit_code, result.output


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


def test_holes_in_a_map_are_never_read_through() -> None:
    _, output = _plan("--profile", "gear_hobber", "--json")
    blocks = [
        (r["start"], r["start"] + r["count"] - 1)
        for g in json.loads(output)["groups"]
        for r in g["requests"]
    ]
    holes = {6, 7, 8, 9, 18, 19, 26, 27, 28, 29, 38, 39}  # do not exist, says the manual
    assert not [b for b in blocks if holes & set(range(b[0], b[1] + 1))], blocks


def test_plan_refuses_an_opcua_profile() -> None:
    status, output = _plan("--profile", "raceway_grinder")
    assert status == 2 and "opcua" in output


def test_plan_of_an_unknown_profile_is_a_clear_error() -> None:
    status, output = _plan("--profile", "no_such_machine")
    assert status == 2 and "no profile with id 'no_such_machine'" in output
