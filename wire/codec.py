"""Bytes to payload models and back. JSON (orjson) is the only encoding of wire v1."""

from __future__ import annotations

from typing import Any, Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from wire.payloads import Batch, DeviceStatus, GatewayStatus

MAX_MESSAGE_BYTES: Final = 4 * 1024 * 1024
M = TypeVar("M", bound=BaseModel)


class WireError(ValueError):
    """A message that cannot be decoded; ``reason`` is a short machine-readable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def encode(payload: BaseModel) -> bytes:
    """Encode any payload model as compact JSON."""
    return orjson.dumps(payload.model_dump(mode="json", exclude_none=False))


def load_json(data: bytes) -> Any:
    """Parse raw JSON, mapping every failure to a WireError."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise WireError("oversized", f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise WireError("malformed_json", f"not valid JSON: {exc}") from exc


def _decode(model: type[M], data: bytes) -> M:
    obj = load_json(data)
    try:
        return model.model_validate(obj)
    except ValidationError as exc:
        raise WireError("invalid_payload", f"not a valid {model.__name__}: {exc}") from exc


def decode_batch(data: bytes) -> Batch:
    return _decode(Batch, data)


def decode_status(data: bytes) -> GatewayStatus:
    return _decode(GatewayStatus, data)


def decode_device_status(data: bytes) -> DeviceStatus:
    return _decode(DeviceStatus, data)
