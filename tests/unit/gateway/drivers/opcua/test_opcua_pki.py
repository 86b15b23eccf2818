"""The gateway's own certificate, the server trust list, and where passwords come from."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.drivers.opcua.security import (
    Pki,
    default_pki_dir,
    password_env_var,
    read_password,
)


def server_certificate(uri: str = "urn:vendor:grinder", cn: str = "Grinder PLC") -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(uri)]), False)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)


def test_client_identity_is_created_once_with_the_uri_servers_check(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    first = pki.ensure_client_identity("gw-host")
    assert first.is_new
    assert first.application_uri == "urn:gw-host:shulian:gateway"
    cert = x509.load_der_x509_certificate(first.cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [first.application_uri]
    assert san.get_values_for_type(x509.DNSName) == ["gw-host"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=4 * 365)
    assert first.key_path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "pki" / "trusted").is_dir() and (tmp_path / "pki" / "rejected").is_dir()

    again = pki.ensure_client_identity("other-host")
    assert not again.is_new
    assert again.info.sha1 == first.info.sha1  # the same certificate: servers trust it once


def test_an_unknown_server_is_refused_and_saved_for_the_installer(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    der = server_certificate()
    decision = pki.check_server_certificate(der, trust_on_first_use=False)
    assert not decision.is_trusted
    assert decision.reason == "it is not in the trust list"
    assert decision.saved_to is not None and decision.saved_to.parent == pki.rejected_dir
    assert decision.saved_to.read_bytes() == der
    assert decision.info.sha1 in decision.saved_to.name and "Grinder_PLC" in decision.saved_to.name
    assert "application URI urn:vendor:grinder" in str(decision.info)

    decision.saved_to.rename(pki.trusted_dir / decision.saved_to.name)
    assert pki.check_server_certificate(der, trust_on_first_use=False).is_trusted


def test_trusted_certificates_may_be_pem(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    der = server_certificate()
    pem = x509.load_der_x509_certificate(der).public_bytes(serialization.Encoding.PEM)
    pki.trusted_dir.mkdir(parents=True)
    (pki.trusted_dir / "grinder.pem").write_bytes(pem)
    (pki.trusted_dir / "notes.txt").write_text("not a certificate")
    (pki.trusted_dir / "broken.der").write_bytes(b"garbage")
    assert pki.check_server_certificate(der, trust_on_first_use=False).is_trusted


def test_trust_on_first_use_pins_per_application_uri(tmp_path: Path) -> None:
    pki = Pki(tmp_path)
    first, impostor, other_machine = (
        server_certificate(),
        server_certificate(),
        server_certificate("urn:vendor:press"),
    )
    decision = pki.check_server_certificate(first, trust_on_first_use=True)
    assert decision.is_trusted and decision.reason == "trusted on first use"
    assert decision.saved_to is not None and decision.saved_to.parent == pki.trusted_dir
    assert (
        pki.check_server_certificate(first, trust_on_first_use=True).reason == "in the trust list"
    )

    refused = pki.check_server_certificate(impostor, trust_on_first_use=True)
    assert not refused.is_trusted
    assert "differs from the certificate trusted for urn:vendor:grinder" in refused.reason
    assert pki.check_server_certificate(other_machine, trust_on_first_use=True).is_trusted


def test_password_comes_from_the_file_else_the_device_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert password_env_var("press-2.line_a") == "SHULIAN_GW_OPCUA_PASSWORD__PRESS_2_LINE_A"
    monkeypatch.setenv("SHULIAN_GW_OPCUA_PASSWORD__GRINDER_01", "from-env")
    assert read_password("grinder-01", None) == "from-env"
    secret = tmp_path / "pw"
    secret.write_text("from-file\nignored\n", encoding="utf-8")
    assert read_password("grinder-01", str(secret)) == "from-file"
    monkeypatch.delenv("SHULIAN_GW_OPCUA_PASSWORD__GRINDER_01")
    assert read_password("grinder-01", None) is None
    with pytest.raises(OSError):
        read_password("grinder-01", str(tmp_path / "missing"))


def test_default_pki_dir_follows_the_gateway_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHULIAN_GW_GATEWAY__DATA_DIR", raising=False)
    assert default_pki_dir() == Path("var/gateway/pki")
    monkeypatch.setenv("SHULIAN_GW_GATEWAY__DATA_DIR", "/srv/shulian")
    assert default_pki_dir() == Path("/srv/shulian/pki")


def test_devices_starting_together_share_one_certificate(tmp_path: Path) -> None:
    pki = Pki(tmp_path / "pki")
    with ThreadPoolExecutor(max_workers=4) as pool:
        identities = list(pool.map(lambda _: pki.ensure_client_identity("gw-host"), range(4)))
    assert len({i.info.sha1 for i in identities}) == 1
    assert sorted(p.name for p in (tmp_path / "pki").iterdir()) == ["own", "rejected", "trusted"]
