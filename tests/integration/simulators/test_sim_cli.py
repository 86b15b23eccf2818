"""``shulian sim run`` as a process: prints endpoints when ready, serves, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from pathlib import Path

import orjson
from pymodbus.client import AsyncModbusTcpClient

SCENARIO = """\
name: cli-test
seed: 3
instances:
  - {id: hobber-01, kind: gear_hobber, enterprise: ent-009, unit_id: 4}
  - {id: lathe-01, kind: bearing_lathe, enterprise: ent-009}
"""


async def test_run_prints_endpoints_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    scenario = tmp_path / "scenario.yaml"
    scenario.write_text(SCENARIO, encoding="utf-8")
    truth = tmp_path / "truth.jsonl"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators",
        "run",
        "--scenario",
        str(scenario),
        "--truth-file",
        str(truth),
        "--tick-ms",
        "50",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            while not lines or not lines[-1].startswith("simulators ready"):
                line = (await process.stdout.readline()).decode()
                assert line, f"exited early: {(await process.stderr.read()).decode()}"  # type: ignore[union-attr]
                lines.append(line.strip())
        hobber = next(line for line in lines if "hobber-01" in line)
        match = re.search(r"modbus\+tcp://127\.0\.0\.1:(\d+) unit 4", hobber)
        assert match, hobber
        assert any(
            re.search(r"lathe-01 +bearing_lathe +opc\.tcp://127\.0\.0\.1:\d+", text)
            for text in lines
        )
        client = AsyncModbusTcpClient("127.0.0.1", port=int(match.group(1)), timeout=1, retries=0)
        assert await client.connect()
        reply = await client.read_holding_registers(0, count=3, device_id=4)
        client.close()
        assert not reply.isError()
        assert reply.registers[0] in (0, 1, 2, 3, 4)
    finally:
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            rest = (await process.stdout.read()).decode()
            code = await process.wait()
    assert code == 0
    assert "simulators stopped" in rest
    records = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    states = [
        r for r in records if r.get("device") == "hobber-01" and r.get("signal") == "machine_state"
    ]
    assert states and states[0]["value"] in ("running", "idle", "setup", "fault", "off")
    assert {r["device"] for r in records} == {"hobber-01", "lathe-01"}


async def test_bad_scenario_exits_with_every_problem(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.yaml"
    scenario.write_text("instances:\n  - {id: x, kind: lathe}\n", encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators",
        "run",
        "--scenario",
        str(scenario),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert f"{scenario}:2: instances[0].kind: unknown kind 'lathe'" in err.decode()
