"""Run a scenario's machine models through past days in accelerated time and log what they held.

A real controller keeps a history log a gateway can backfill from after it is connected; the
simulators do the same for ``scenario.history`` (see ``HistorySpec``): before serving live, every
machine model is stepped through the past ``days`` at ``step_s`` of virtual time per step, and
after each step the raw value of every field of its address map that serves a canonical signal
(what a client reads before scaling, as the servers would hold it) is appended to
``<dir>/<device>.jsonl`` with the step's wall-clock time::

    {"ts_ms": 1764806400000, "values": {"machine_state": 3, "part_count": 20431, ...}}

The same machine objects then serve live, so their counters continue from where history ended.
Plants work one shift a day and are switched off outside it; ``worked_share`` cuts an
enterprise's shift short on given days. Knowledge of which enterprise dropped lives in the
scenario file, not here.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from zoneinfo import ZoneInfo

import orjson

from simulators.host import SimulatedDevice
from simulators.machines.base import Machine
from simulators.machines.energy_meter import EnergyMeter
from simulators.scenario import HistorySpec
from wire import MachineState

MANIFEST = "history.json"
"""Written last: its presence says every device's log is complete."""


@dataclass(frozen=True, slots=True)
class HistorySummary:
    devices: int
    steps: int
    first_ms: int
    last_ms: int


def shift_is_on(spec: HistorySpec, enterprise: str, ts_ms: int, end_ms: int) -> bool:
    """Whether ``enterprise``'s plant works at ``ts_ms`` (local shift, shortened per scenario)."""
    zone = ZoneInfo(spec.timezone)
    local = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(zone)
    days_ago = (
        datetime.fromtimestamp(end_ms / 1000, UTC).astimezone(zone).date() - local.date()
    ).days
    share = spec.worked_share.get(enterprise, {}).get(days_ago, 1.0)
    hour = local.hour + local.minute / 60 + local.second / 3600
    return spec.shift_start_h <= hour < spec.shift_start_h + spec.shift_hours * share


_FORKED: list[SimulatedDevice] = []
"""The devices a forked worker of ``write_history`` finds in its copy of the parent's memory."""


def write_history(
    devices: Iterable[SimulatedDevice],
    spec: HistorySpec,
    out_dir: Path,
    end_ms: int,
    *,
    workers: int | None = None,
) -> HistorySummary:
    """Step ``devices`` (in stepping order: meters last) through ``spec.days`` ending at
    ``end_ms``, logging every step; leave them running freely at the end.

    Enterprises are independent (a meter measures machines of its own enterprise), so with
    several cores each worker process runs some enterprises and sends their machines back.
    """
    order = list(devices)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MANIFEST).unlink(missing_ok=True)
    step_ms = int(spec.step_s * 1000)
    steps = math.ceil(spec.days * 86_400_000 / step_ms)
    first_ms = end_ms - steps * step_ms
    groups: dict[str, list[int]] = {}
    for index, device in enumerate(order):
        groups.setdefault(device.spec.enterprise or "", []).append(index)
    workers = min(workers or os.cpu_count() or 1, len(groups))
    if workers > 1 and "fork" in multiprocessing.get_all_start_methods():
        _FORKED[:] = order
        context = multiprocessing.get_context("fork")
        try:
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                jobs = [
                    pool.submit(_run_group, indices, spec, out_dir, first_ms, steps, end_ms)
                    for indices in groups.values()
                ]
                for indices, job in zip(groups.values(), jobs, strict=True):
                    for index, machine in zip(indices, job.result(), strict=True):
                        order[index].machine = machine
        finally:
            _FORKED.clear()
    else:
        for indices in groups.values():
            _run([order[i] for i in indices], spec, out_dir, first_ms, steps, end_ms)
    summary = HistorySummary(len(order), steps, first_ms, first_ms + steps * step_ms)
    (out_dir / MANIFEST).write_bytes(
        orjson.dumps(
            {
                "devices": sorted(d.device_id for d in order),
                "steps": summary.steps,
                "step_s": spec.step_s,
                "first_ms": summary.first_ms,
                "last_ms": summary.last_ms,
            }
        )
    )
    return summary


def _run_group(
    indices: list[int], spec: HistorySpec, out_dir: Path, first_ms: int, steps: int, end_ms: int
) -> list[Machine]:
    """In a forked worker: run one enterprise's devices; their machines go back to the parent
    (pickled together, so a meter still measures the same machine objects)."""
    group = [_FORKED[i] for i in indices]
    _run(group, spec, out_dir, first_ms, steps, end_ms)
    return [d.machine for d in group]


def _run(
    order: list[SimulatedDevice],
    spec: HistorySpec,
    out_dir: Path,
    first_ms: int,
    steps: int,
    end_ms: int,
) -> None:
    step_ms = int(spec.step_s * 1000)
    saved = {d.device_id: (d.machine.dwell_scale, d.machine.gauge_period_s) for d in order}
    logs: dict[str, IO[bytes]] = {}
    try:
        for device in order:
            # One sample per step: the live refresh period would cost millions of samples a month.
            device.machine.dwell_scale = spec.dwell_scale
            device.machine.gauge_period_s = spec.step_s
            logs[device.device_id] = (out_dir / f"{device.device_id}.jsonl").open("wb")
            _log(logs[device.device_id], device, first_ms)
        for index in range(1, steps + 1):
            ts_ms = first_ms + index * step_ms
            for device in order:
                _follow_shift(device, spec, ts_ms - step_ms, end_ms)
                device.machine.step(spec.step_s)
                device.machine.take_changes()
                _log(logs[device.device_id], device, ts_ms)
    finally:
        for handle in logs.values():
            handle.close()
    for device in order:
        device.machine.release_state()
        device.machine.dwell_scale, device.machine.gauge_period_s = saved[device.device_id]


def _follow_shift(device: SimulatedDevice, spec: HistorySpec, ts_ms: int, end_ms: int) -> None:
    """Switch the machine off outside its plant's shift; meters keep measuring."""
    machine = device.machine
    if isinstance(machine, EnergyMeter):
        return
    working = shift_is_on(spec, device.spec.enterprise or "", ts_ms, end_ms)
    if working and machine.is_forced:
        machine.force_state(MachineState.IDLE)  # switched on: waits for work, then runs freely
        machine.release_state()
    elif not working and not machine.is_forced:
        machine.force_state(MachineState.OFF)


def _log(handle: IO[bytes], device: SimulatedDevice, ts_ms: int) -> None:
    values = {
        item.signal: raw
        for item, raw in device.served_changes(device.fields_by_key)
        if item.signal is not None
    }
    handle.write(orjson.dumps({"ts_ms": ts_ms, "values": values}) + b"\n")
