"""Scenarios: the shipped demo, validation errors with file and line, the load generator."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import simulators
from simulators import KINDS, SCENARIO_DIR, ScenarioError, generate_load_scenario, load_scenario
from simulators.manual import render_manual, stale_manuals
from simulators.scenario import single_kind_scenario


def test_demo_has_several_enterprises_of_both_segments() -> None:
    scenario = load_scenario(SCENARIO_DIR / "demo.yaml")
    per_enterprise = Counter(i.enterprise for i in scenario.instances)
    assert len(per_enterprise) >= 4
    assert all(3 <= n <= 7 for n in per_enterprise.values())
    assert 20 <= len(scenario.instances) <= 30
    segments = {KINDS[i.kind].segment for i in scenario.instances}
    assert {"345", "367", "common"} <= segments
    assert {KINDS[i.kind].protocol for i in scenario.instances} == {"opcua", "modbus"}


def test_free_ports_keep_devices_together_on_their_servers() -> None:
    scenario = load_scenario(SCENARIO_DIR / "demo.yaml")
    free = scenario.with_free_ports()
    assert {g.port for g in free.server_groups()} == {0}
    before = {g.name: sorted(i.id for i in g.instances) for g in scenario.server_groups()}
    after = {g.name: sorted(i.id for i in g.instances) for g in free.server_groups()}
    assert before == after


def test_instances_on_the_same_explicit_port_share_one_server() -> None:
    scenario = simulators.Scenario(
        instances=[
            simulators.InstanceSpec(id="a", kind="gear_hobber", port=15500, unit_id=1),
            simulators.InstanceSpec(id="b", kind="servo_press", port=15500, unit_id=2),
            simulators.InstanceSpec(id="c", kind="bearing_lathe"),
        ]
    )
    groups = {g.name: [i.id for i in g.instances] for g in scenario.server_groups()}
    assert groups == {"modbus-port-15500": ["a", "b"], "c": ["c"]}
    shared = scenario.with_free_ports().server_groups()
    assert sorted(len(g.instances) for g in shared) == [1, 2]


def test_every_problem_is_reported_with_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "name: bad\n"
        "servers:\n"
        "  - {name: mb, protocol: modbus, port: 15020}\n"
        "instances:\n"
        "  - {id: a, kind: gear_hobber, server: mb, unit_id: 1}\n"
        "  - {id: b, kind: gear_hober, server: mb}\n"
        "  - id: c\n"
        "    kind: servo_press\n"
        "    server: mb\n"
        "    unit_id: 1\n"
        "  - {id: d, kind: bearing_lathe, server: mb}\n"
        "  - {id: e, kind: energy_meter, port: 15021, meters: [zz]}\n"
        "  - {id: f, kind: servo_press, port: 15022, counters: {shot_count: 1}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert f"{path}:6: instances[1].kind: unknown kind 'gear_hober'" in message
    assert f"{path}:10: instances[2].unit_id: unit 1 is taken on mb" in message
    assert f"{path}:11: instances[3].server: mb is modbus, bearing_lathe opcua" in message
    assert f"{path}:12: instances[4].meters[0]: no instance 'zz'" in message
    assert (
        f"{path}:13: instances[5].counters: servo_press has no counters ['shot_count']" in message
    )


def test_type_errors_point_at_their_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "tick_ms: 5\ninstances:\n  - id: a\n    kind: gear_hobber\n    unit_id: 300\n    colour: red\n",
        encoding="utf-8",
    )
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert f"{path}:1: tick_ms: Input should be greater than or equal to 10" in message
    assert f"{path}:5: instances[0].unit_id: Input should be less than or equal to 247" in message
    assert f"{path}:6: instances[0].colour: Extra inputs are not permitted" in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match=r"nope\.yaml: cannot read the scenario"):
        load_scenario(tmp_path / "nope.yaml")


def test_load_generator_spreads_mixed_kinds_over_shared_endpoints() -> None:
    scenario = generate_load_scenario(200, seed=3)
    assert len(scenario.instances) == 200
    assert {i.kind for i in scenario.instances} == set(KINDS)
    groups = scenario.server_groups()
    assert all(len(g.instances) <= 40 for g in groups)
    assert sum(1 for g in groups if g.protocol == "modbus") >= 8
    meters = [i for i in scenario.instances if i.kind == "energy_meter"]
    assert meters and all(m.meters for m in meters)
    seeds = {scenario.instance_seed(i) for i in scenario.instances}
    assert len(seeds) == 200


def test_single_kind_scenario_refuses_a_unit_id_on_opcua() -> None:
    with pytest.raises(ScenarioError, match="unit_id only applies to Modbus"):
        single_kind_scenario("bearing_lathe", unit_id=3)


def test_committed_manuals_match_the_maps() -> None:
    assert stale_manuals() == [], "run: shulian sim manuals --write"


def test_manual_lists_every_field_of_the_map() -> None:
    text = render_manual(KINDS["energy_meter"])
    assert "8210 (0x2012)-8211 (0x2013)" in text
    assert "16414 (0x401E)" in text
    for kind in KINDS.values():
        text = render_manual(kind)
        for field in kind.address_map.fields():
            if field.signal:
                assert f"`{field.signal}`" in text


def test_public_names_are_exported() -> None:
    for name in simulators.__all__:
        assert hasattr(simulators, name), name
