"""Basic256Sha256 against a real asyncua server: the trust list, the gateway's own certificate,
user names and passwords, and the clear messages when any of them is wrong."""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from opcua_server_fixture import GrinderServer, grinder_profile, make_driver

from gateway.drivers.opcua.security import password_env_var
from gateway.errors import ProtocolError
from gateway.profiles.models import GroupSpec
from shulian.devservices import free_port

FAST = GroupSpec(name="fast", interval_ms=100)
PASSWORD = "s3cret-Pa55"


pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secure_grinder(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GrinderServer]:
    """Offers only Basic256Sha256 (Sign, SignAndEncrypt) and only the user gw / PASSWORD."""
    cert_dir = tmp_path_factory.mktemp("server")
    server = GrinderServer(free_port(), cert_dir=cert_dir, users={"gw": PASSWORD})
    await server.start()
    yield server
    await server.stop()


def secure_settings(tmp_path: Path, password: str = PASSWORD, **extra: object) -> dict[str, object]:
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n", encoding="utf-8")
    return {
        "security_policy": "Basic256Sha256",
        "security_mode": "SignAndEncrypt",
        "username": "gw",
        "password_file": str(password_file),
        "pki_dir": str(tmp_path / "pki"),
        **extra,
    }


def trust(server: GrinderServer, pki: Path) -> None:
    (pki / "trusted").mkdir(parents=True, exist_ok=True)
    shutil.copy(server.cert_path, pki / "trusted" / "grinder.der")


@pytest.mark.parametrize("mode", ["SignAndEncrypt", "Sign"])
async def test_trusted_server_with_user_and_password_delivers_data(
    secure_grinder: GrinderServer, tmp_path: Path, mode: str
) -> None:
    trust(secure_grinder, tmp_path / "pki")
    settings = secure_settings(tmp_path, security_mode=mode)
    driver = make_driver(secure_grinder.endpoint, grinder_profile(), settings)
    async with driver:
        result = await driver.read(FAST)
    assert [r.raw for r in result.readings] == [1480.0, 7]
    own = tmp_path / "pki" / "own"
    assert (own / "cert.der").is_file() and (own / "key.pem").stat().st_mode & 0o077 == 0


async def test_untrusted_server_is_refused_until_its_certificate_is_moved_to_trusted(
    secure_grinder: GrinderServer, tmp_path: Path
) -> None:
    settings = secure_settings(tmp_path)
    driver = make_driver(secure_grinder.endpoint, grinder_profile(), settings)
    with pytest.raises(ProtocolError) as refused:
        await driver.connect()
    message = str(refused.value)
    assert f"grinder-01 ({secure_grinder.endpoint}): refused the server's certificate" in message
    assert "application URI urn:shulian:test:server" in message
    assert "it is not in the trust list" in message
    assert "move that file to" in message
    rejected = list((tmp_path / "pki" / "rejected").glob("*.der"))
    assert len(rejected) == 1 and rejected[0].read_bytes() == secure_grinder.cert_path.read_bytes()

    shutil.move(rejected[0], tmp_path / "pki" / "trusted" / rejected[0].name)  # the installer's fix
    async with driver:
        assert (await driver.read(FAST)).readings[0].raw == 1480.0


async def test_wrong_password_is_refused_with_a_clear_message_that_hides_it(
    secure_grinder: GrinderServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trust(secure_grinder, tmp_path / "pki")
    settings = secure_settings(tmp_path, password="not-the-password")
    driver = make_driver(secure_grinder.endpoint, grinder_profile(), settings)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProtocolError) as refused:
        await driver.connect()
    message = str(refused.value)
    assert "the server refused the user 'gw' (BadUserAccessDenied)" in message
    assert "wrong user name or password" in message
    assert "not-the-password" not in message + caplog.text


async def test_password_from_the_environment_variable(
    secure_grinder: GrinderServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trust(secure_grinder, tmp_path / "pki")
    settings = secure_settings(tmp_path)
    del settings["password_file"]
    monkeypatch.setenv(password_env_var("grinder-01"), PASSWORD)
    assert password_env_var("grinder-01") == "SHULIAN_GW_OPCUA_PASSWORD__GRINDER_01"
    driver = make_driver(secure_grinder.endpoint, grinder_profile(), settings)
    async with driver:
        assert (await driver.read(FAST)).readings[1].raw == 7


async def test_trust_on_first_use_pins_the_first_certificate_and_refuses_a_new_one(
    tmp_path: Path,
) -> None:
    pki = tmp_path / "pki"
    port = free_port()
    settings = secure_settings(tmp_path, trust_on_first_use=True)
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()

    server = GrinderServer(port, cert_dir=first_dir, users={"gw": PASSWORD})
    await server.start()
    try:
        driver = make_driver(server.endpoint, grinder_profile(), settings)
        async with driver:
            assert (await driver.read(FAST)).readings[0].raw == 1480.0
    finally:
        await server.stop()
    assert len(list((pki / "trusted").glob("*.der"))) == 1

    impostor = GrinderServer(port, cert_dir=second_dir, users={"gw": PASSWORD})  # same URI, new key
    await impostor.start()
    try:
        with pytest.raises(ProtocolError, match="differs from the certificate trusted for"):
            await driver.connect()
    finally:
        await impostor.stop()


async def test_the_gateway_certificate_is_created_once_and_reused(
    secure_grinder: GrinderServer, tmp_path: Path
) -> None:
    trust(secure_grinder, tmp_path / "pki")
    settings = secure_settings(tmp_path)
    driver = make_driver(secure_grinder.endpoint, grinder_profile(), settings)
    cert = tmp_path / "pki" / "own" / "cert.der"
    async with driver:
        first = cert.read_bytes()
    async with driver:
        assert cert.read_bytes() == first


async def test_security_none_against_a_secure_only_server_says_what_it_offers(
    secure_grinder: GrinderServer, tmp_path: Path
) -> None:
    (tmp_path / "p").write_text(PASSWORD, encoding="utf-8")
    driver = make_driver(
        secure_grinder.endpoint,
        grinder_profile(),
        {"username": "gw", "password_file": str(tmp_path / "p")},
    )
    with pytest.raises(ProtocolError) as refused:
        await driver.connect()
    message = str(refused.value)
    assert "offers no endpoint with security None/None" in message
    assert "it offers Basic256Sha256/Sign, Basic256Sha256/SignAndEncrypt" in message
