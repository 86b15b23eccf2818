"""A simulator process that the end-to-end drills steer through its stdin: serve, then break things.

    python tests/e2e/simctl.py SCENARIO.json TRUTH.jsonl

It serves the scenario (JSON of ``simulators.scenario.Scenario``) with the real OPC UA and Modbus
servers of ``SimulatorHost``, records the ground truth to TRUTH.jsonl, prints one JSON line
``{"ready": true, "endpoints": [...]}`` and then answers each command line on stdin with one JSON
line (``{"ok": true, ...}`` with the wall-clock ``ts_ms`` of each step, or ``{"ok": false,
"error": ...}``):

    stop_server DEVICE | start_server DEVICE | restart_server DEVICE
    unreachable DEVICE [timeout|exception] | reachable DEVICE
    quit

End of input (the test died) and SIGTERM stop it too, closing the truth file cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from simulators.host import SimulatorHost  # noqa: E402  (the repo on sys.path first)
from simulators.scenario import Scenario  # noqa: E402


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


async def _obey(host: SimulatorHost, line: str) -> dict[str, Any]:
    words = line.split()
    if not words:
        return {"ok": False, "error": "empty command"}
    verb, args = words[0], words[1:]
    started = _now_ms()
    if verb == "stop_server":
        await host.stop_server(args[0])
    elif verb == "start_server":
        await host.start_server(args[0])
    elif verb == "restart_server":
        await host.stop_server(args[0])
        stopped = _now_ms()
        await host.start_server(args[0])
        return {"ok": True, "verb": verb, "started_ms": started, "stopped_ms": stopped,
                "ts_ms": _now_ms()}  # fmt: skip
    elif verb == "unreachable":
        host.set_unreachable(args[0], True, args[1] if len(args) > 1 else "timeout")
    elif verb == "reachable":
        host.set_unreachable(args[0], False)
    else:
        return {"ok": False, "error": f"unknown command {verb!r}"}
    return {"ok": True, "verb": verb, "started_ms": started, "ts_ms": _now_ms()}


async def serve(scenario: Scenario, truth: Path) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with SimulatorHost(scenario, truth_file=truth, truth_max_points=10) as host:
        endpoints = [
            {"id": e.device_id, "kind": e.kind, "protocol": e.protocol, "host": e.host,
             "port": e.port, "unit_id": e.unit_id, "server": e.server}
            for e in host.endpoints()
        ]  # fmt: skip
        _say({"ready": True, "endpoints": endpoints})
        while not stop.is_set():
            read = asyncio.ensure_future(reader.readline())
            stopped = asyncio.ensure_future(stop.wait())
            await asyncio.wait({read, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not read.done():
                read.cancel()
                break
            stopped.cancel()
            line = read.result().decode().strip()
            if not line or line == "quit":  # b"" is end of input
                break
            try:
                _say(await _obey(host, line))
            except Exception as exc:  # a bad command must not end the simulators
                _say({"ok": False, "error": repr(exc)})


def main() -> None:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    scenario = Scenario.model_validate_json(Path(sys.argv[1]).read_text())
    asyncio.run(serve(scenario, Path(sys.argv[2])))


if __name__ == "__main__":
    main()
