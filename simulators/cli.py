"""``shulian sim``: run simulated line equipment from a scenario, list machine kinds, write manuals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from pathlib import Path
from typing import Annotated

import typer

from simulators.errors import ScenarioError, ServeError
from simulators.history import write_history
from simulators.host import SimulatorHost
from simulators.machines import KINDS
from simulators.manual import stale_manuals, write_manuals
from simulators.scenario import (
    SCENARIO_DIR,
    Scenario,
    generate_load_scenario,
    load_scenario,
)

app = typer.Typer(
    help="Simulated line equipment behind real OPC UA and Modbus TCP servers.",
    no_args_is_help=True,
)
log = logging.getLogger(__name__)


@app.command()
def run(
    scenario: Annotated[
        Path | None,
        typer.Option("--scenario", help=f"Scenario YAML, e.g. {SCENARIO_DIR / 'demo.yaml'}."),
    ] = None,
    load: Annotated[
        int | None,
        typer.Option("--load", min=1, help="Instead of a file: N machines of mixed kinds."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Override the scenario's base seed.")
    ] = None,
    truth_file: Annotated[
        Path | None,
        typer.Option("--truth-file", help="Append the ground truth to this JSONL file."),
    ] = None,
    tick_ms: Annotated[
        int | None,
        typer.Option("--tick-ms", min=10, max=10_000, help="How often served values update."),
    ] = None,
    free_ports: Annotated[
        bool, typer.Option("--free-ports", help="Ignore the scenario's ports; pick free ones.")
    ] = False,
    kinds: Annotated[
        bool, typer.Option("--kinds", help="List the machine kinds and exit.")
    ] = False,
    history_dir: Annotated[
        Path | None,
        typer.Option(
            "--history-dir",
            help="Before serving, run the scenario's `history` days and log them here "
            "(one JSONL per device, for `shulian gateway backfill`).",
        ),
    ] = None,
) -> None:
    """Serve a scenario's machines until Ctrl-C or SIGTERM, printing every endpoint when ready."""
    if kinds:
        list_kinds()
        return
    chosen = _choose_scenario(scenario, load)
    if free_ports:
        chosen = chosen.with_free_ports()
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    try:
        asyncio.run(
            _serve(
                chosen,
                seed=seed,
                truth_file=truth_file,
                tick_ms=tick_ms,
                history_dir=history_dir,
            )
        )
    except ServeError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@app.command("kinds")
def list_kinds() -> None:
    """List the machine kinds with their protocol and segment."""
    for name, kind in KINDS.items():
        typer.echo(f"{name:22} {kind.protocol:7} segment {kind.segment:6} {kind.title}")


@app.command()
def manuals(
    check: Annotated[
        bool, typer.Option("--check", help="Only report manuals that are out of date.")
    ] = False,
) -> None:
    """Regenerate simulators/manuals/*.md from the address maps (or check them)."""
    if check:
        stale = stale_manuals()
        for path in stale:
            typer.echo(f"out of date: {path}")
        raise typer.Exit(1 if stale else 0)
    for path in write_manuals():
        typer.echo(f"wrote {path}")


def _choose_scenario(path: Path | None, load: int | None) -> Scenario:
    if (path is None) == (load is None):
        raise typer.BadParameter("give exactly one of --scenario PATH or --load N")
    if load is not None:
        return generate_load_scenario(load)
    assert path is not None
    try:
        return load_scenario(path)
    except ScenarioError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


async def _serve(
    scenario: Scenario,
    *,
    seed: int | None,
    truth_file: Path | None,
    tick_ms: int | None,
    history_dir: Path | None = None,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    host = SimulatorHost(
        scenario, seed=seed, tick_ms=tick_ms, truth_file=truth_file, truth_max_points=1
    )
    if history_dir is not None:
        if scenario.history is None:
            raise ServeError(f"--history-dir: scenario {scenario.name} has no `history` section")
        # Blocking on purpose: nothing serves yet, and the live machines continue from its end.
        summary = write_history(
            host.stepping_order(), scenario.history, history_dir, time.time_ns() // 1_000_000
        )
        typer.echo(
            f"history: {summary.steps} steps of {scenario.history.step_s:g} s for "
            f"{summary.devices} devices in {history_dir}"
        )
    async with host:
        for endpoint in host.endpoints():
            typer.echo(endpoint.describe())
        typer.echo(
            f"simulators ready: {len(host.devices)} devices, scenario {scenario.name}, "
            f"tick {host.tick_ms} ms{f', truth in {truth_file}' if truth_file else ''}",
        )
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()
    typer.echo("simulators stopped")
