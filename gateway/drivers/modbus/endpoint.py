"""Parse a Modbus device's endpoint URL and work out the settings it runs with.

Three transports, one URL each::

    tcp://10.2.0.7:502                       Modbus TCP (MBAP framing)
    rtu+tcp://10.2.0.50:4001                 RTU framing through a serial-to-TCP converter
    rtu:///dev/ttyUSB0?baudrate=9600&parity=E&stopbits=1&bytesize=8   RTU on a local serial port

Devices whose endpoints have the same ``bus_key`` share one connection (and one request lock).
Pure: no I/O, no vendor library, so ``check`` and ``profile plan`` work anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import parse_qsl, urlsplit

from pydantic import ValidationError

from gateway.drivers.modbus.models import ModbusProfile, ModbusSettings

Scheme = Literal["tcp", "rtu", "rtu+tcp"]
SCHEMES: Final[tuple[Scheme, ...]] = ("tcp", "rtu+tcp", "rtu")
DEFAULT_PORT: Final = 502
SERIAL_FIELDS: Final = ("baudrate", "parity", "stopbits", "bytesize")
"""Settings a serial endpoint may carry in its query string."""


@dataclass(frozen=True, slots=True)
class ModbusEndpoint:
    """Where a Modbus device is reached: a TCP host and port, or a serial port."""

    scheme: Scheme
    host: str = ""
    port: int = DEFAULT_PORT
    serial_port: str = ""
    serial: tuple[tuple[str, str], ...] = ()
    """Serial settings from the query string, as written (validated with the settings)."""

    @property
    def is_serial_framing(self) -> bool:
        """RTU framing (a real serial port or a converter): unit ids matter and requests queue."""
        return self.scheme in ("rtu", "rtu+tcp")

    @property
    def bus_key(self) -> str:
        """Identity of the physical connection; devices with equal keys share one connection."""
        if self.scheme == "rtu":
            return f"rtu://{self.serial_port}"
        return f"{self.scheme}://{self.host}:{self.port}"

    def describe(self) -> str:
        """Short form for messages: ``10.2.0.7:502`` or ``/dev/ttyUSB0``."""
        return self.serial_port if self.scheme == "rtu" else f"{self.host}:{self.port}"


def parse_endpoint(text: str) -> ModbusEndpoint:
    """Parse ``tcp://host:port``, ``rtu+tcp://host:port`` or ``rtu:///dev/ttyX?baudrate=..``.

    Raises:
        ValueError: naming what is wrong with the URL and what a valid one looks like.
    """
    if "://" not in text:
        raise ValueError(
            f"endpoint {text!r} has no scheme; write tcp://{text.strip()} (Modbus TCP), "
            f"rtu+tcp://{text.strip()} (RTU through a converter) or rtu:///dev/ttyUSB0"
        )
    parts = urlsplit(text.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(
            f"endpoint {text!r} has scheme {parts.scheme or '(none)'!r}; use tcp://host:502, "
            "rtu+tcp://host:port or rtu:///dev/ttyUSB0?baudrate=9600"
        )
    query = tuple(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "rtu":
        return _serial_endpoint(text, parts.netloc, parts.path, query)
    if query:
        raise ValueError(f"endpoint {text!r}: a {scheme}:// endpoint takes no query parameters")
    if parts.path not in ("", "/"):
        raise ValueError(f"endpoint {text!r}: expected {scheme}://host:port with no path")
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"endpoint {text!r} has no host; expected {scheme}://host:port")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"endpoint {text!r}: the port must be a number in 1..65535") from None
    if port is None:
        port = DEFAULT_PORT
    if not 1 <= port <= 65535:
        raise ValueError(f"endpoint {text!r}: the port must be a number in 1..65535")
    return ModbusEndpoint(scheme=scheme, host=host.lower(), port=port)


def _serial_endpoint(
    text: str, netloc: str, path: str, query: tuple[tuple[str, str], ...]
) -> ModbusEndpoint:
    if netloc:
        # rtu://dev/ttyUSB0 parses "dev" as a host: the port path needs three slashes.
        raise ValueError(
            f"endpoint {text!r}: write the serial port after three slashes, "
            f"e.g. rtu:///dev/{netloc}{path} or rtu:///COM3"
        )
    port = path[1:] if path[:1] == "/" and path[1:].upper().startswith("COM") else path
    if not port or port == "/":
        raise ValueError(f"endpoint {text!r} names no serial port; e.g. rtu:///dev/ttyUSB0")
    unknown = [key for key, _ in query if key not in SERIAL_FIELDS]
    if unknown:
        raise ValueError(
            f"endpoint {text!r}: unknown serial setting(s) {unknown}; "
            f"known: {', '.join(SERIAL_FIELDS)}"
        )
    return ModbusEndpoint(scheme="rtu", serial_port=port, serial=query)


def effective_settings(
    profile: ModbusProfile, overrides: dict[str, Any], endpoint: ModbusEndpoint | None = None
) -> ModbusSettings:
    """The profile's settings, then the site's per-device ``settings``, then the endpoint's query.

    Raises:
        pydantic.ValidationError: a per-device override or a serial query value is invalid
            (its ``loc`` names the field).
    """
    merged: dict[str, Any] = {**profile.modbus.model_dump(), **overrides}
    if endpoint is not None:
        merged.update(_serial_values(endpoint))
    return ModbusSettings.model_validate(merged)


def _serial_values(endpoint: ModbusEndpoint) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, raw in endpoint.serial:
        values[key] = raw.upper() if key == "parity" else _number_or_text(raw)
    return values


def _number_or_text(raw: str) -> int | str:
    try:
        return int(raw)
    except ValueError:
        return raw


def settings_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """``(field, message)`` for each problem in a settings ValidationError."""
    return [
        (".".join(str(p) for p in err["loc"]), err["msg"].removeprefix("Value error, "))
        for err in exc.errors()
    ]
