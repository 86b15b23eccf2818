"""The gateway's error tree; every error says what failed, where, and what to do next.

::

    GatewayError
    ├── ConfigError            a profile or site file is wrong (start-up stops, all problems listed)
    └── DriverError            a whole device failed this cycle (drivers/base.py)
        ├── DeviceUnreachableError   connection refused, no route, serial port missing
        ├── DeviceTimeoutError       no reply in time
        └── ProtocolError            the device answered, but not as the protocol allows

Example::

    raise DeviceTimeoutError(
        "no reply in 1.0 s after 3 tries",
        where="hobber-03 (10.2.0.7:502 unit 4)",
        hint="Check the unit id or raise timeout_s.",
    )
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of the gateway's errors: ``what`` failed, ``where``, and a ``hint`` for the next step."""

    def __init__(self, what: str, *, where: str = "", hint: str = "") -> None:
        self.what = what
        self.where = where
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.hint:
            text = f"{text}. {self.hint}" if not text.endswith(".") else f"{text} {self.hint}"
        return text


class ConfigError(GatewayError):
    """One or more problems in profiles or the site file; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = len(problems)
        super().__init__(
            f"{count} configuration problem{'s' if count != 1 else ''}:\n  " + "\n  ".join(problems)
        )


class DriverError(GatewayError):
    """A whole device failed this cycle; the scheduler reconnects with backoff."""


class DeviceUnreachableError(DriverError):
    pass


class DeviceTimeoutError(DriverError):
    pass


class ProtocolError(DriverError):
    pass
