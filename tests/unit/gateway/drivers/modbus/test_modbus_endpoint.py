"""Endpoint URLs parse into transports, and settings layer profile < device < endpoint."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gateway.drivers.modbus.endpoint import ModbusEndpoint, effective_settings, parse_endpoint
from gateway.drivers.modbus.models import ModbusProfile


def test_endpoint_parses_each_transport() -> None:
    assert parse_endpoint("tcp://10.2.0.7:1502") == ModbusEndpoint("tcp", "10.2.0.7", 1502)
    assert parse_endpoint("tcp://PLC-7.local") == ModbusEndpoint("tcp", "plc-7.local", 502)
    assert parse_endpoint("rtu+tcp://10.2.0.50:4001").scheme == "rtu+tcp"
    serial = parse_endpoint("rtu:///dev/ttyUSB0?baudrate=9600&parity=E")
    assert (serial.scheme, serial.serial_port, serial.serial) == (
        "rtu",
        "/dev/ttyUSB0",
        (("baudrate", "9600"), ("parity", "E")),
    )
    assert parse_endpoint("rtu:///COM3").serial_port == "COM3"


def test_endpoint_describes_itself_for_messages() -> None:
    assert parse_endpoint("tcp://10.2.0.7:502").describe() == "10.2.0.7:502"
    assert parse_endpoint("rtu:///dev/ttyS1").describe() == "/dev/ttyS1"
    assert parse_endpoint("rtu:///dev/ttyS1").is_serial_framing
    assert not parse_endpoint("tcp://h:1").is_serial_framing


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("10.2.0.7:502", "has no scheme; write tcp://10.2.0.7:502"),
        ("opc.tcp://10.2.0.7:4840", "scheme 'opc.tcp'"),
        ("tcp://10.2.0.7:70000", "port must be a number in 1..65535"),
        ("tcp://10.2.0.7:abc", "port must be a number"),
        ("tcp://10.2.0.7:502/x", "no path"),
        ("tcp://10.2.0.7:502?unit=3", "takes no query parameters"),
        ("rtu://", "names no serial port"),
        ("rtu:///dev/ttyUSB0?speed=9600", "unknown serial setting(s) ['speed']"),
    ],
)
def test_endpoint_explains_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_endpoint(text)
    assert words in str(caught.value)


def test_settings_take_the_device_over_the_profile_and_the_endpoint_over_both() -> None:
    profile = ModbusProfile.model_validate(
        {
            "id": "meter",
            "protocol": "modbus",
            "modbus": {"timeout_s": 0.5, "baudrate": 19200, "max_gap": 4},
            "signals": [{"name": "active_power", "address": 0}],
        }
    )
    endpoint = parse_endpoint("rtu:///dev/ttyUSB0?baudrate=9600&parity=e&stopbits=2")
    settings = effective_settings(profile, {"timeout_s": 2.0, "baudrate": 38400}, endpoint)
    assert (settings.timeout_s, settings.max_gap) == (2.0, 4)
    assert (settings.baudrate, settings.parity, settings.stopbits) == (9600, "E", 2)
    with pytest.raises(ValidationError):
        effective_settings(profile, {"stopbits": 3})
