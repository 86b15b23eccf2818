"""The monitoring's error tree (outside the HTTP API, whose answers are ``monitoring.api.errors``).

::

    MonitoringError
    ├── ConfigError            settings are wrong (start-up stops, all problems listed)
    └── ExportPushError        (monitoring/api/export_push.py) a day's push could not be made
"""

from __future__ import annotations


class MonitoringError(Exception):
    """Root of the monitoring's errors: ``what`` failed, ``where``, and a ``hint`` for the next step."""

    def __init__(
        self, what: str, *, where: str = "", hint: str = "", cause: BaseException | None = None
    ) -> None:
        self.what = what
        self.where = where
        self.hint = hint
        self.cause = cause
        super().__init__(self.render())

    def render(self) -> str:
        text = f"{self.where}: {self.what}" if self.where else self.what
        if self.hint:
            text = f"{text}. {self.hint}" if not text.endswith(".") else f"{text} {self.hint}"
        return text


class ConfigError(MonitoringError):
    """One or more problems in the settings; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = len(problems)
        super().__init__(
            f"{count} configuration problem{'s' if count != 1 else ''}:\n  " + "\n  ".join(problems)
        )


__all__ = ["ConfigError", "MonitoringError"]
