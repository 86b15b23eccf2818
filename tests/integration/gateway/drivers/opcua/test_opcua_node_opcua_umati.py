"""The shipped umati profile against node-opcua: an OPC UA stack nobody here wrote.

`node_opcua/umati_server.js` loads the same OPC Foundation NodeSets into node-opcua, instantiates
MachineToolType its own way (organized by Objects/Machines, node-opcua's numbering), adds a
channel and a spindle and sets known values. The shipped profile, unchanged, must find the machine
by browsing and read every value; the alarm signals, whose Notification/Messages node-opcua leaves
out (it is optional), must be bad with a reason naming the missing step, without stopping the rest.

Needs Node.js and `npm ci --prefix tests/integration/gateway/drivers/opcua/node_opcua` (scripts/test
runs it); skipped, saying so, when either is missing.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.drivers.base import DriverMetrics
from gateway.drivers.opcua.driver import OpcUaDriver
from gateway.normalize import compile_signal
from gateway.profile_cli import probe_device
from gateway.profiles.loader import ProfileResolver
from shulian.devservices import free_port
from simulators.companion import NODESET_DIR
from wire.payloads import Quality

HERE = Path(__file__).resolve().parent / "node_opcua"
SCRIPT = HERE / "umati_server.js"


@pytest.fixture()
def node_opcua_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, object]]]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed (Debian: apt-get install nodejs npm)")
    if not (HERE / "node_modules" / "node-opcua").is_dir():
        pytest.skip(f"node-opcua is not installed: npm ci --prefix {HERE}")
    port = free_port()
    process = subprocess.Popen(
        [node, str(SCRIPT), str(NODESET_DIR), str(port), str(tmp_path / "pki")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        # node-opcua prints its own warnings on stdout too; the script's line starts with {"ready".
        for line in process.stdout:  # blocks until it serves (or exits)
            if line.startswith('{"ready"'):
                break
        else:
            pytest.fail(f"node-opcua server exited with {process.wait(10)} before serving")
        ready = json.loads(line)
        # Keep reading its output so a full pipe never stalls the server.
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield f"opc.tcp://127.0.0.1:{port}", ready["values"]
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def test_shipped_umati_profile_reads_a_node_opcua_machine_tool(
    node_opcua_server: tuple[str, dict[str, object]], caplog: pytest.LogCaptureFixture
) -> None:
    url, expected = node_opcua_server
    profile = ProfileResolver().load("machining_centre_umati").profile
    device = probe_device(profile, url, device_id="node-vmc")
    logger = logging.LoggerAdapter(logging.getLogger("test.node_opcua"), {"device": device.id})
    driver = OpcUaDriver(device, logger, DriverMetrics())
    with caplog.at_level(logging.INFO, logger="test.node_opcua"):
        try:
            await driver.connect()
            readings = [r for g in profile.groups for r in (await driver.read(g)).readings]
        finally:
            await driver.close()
    assert "machine NODE-VMC found" in caplog.text
    values = {}
    for reading in readings:
        if reading.signal in ("alarm_active", "alarm_text"):
            assert reading.quality is Quality.BAD
            assert "step 2 'mt:Messages' not found below mt:Notification" in str(reading.reason)
            continue
        assert reading.quality is Quality.GOOD, (reading.signal, reading.reason)
        signal = next(s for s in profile.signals if s.name == reading.signal)
        values[reading.signal] = compile_signal(signal)(reading.raw)[0]
    assert values == expected
