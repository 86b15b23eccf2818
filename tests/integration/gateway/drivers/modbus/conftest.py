"""Fixtures for the live Modbus tests: a real pymodbus server started inside the test."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from modbus_live import RunningServer, ServerFactory, UnitMap, start_server

from gateway.drivers.modbus.driver import ModbusDriver


@pytest.fixture()
async def modbus_server() -> AsyncIterator[ServerFactory]:
    """Start pymodbus TCP servers: ``await modbus_server({1: UnitMap(...)}, dead_units={9})``;
    each is shut down when the test ends."""
    started: list[RunningServer] = []

    async def start(units: dict[int, UnitMap], **options: Any) -> RunningServer:
        running = await start_server(units, **options)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.server.shutdown()


@pytest.fixture()
async def drivers() -> AsyncIterator[list[ModbusDriver]]:
    """Drivers the test opens (``connected``); closed afterwards even when the test fails."""
    opened: list[ModbusDriver] = []
    yield opened
    for driver in opened:
        await driver.close()
