"""Shared transports are counted per bus; exception replies and durations read well."""

from __future__ import annotations

import logging

import pytest

from gateway.drivers.modbus.endpoint import parse_endpoint
from gateway.drivers.modbus.models import ModbusSettings
from gateway.drivers.modbus.transport import (
    EXCEPTION_NAMES,
    ModbusExceptionError,
    TransportPool,
    seconds,
)


def test_pool_shares_one_transport_per_bus_and_forgets_it_after_the_last_user() -> None:
    pool = TransportPool()
    settings = ModbusSettings()
    first = pool.acquire(parse_endpoint("rtu+tcp://10.2.0.50:4001"), settings)
    second = pool.acquire(parse_endpoint("RTU+TCP://10.2.0.50:4001"), settings)
    other = pool.acquire(parse_endpoint("tcp://10.2.0.50:4001"), settings)
    assert first is second and first is not other
    assert pool.users("rtu+tcp://10.2.0.50:4001") == 2
    pool.release(first)
    assert pool.users("rtu+tcp://10.2.0.50:4001") == 1
    pool.release(second)
    assert pool.users("rtu+tcp://10.2.0.50:4001") == 0
    again = pool.acquire(parse_endpoint("rtu+tcp://10.2.0.50:4001"), settings)
    assert again is not first, "a released bus starts afresh"


def test_pool_warns_when_devices_on_one_serial_bus_disagree_on_the_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pool = TransportPool()
    endpoint = parse_endpoint("rtu:///dev/ttyUSB0")
    bus = pool.acquire(endpoint, ModbusSettings(baudrate=9600))
    with caplog.at_level(logging.WARNING):
        pool.acquire(endpoint, ModbusSettings(baudrate=19200, parity="E"))
    assert "runs at 9600 8N1; a device asking for 19200 8E1" in caplog.text
    assert bus.settings.baudrate == 9600


@pytest.mark.parametrize("code", sorted(EXCEPTION_NAMES))
def test_exception_replies_carry_code_and_standard_name(code: int) -> None:
    error = ModbusExceptionError(code, function_code=3)
    assert error.reason == f"Modbus exception {code}: {EXCEPTION_NAMES[code]}"
    assert str(error) == error.reason


def test_exception_reply_names_the_common_codes_as_the_standard_does() -> None:
    assert ModbusExceptionError(2, 3).reason == "Modbus exception 2: illegal data address"
    assert ModbusExceptionError(6, 3).hint.startswith("The device is busy")
    assert ModbusExceptionError(99, 3).reason == "Modbus exception 99: unknown exception code"


def test_durations_read_as_people_write_them() -> None:
    assert [seconds(v) for v in (1.0, 0.3, 0.25, 3.0, 0.125)] == [
        "1.0",
        "0.3",
        "0.25",
        "3.0",
        "0.125",
    ]
