"""Behaviour models: determinism, counters, states, alarms, energy, wrapping counters."""

from __future__ import annotations

import pytest

from simulators.addressmap import Register
from simulators.machines import KINDS, Machine, create_machine
from simulators.machines.energy_meter import EnergyMeter
from wire import MachineState

ALL_KINDS = sorted(KINDS)
MACHINE_KINDS = [k for k in ALL_KINDS if k != "energy_meter"]
COUNTERS = ("part_count", "good_count", "reject_count")


def _run(machine: Machine, steps: int, dt_s: float) -> list[dict[str, object]]:
    history = []
    for _ in range(steps):
        machine.step(dt_s)
        history.append(dict(machine.values))
    return history


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_same_seed_and_steps_give_the_same_values(kind: str) -> None:
    first = _run(create_machine(kind, "m", 11, dwell_scale=0.05), 600, 0.5)
    second = _run(create_machine(kind, "m", 11, dwell_scale=0.05), 600, 0.5)
    assert first == second


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_another_seed_gives_other_values(kind: str) -> None:
    first = _run(create_machine(kind, "m", 11), 30, 1.0)
    second = _run(create_machine(kind, "m", 12), 30, 1.0)
    assert first != second


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_every_map_field_has_a_model_value_from_the_start(kind: str) -> None:
    machine = create_machine(kind, "m", 3)
    missing = [
        f.source
        for f in KINDS[kind].address_map.fields()
        if f.source not in (None, *machine.values)
    ]
    assert missing == []


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_counters_only_go_up_and_every_part_is_judged(kind: str) -> None:
    machine = create_machine(kind, "m", 5, dwell_scale=0.02)
    counters = [*machine.counters, "active_energy", "run_hours"]
    if machine.makes_parts:
        counters += COUNTERS
    start = {c: machine.values[c] for c in counters}
    previous = dict(start)
    for _ in range(3000):
        machine.step(2.0)
        for name in counters:
            assert machine.values[name] >= previous[name], f"{name} went down"
            previous[name] = machine.values[name]
    if machine.makes_parts:
        made, good, rejected = (machine.values[c] - start[c] for c in COUNTERS)
        assert made > 0
        assert made == good + rejected


@pytest.mark.parametrize("kind", MACHINE_KINDS)
def test_state_machine_visits_every_state_with_alarms_only_in_fault(kind: str) -> None:
    machine = create_machine(kind, "m", 7, dwell_scale=0.01, gauge_period_s=20.0)
    seen = set()
    alarms = set()
    for _ in range(8000):
        machine.step(5.0)
        values = machine.values
        seen.add(values["machine_state"])
        if values["machine_state"] == "fault":
            assert values["alarm_active"] is True
            assert values["alarm_text"]
            alarms.add(values["alarm_code"])
        else:
            assert (values["alarm_active"], values["alarm_code"], values["alarm_text"]) == (
                False,
                0,
                "",
            )
    expected = {s.value for s in MachineState}
    if kind == "carburizing_furnace":
        expected.discard("off")  # a furnace is switched off once in months
    assert expected <= seen
    assert alarms and alarms <= {a.code for a in machine.behaviour.alarms}


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_energy_is_the_integral_of_power(kind: str) -> None:
    machine = create_machine(kind, "m", 13, dwell_scale=0.05)
    start = machine.values["active_energy"]
    integral = 0.0
    for _ in range(6000):
        # What a client sees: the published power, held until the next refresh.
        integral += machine.values["active_power"] * 0.1 / 3600.0
        machine.step(0.1)
    published = machine.values["active_energy"] - start
    assert integral > 0
    # Power refreshes inside a step and energy is published once per second, rounded to 1 Wh.
    assert published == pytest.approx(integral, rel=0.02, abs=0.002)


def test_power_depends_on_state() -> None:
    machine = create_machine("bearing_lathe", "m", 1, start_state=MachineState.RUNNING)
    draws: dict[str, float] = {}
    for state in (MachineState.OFF, MachineState.IDLE, MachineState.RUNNING):
        machine.force_state(state)
        machine.step(1.0)
        draws[state.value] = machine.power_kw
    assert draws["off"] < draws["idle"] < draws["running"]


def test_a_forced_state_holds_until_released() -> None:
    machine = create_machine("gear_hobber", "m", 2, dwell_scale=0.01)
    machine.force_state(MachineState.FAULT, alarm_code=305)
    for _ in range(500):
        machine.step(10.0)
    assert machine.values["machine_state"] == "fault"
    assert machine.values["alarm_code"] == 305
    assert machine.values["alarm_text"] == "HOB SHIFT AT LIMIT"
    machine.release_state()
    for _ in range(500):
        machine.step(10.0)
        if machine.values["machine_state"] != "fault":
            break
    assert machine.values["machine_state"] != "fault"
    assert machine.values["alarm_active"] is False


def test_forcing_an_unknown_alarm_names_the_known_ones() -> None:
    machine = create_machine("gear_hobber", "m", 2)
    with pytest.raises(ValueError, match="no alarm 999; known: 101, 214"):
        machine.force_state(MachineState.FAULT, alarm_code=999)


def test_parts_are_counted_at_cycle_completion_while_running() -> None:
    machine = create_machine("bearing_lathe", "m", 4, start_state=MachineState.RUNNING)
    machine.force_state(MachineState.RUNNING)
    before = machine.values["part_count"]
    cycle = machine.next_cycle_s()
    for _ in range(int(cycle * 10 * 5)):
        machine.step(0.1)
    assert 3 <= machine.values["part_count"] - before <= 6
    machine.force_state(MachineState.IDLE)
    idle_count = machine.values["part_count"]
    for _ in range(2000):
        machine.step(0.1)
    assert machine.values["part_count"] == idle_count


def test_stroke_counter_wraps_in_its_register_but_not_in_the_model() -> None:
    machine = create_machine("servo_press", "p", 3, initial_counts={"stroke_count": 65_530})
    machine.force_state(MachineState.RUNNING)
    field = next(f for f in KINDS["servo_press"].address_map.fields() if f.signal == "stroke_count")
    assert isinstance(field, Register) and field.wraps
    raws = []
    for _ in range(600):
        machine.step(0.5)
        raws.append(field.to_raw(machine.values["stroke_count"]))
    true_count = machine.values["stroke_count"]
    assert true_count > 65_536
    assert raws[-1] == true_count - 65_536
    assert 65_535 in raws and 0 in raws
    assert field.served(raws[-1]) == true_count - 65_536


def test_unknown_initial_counter_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="servo_press keeps"):
        create_machine("servo_press", "p", 1, initial_counts={"shot_count": 5})


def test_meter_measures_the_machines_attached_to_it() -> None:
    lathe = create_machine("bearing_lathe", "l", 1, start_state=MachineState.RUNNING)
    press = create_machine("servo_press", "p", 2, start_state=MachineState.RUNNING)
    meter = create_machine("energy_meter", "e", 3, gauge_period_s=0.1)  # refreshes every step
    assert isinstance(meter, EnergyMeter)
    meter.attach([lathe, press])
    for _ in range(50):
        for machine in (lathe, press, meter):
            machine.step(0.1)
    assert meter.values["active_power"] == pytest.approx(
        lathe.power_kw + press.power_kw + 0.4, abs=1e-3
    )
    phases = sum(meter.values[f"active_power.l{i}"] for i in (1, 2, 3))
    assert phases == pytest.approx(meter.values["active_power"], abs=1e-3)
    for phase in (1, 2, 3):
        volts, amps = meter.values[f"voltage.l{phase}"], meter.values[f"current.l{phase}"]
        assert 220 < volts < 240
        assert amps > 0
