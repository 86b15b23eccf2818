"""The ingest's error tree and the reasons a message or sample is rejected (dead-lettered).

::

    IngestError
    ├── ConfigError            settings are wrong (start-up stops, all problems listed)
    ├── StorageError           the database refused or is unreachable
    │   └── MigrationError     a schema migration failed or the schema is newer than this code
    └── RegistryImportError    a registry CSV row is wrong (file:line: field)

Example::

    raise RegistryImportError(
        "unknown segment '999'",
        where="enterprises.csv:7: segment",
        hint="Use 345 or 367 (GB/T 4754-2017).",
    )

Rejected input is not an exception: it becomes a dead-letter row with a ``Reason`` and a counter.
"""

from __future__ import annotations

from enum import StrEnum


class IngestError(Exception):
    """Root of the ingest's errors: ``what`` failed, ``where``, and a ``hint`` for the next step."""

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


class ConfigError(IngestError):
    """One or more problems in the settings; ``problems`` lists each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        count = len(problems)
        super().__init__(
            f"{count} configuration problem{'s' if count != 1 else ''}:\n  " + "\n  ".join(problems)
        )


class StorageError(IngestError):
    """The database refused a statement or cannot be reached."""


class MigrationError(StorageError):
    """A schema migration failed, or the database's schema is newer than this code."""


class RegistryImportError(IngestError):
    """A registry CSV file has a wrong row; ``where`` is ``file:line: column``."""


class Reason(StrEnum):
    """Why a message, or a sample inside one, went to the dead-letter table."""

    MALFORMED_JSON = "malformed_json"
    """The payload is not JSON (or not UTF-8)."""
    OVERSIZED = "oversized"
    """The payload exceeds ``limits.max_message_bytes``."""
    INVALID_PAYLOAD = "invalid_payload"
    """The envelope (everything but the samples) does not match the wire model."""
    UNKNOWN_TOPIC = "unknown_topic"
    """The topic is not one of wire.topics' kinds."""
    IDENTITY_MISMATCH = "identity_mismatch"
    """Topic, payload and registry disagree about enterprise, gateway or device."""
    UNKNOWN_GATEWAY = "unknown_gateway"
    """The gateway is not registered and auto-registration is off."""
    UNKNOWN_DEVICE = "unknown_device"
    """The device is not registered in the gateway's enterprise."""
    UNKNOWN_SIGNAL = "unknown_signal"
    """The signal's base name is not in the wire vocabulary (wire.signals)."""
    INVALID_SAMPLE = "invalid_sample"
    """A sample has wrong types or a value the wire model refuses."""
    NON_FINITE = "non_finite"
    """A sample's value is NaN or Infinity."""
    TOO_NEW = "too_new"
    """A sample's timestamp is further ahead than ``limits.max_future_s``."""
    TOO_OLD = "too_old"
    """A sample's timestamp is older than ``limits.max_age_s``."""
    DUPLICATE_POINT = "duplicate_point"
    """The same device, signal and timestamp appears again in one message."""
    STORAGE_REJECTED = "storage_rejected"
    """The database refused the message's rows even on its own (a value PostgreSQL cannot store)."""
    SPARKPLUG_UNMAPPED = "sparkplug_unmapped"
    """A Sparkplug edge node, device or metric that the Sparkplug mapping does not name."""
    SPARKPLUG_UNDECODABLE = "sparkplug_undecodable"
    """Not a Sparkplug B payload, or aliases no birth explained within the wait (rebirth asked)."""
