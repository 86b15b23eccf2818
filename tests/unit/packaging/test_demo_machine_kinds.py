"""The demo registers each device's machine kind as its profile declares it, and every one of those
kinds has a label in both UI languages (English pages showed raw ids such as ``raceway_grinder``)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from shulian.demo import DEFAULT_SCENARIO, devices_csv, plan_scenario

I18N = Path(__file__).resolve().parents[3] / "monitoring" / "web" / "i18n"


def test_demo_devices_carry_profile_machine_kinds_that_pages_can_label(tmp_path: Path) -> None:
    _, devices = plan_scenario(DEFAULT_SCENARIO, tmp_path)
    rows = list(csv.DictReader(io.StringIO(devices_csv(devices))))
    assert len(rows) == len(devices) > 10
    by_profile = {row["profile"]: row["machine_kind"] for row in rows}
    assert by_profile["raceway_grinder"] == "grinder"
    assert by_profile["energy_meter"] == "energy_meter"
    for lang in ("zh-CN", "en"):
        strings = json.loads((I18N / f"{lang}.json").read_text("utf-8"))
        unlabelled = sorted({k for k in by_profile.values() if f"kind.{k}" not in strings})
        assert unlabelled == [], f"{lang}.json has no kind.<id> label for {unlabelled}"
