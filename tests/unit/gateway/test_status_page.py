"""The status page's rendering, language choice, secrecy and its tiny HTTP responder."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
import pytest

from gateway.errors import ConfigError
from gateway.settings import StatusSettings, build_settings
from gateway.status import StatusServer, public_endpoint
from gateway.status_render import TEXT, pick_language, render_html

NOW = 1_760_000_000_000


def sample_status() -> dict[str, Any]:
    return {
        "gateway": "gw-7",
        "enterprise": "ent-a",
        "version": "0.1.0",
        "config_hash": "abcdef0123456789",
        "boot": "b",
        "started_ms": NOW - 60_000,
        "now_ms": NOW,
        "reloads": 0,
        "outputs": [
            {
                "name": "shulian",
                "broker": {
                    "url": "mqtt://127.0.0.1:1883",
                    "client_id": "shulian-ent-a-gw-7",
                    "connected": False,
                    "since_ms": NOW - 5000,
                    "last_error": "cannot connect: [Errno 111] Connection refused",
                    "last_error_ms": NOW - 1000,
                    "inflight_batches": 0,
                },
                "buffer": {
                    "batches": 12,
                    "samples": 3456,
                    "bytes": 20480,
                    "oldest_age_s": 42.5,
                    "dropped_samples": 7,
                    "dropped_batches": 1,
                },
            }
        ],
        "devices": [
            {
                "id": "press-1",
                "profile": "servo_press",
                "protocol": "modbus",
                "endpoint": "tcp://10.0.0.5:502",
                "unit_id": 3,
                "connection": "disconnected",
                "since_ms": NOW - 2000,
                "last_good_ms": NOW - 3000,
                "error": "press-1 (tcp://10.0.0.5:502 unit 3): no reply <script>x</script>",
                "last_error": "press-1: no reply",
                "last_error_ms": NOW - 2000,
                "reads_per_s": 2.0,
                "values_per_s": 24.0,
                "read_errors": 1,
                "reconnects": 1,
                "signals": [
                    {
                        "signal": "coolant_temperature",
                        "raw": 77.0,
                        "raw_unit": "degF",
                        "read_ms": NOW - 3000,
                        "value": 25.0,
                        "unit": "degC",
                        "quality": "good",
                        "reason": None,
                    },
                    {
                        "signal": "run_hours",
                        "raw": 104007,
                        "raw_unit": "",
                        "scale": 0.1,
                        "offset": 0,
                        "read_ms": NOW - 3000,
                        "value": 10400.7,
                        "unit": "h",
                        "quality": "uncertain",
                        "reason": "UncertainLastUsableValue",
                    },
                    {
                        "signal": "part_count",
                        "raw": None,
                        "raw_unit": "",
                        "read_ms": None,
                        "value": None,
                        "unit": "",
                        "quality": None,
                        "reason": None,
                    },
                ],
            }
        ],
    }


@pytest.mark.parametrize("lang", ["en", "zh-CN"])
def test_the_page_shows_devices_values_errors_buffer_and_broker(lang: str) -> None:
    page = render_html(sample_status(), lang, refresh_s=7)
    assert f'<html lang="{lang}">' in page
    assert '<meta http-equiv="refresh" content="7">' in page
    for key in ("title", "devices", "last_error", "buffer", "broker", "raw", "value"):
        assert TEXT[key][lang] in page, key
    assert TEXT["disconnected"][lang] in page
    assert "77 degF" in page and "25 degC" in page  # raw and normalized, each with its unit
    assert "104007 (×0.1)" in page and "10400.7 h" in page  # a scaled raw has no unit of its own
    assert f"{TEXT['uncertain'][lang]}: UncertainLastUsableValue" in page
    assert "tcp://10.0.0.5:502 unit 3" in page
    assert "3,456" in page and "20.0 KiB" in page and "42.5 s" in page  # buffer depth, age
    assert "[Errno 111] Connection refused" in page  # the broker's last error
    # Text from devices is escaped, never markup.
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page


def test_both_languages_have_every_text() -> None:
    assert all(set(texts) == {"en", "zh-CN"} and all(texts.values()) for texts in TEXT.values())
    assert render_html(sample_status(), "en") != render_html(sample_status(), "zh-CN")


@pytest.mark.parametrize(
    ("asked", "accept", "expected"),
    [
        ("", "zh-CN,zh;q=0.9,en;q=0.8", "zh-CN"),
        ("", "en-US,en;q=0.9,zh-CN;q=0.8", "en"),
        ("en", "zh-CN,zh;q=0.9", "en"),
        ("zh-CN", "en-US", "zh-CN"),
        ("", "fr-FR, zh-TW;q=0.5", "zh-CN"),
        ("", "", "en"),
    ],
)
def test_the_language_is_chosen_by_query_then_accept_language(
    asked: str, accept: str, expected: str
) -> None:
    assert pick_language(asked, accept) == expected


def test_endpoints_lose_their_credentials() -> None:
    assert public_endpoint("opc.tcp://op:secret@10.0.0.9:4840/srv?token=x") == (
        "opc.tcp://10.0.0.9:4840/srv"
    )
    assert public_endpoint("tcp://10.0.0.5:502") == "tcp://10.0.0.5:502"
    assert public_endpoint("rtu:///dev/ttyUSB0") == "rtu:///dev/ttyUSB0"


def test_a_non_loopback_bind_needs_allow_remote() -> None:
    with pytest.raises(ConfigError) as refused:
        build_settings({"status": {"bind": "0.0.0.0"}}, file_name="gateway.yaml")
    assert "status.bind" in str(refused.value) or "status" in str(refused.value)
    assert "allow_remote" in str(refused.value)
    allowed = build_settings({"status": {"bind": "0.0.0.0", "allow_remote": True}})
    assert allowed.status.bind == "0.0.0.0"
    assert build_settings({"status": {"bind": "localhost"}}).status.bind == "localhost"
    assert build_settings({}).status == StatusSettings(bind="127.0.0.1", port=8765)


async def _get(port: int, path: str, host: str = "127.0.0.1", method: str = "GET") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"{method} {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        "Accept-Language: zh-CN,zh;q=0.9\r\n\r\n".encode()
    )
    await writer.drain()
    data = await reader.read()
    writer.close()
    return data


async def test_the_responder_serves_json_and_html_and_refuses_foreign_hosts() -> None:
    async def collect(_rates: Any) -> dict[str, Any]:
        return sample_status()

    server = StatusServer(StatusSettings(port=0), collect)  # 0: a free port, for the test
    assert await server.start(dict)
    try:
        answer = await _get(server.port, "/status.json")
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK") and b"application/json" in head
        assert orjson.loads(body)["devices"][0]["id"] == "press-1"

        page = await _get(server.port, "/")
        assert page.startswith(b"HTTP/1.1 200 OK")
        assert TEXT["title"]["zh-CN"].encode() in page  # Accept-Language: zh-CN
        english = await _get(server.port, "/?lang=en")
        assert TEXT["title"]["en"].encode() in english

        head_only = await _get(server.port, "/status.json", method="HEAD")
        assert head_only.startswith(b"HTTP/1.1 200 OK") and head_only.endswith(b"\r\n\r\n")
        assert (await _get(server.port, "/nope")).startswith(b"HTTP/1.1 404")
        assert (await _get(server.port, "/", method="POST")).startswith(b"HTTP/1.1 405")
        # DNS rebinding: a page on evil.example that resolves to 127.0.0.1 gets nothing.
        assert (await _get(server.port, "/status.json", host="evil.example")).startswith(
            b"HTTP/1.1 403"
        )
    finally:
        await server.stop()


async def test_a_port_another_process_listens_on_leaves_the_gateway_running_without_the_page(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def collect(_rates: Any) -> dict[str, Any]:
        return sample_status()

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        server = StatusServer(StatusSettings(port=port), collect)
        assert await server.start(dict) is False
        await server.stop()
    assert f"status page cannot listen on 127.0.0.1:{port}" in caplog.text
    assert "the gateway runs without it" in caplog.text


def _has_ipv6_loopback() -> bool:
    """Containers often run with IPv6 turned off, where nothing can listen on ::1."""
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


async def test_the_page_listens_on_a_host_name_and_on_ipv6_loopback() -> None:
    async def collect(_rates: Any) -> dict[str, Any]:
        return sample_status()

    for host in ("localhost", "::1") if _has_ipv6_loopback() else ("localhost",):
        server = StatusServer(StatusSettings(bind=host, port=0), collect)
        try:
            assert await server.start(dict), host
            assert server.port > 0
        finally:
            await server.stop()


def test_the_terminal_view_keeps_bracketed_error_text(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """rich would take ``[code 4]`` for markup and drop it; the terminal prints it as text."""
    from gateway.status_render import print_terminal

    monkeypatch.setenv("COLUMNS", "240")
    status = sample_status()
    status["devices"][0]["error"] = "press-1: Modbus exception [code 4] server device failure"
    status["outputs"][0]["broker"]["last_error"] = "refused [bold]twice[/bold]"
    print_terminal(status, "en")
    out = capsys.readouterr().out
    assert "[code 4] server device failure" in out
    assert "refused [bold]twice[/bold]" in out
    assert "press-1" in out and "tcp://10.0.0.5:502 unit 3" in out
    assert "77 degF" in out and "25 degC" in out and "104007 (×0.1)" in out
    assert "3,456 samples" in out and "dropped samples: 7" in out
