"""Ctrl-C of `shulian demo` reaches the demo only: the Mosquitto it starts runs in its own session,
so the terminal's SIGINT does not stop the broker before the gateways and the ingest (their logs
showed "the broker closed the connection" at Ctrl-C, before the demo stopped anything)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shulian.devservices import mosquitto_binary

REPO = Path(__file__).resolve().parents[3]
# Stands in for the demo's process: starts the broker as the demo does, then ignores SIGINT as
# the demo's own handler does (it stops its children itself, broker last).
PARENT = """
import signal, sys, time
from pathlib import Path
from shulian.devservices import Mosquitto
broker = Mosquitto(Path(sys.argv[1])).start()
signal.signal(signal.SIGINT, signal.SIG_IGN)
print(broker.proc.pid, flush=True)
time.sleep(60)
"""


def test_the_demo_broker_survives_a_terminal_sigint_to_the_demo_process_group(
    tmp_path: Path,
) -> None:
    if not mosquitto_binary():
        pytest.skip("needs a mosquitto binary (apt-get install mosquitto)")
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "mosquitto")],
        cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    broker_pid = 0
    try:
        assert parent.stdout is not None
        broker_pid = int(parent.stdout.readline())
        # What a terminal does on Ctrl-C: SIGINT to every process of the foreground group.
        os.killpg(parent.pid, signal.SIGINT)
        time.sleep(0.5)
        assert parent.poll() is None
        # Still running: not gone, and not a zombie its parent has not reaped yet.
        state = Path(f"/proc/{broker_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        assert state != "Z", "the broker died of the terminal's SIGINT"
        assert os.getsid(broker_pid) != os.getsid(parent.pid)
    finally:
        parent.kill()
        parent.wait()
        if broker_pid:
            try:
                os.kill(broker_pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
