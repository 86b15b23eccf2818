"""asyncua's "unknown subscription" warning (a new subscription's empty first keep-alive) is DEBUG."""

from __future__ import annotations

import logging

import pytest

import gateway.drivers.opcua.transport  # noqa: F401  # installs the filter

ASYNCUA_SESSION = "asyncua.client.ua_session.UaSession"


def test_the_startup_keepalive_warning_becomes_a_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger=ASYNCUA_SESSION)  # as in production
    caplog.set_level(logging.DEBUG, logger="gateway.drivers.opcua.transport")  # (last: handler)
    logging.getLogger(ASYNCUA_SESSION).warning(
        "Received data for unknown subscription %s active are %s", 79, [78]
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    [line] = [r for r in caplog.records if r.name == "gateway.drivers.opcua.transport"]
    assert line.levelno == logging.DEBUG and "unknown subscription 79" in line.getMessage()


def test_other_asyncua_session_warnings_still_show(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=ASYNCUA_SESSION)
    logging.getLogger(ASYNCUA_SESSION).warning("delete_subscriptions failed for %s: %s", 3, "Bad")
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
