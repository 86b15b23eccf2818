"""Pure rules of the before/after evidence: periods, baselines, changes and who may do what."""

from __future__ import annotations

from datetime import date

import pytest

from monitoring.api.access import Capability, Reach, can
from monitoring.auth import Principal, Role
from monitoring.evidence import FIGURES, Period, PeriodSums, compare, month_periods, plan

YESTERDAY = date(2025, 6, 9)
SERVED = Reach(served=frozenset({"ent-a"}))


def test_months_are_calendar_months_cut_to_the_range() -> None:
    assert month_periods(date(2024, 1, 30), date(2024, 3, 2)) == [
        Period("2024-01", date(2024, 1, 30), date(2024, 1, 31)),
        Period("2024-02", date(2024, 2, 1), date(2024, 2, 29)),  # a leap year
        Period("2024-03", date(2024, 3, 1), date(2024, 3, 2)),
    ]
    assert month_periods(date(2024, 12, 31), date(2025, 1, 1))[1].label == "2025-01"
    assert month_periods(date(2025, 6, 10), YESTERDAY) == []


def test_without_an_entry_the_baseline_is_measured_over_the_default_days() -> None:
    found = plan(date(2025, 4, 1), None, 30, YESTERDAY)
    assert found.baseline_period == Period("baseline", date(2025, 4, 1), date(2025, 4, 30))
    assert found.baseline_complete
    assert [m.label for m in found.months] == ["2025-05", "2025-06"]
    assert found.months[0].first_day == date(2025, 5, 1)


def test_a_baseline_still_being_measured_is_cut_at_yesterday_and_has_no_months() -> None:
    entry = {"method": "measured", "measured_days": 30, "id": 7}
    found = plan(date(2025, 5, 20), entry, 14, YESTERDAY)
    assert found.baseline_period == Period("baseline", date(2025, 5, 20), YESTERDAY)
    assert not found.baseline_complete and found.months == []


def test_an_entered_baseline_compares_every_month_from_go_live() -> None:
    entry = {"method": "entered", "measured_days": None, "id": 3, "figures": {}}
    found = plan(date(2025, 4, 15), entry, 30, YESTERDAY)
    assert found.baseline_period is None and found.baseline_complete
    assert [m.label for m in found.months] == ["2025-04", "2025-05", "2025-06"]
    assert plan(None, entry, 30, YESTERDAY).months == []  # not live yet


def test_figures_are_undefined_without_their_denominator() -> None:
    assert PeriodSums().figures() == dict.fromkeys(FIGURES)
    sums = PeriodSums(days=2, device_days=4, ran_device_days=1, running_s=3600, calendar_s=7200,
                      parts=10, good=None, reject=None, energy_kwh=5)  # fmt: skip
    figures = sums.figures()
    assert figures["reject_rate"] is None and figures["oee"] is None  # no quality counts
    assert (figures["utilization"], figures["running_rate"], figures["output_per_day"]) == (
        0.5,
        0.25,
        5.0,
    )
    assert figures["kwh_per_part"] == 0.5 and figures["fault_h_per_day"] == 0.0


@pytest.mark.parametrize(
    ("name", "before", "after", "relative", "improved"),
    [
        ("utilization", 0.2, 0.3, 0.5, True),
        ("reject_rate", 0.1, 0.05, -0.5, True),
        ("kwh_per_part", 0.5, 0.6, 0.2, False),
        ("fault_h_per_day", 0.0, 1.0, None, False),  # from zero: no relative change
        ("oee", None, 0.4, None, None),  # not in the entered diagnosis
        ("output_per_day", 100.0, 100.0, 0.0, None),  # unchanged: neither
    ],
)
def test_change_says_which_way_is_better(
    name: str, before: float | None, after: float, relative: float | None, improved: bool | None
) -> None:
    change = compare({name: before}, {name: after})[name]
    assert change["relative"] == (None if relative is None else pytest.approx(relative))
    assert change["improved"] is improved


def test_evidence_and_baseline_rights() -> None:
    bureau, admin = Principal(1, Role.BUREAU), Principal(2, Role.ADMIN)
    ent_a = Principal(3, Role.ENTERPRISE, enterprise="ent-a")
    provider = Principal(4, Role.PROVIDER, provider="sp-1")
    for who in (bureau, admin, ent_a, provider):
        assert can(who, Capability.EVIDENCE, "ent-a", SERVED)
    assert not can(ent_a, Capability.EVIDENCE, "ent-b", SERVED)
    assert not can(provider, Capability.EVIDENCE, "ent-b", SERVED)
    assert can(admin, Capability.BASELINE, "ent-a", SERVED)
    assert can(provider, Capability.BASELINE, "ent-a", SERVED)
    assert not can(provider, Capability.BASELINE, "ent-b", SERVED)
    assert not can(bureau, Capability.BASELINE, "ent-a", SERVED)
    assert not can(ent_a, Capability.BASELINE, "ent-a", SERVED)  # not its own bar to set


def test_every_label_the_report_builds_from_data_exists_in_both_languages() -> None:
    """The templates build these keys from figure, measure, method and role names (t() with a
    variable, which the catalogue test cannot see)."""
    import json
    from pathlib import Path

    from monitoring.api.routes.evidence import MEASURES
    from monitoring.evidence import HIGHER_IS_BETTER, KPI_SIGNALS

    assert set(HIGHER_IS_BETTER) == set(FIGURES)
    wanted = {f"figure.{n}" for n in FIGURES} | {f"method.{n}" for n in FIGURES}
    wanted |= {f"measure.{n}" for n in MEASURES} | {f"role.{r.value}" for r in Role}
    wanted |= {f"evidence.method.{m}" for m in ("entered", "measured")}
    wanted |= {f"evidence.method_short.{m}" for m in ("entered", "measured")}
    wanted |= {f"signal.{s}" for s in KPI_SIGNALS}
    web = Path(__file__).resolve().parents[3] / "monitoring" / "web" / "i18n"
    for lang in ("zh-CN", "en"):
        strings = json.loads((web / f"{lang}.json").read_text("utf-8"))
        assert sorted(wanted - set(strings)) == [], lang
