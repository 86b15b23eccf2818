"""Bodies the API accepts (``XxxIn``); responses are documented JSON objects built by the routes."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SessionIn(BaseModel):
    token: str = Field(
        min_length=1, max_length=200, description="A token from `shulian monitoring token create`"
    )


class ImportOut(BaseModel):
    created: int
    updated: int
    file: str
