"""A private Mosquitto with the shipped secure config (common.conf + secure.conf + acl), for tests.

The deploy files are used as shipped, with only their paths substituted: the listener's port,
and /etc/mosquitto/shulian replaced by the test's folder holding a throwaway CA, the broker's
certificate (valid for 127.0.0.1 only, so ``localhost`` is a host-name mismatch), a second
"rogue" CA that signed nothing the broker presents, and logins made with
``shulian gateway credentials``.
"""

from __future__ import annotations

import datetime
import ipaddress
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from typer.testing import CliRunner

from gateway.credentials import app as credentials_cli
from shulian.devservices import MOSQUITTO_CONF_DIR, Mosquitto, free_port

__all__ = ["SecureBroker", "add_login", "make_ca", "make_server_cert", "start_secure_broker"]


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, key: Any, cert: x509.Certificate) -> None:
    path.with_suffix(".crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def make_ca(folder: Path, name: str) -> tuple[Any, x509.Certificate]:
    """A self-signed CA written to ``folder/name.crt`` and ``.key``."""
    key = _key()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    _write(folder / name, key, cert)
    return key, cert


def make_server_cert(folder: Path, ca_key: Any, ca_cert: x509.Certificate) -> None:
    """``folder/server.crt`` and ``.key``, signed by the CA, valid for the address 127.0.0.1."""
    key = _key()
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(folder / "server", key, cert)


def add_login(folder: Path, *args: str) -> str:
    """Run ``shulian gateway credentials ARGS`` on the broker's files; returns the password."""
    secret = folder / f"secret-{uuid.uuid4().hex[:6]}"
    result = CliRunner().invoke(
        credentials_cli,
        [
            *args,
            "--password-file",
            str(folder / "passwd"),
            "--acl-file",
            str(folder / "acl"),
            "--secret-out",
            str(secret),
        ],
    )
    assert result.exit_code == 0, result.output
    return secret.read_text().strip()


@dataclass
class SecureBroker:
    broker: Mosquitto
    tls_port: int
    folder: Path
    passwords: dict[str, str]

    @property
    def plain_url(self) -> str:
        """The loopback plaintext listener devservices adds (same logins and ACL, no TLS)."""
        return self.broker.url

    @property
    def tls_url(self) -> str:
        return f"mqtts://127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> Path:
        return self.folder / "tls" / "ca.crt"

    @property
    def rogue_ca_file(self) -> Path:
        """A CA that did not sign the broker's certificate."""
        return self.folder / "tls" / "rogue-ca.crt"

    def stop(self) -> None:
        self.broker.stop()


def start_secure_broker(
    workdir: Path,
    gateways: list[tuple[str, str]],
    readers: list[str],
    sparkplug_nodes: list[tuple[str, str]] | None = None,
) -> SecureBroker:
    """Start Mosquitto with the shipped secure config; ``gateways`` are (enterprise, gateway)
    logins, ``readers`` reader logins, ``sparkplug_nodes`` (group, node) Sparkplug edge node
    logins; their passwords are in ``passwords`` by username."""
    folder = workdir / "broker"
    (folder / "tls").mkdir(parents=True)
    ca_key, ca_cert = make_ca(folder / "tls", "ca")
    make_server_cert(folder / "tls", ca_key, ca_cert)
    make_ca(folder / "tls", "rogue-ca")
    (folder / "acl").write_text((MOSQUITTO_CONF_DIR / "acl").read_text())
    passwords = {
        f"{ent}/{gw}": add_login(folder, "add", "--enterprise", ent, "--gateway", gw)
        for ent, gw in gateways
    }
    for reader in readers:
        passwords[reader] = add_login(folder, "add-reader", "--username", reader)
    for group, node in sparkplug_nodes or []:
        passwords[f"sparkplug@{group}/{node}"] = add_login(
            folder, "add-sparkplug", "--group", group, "--node", node
        )
    tls_port = free_port()
    conf = (MOSQUITTO_CONF_DIR / "secure.conf").read_text()
    assert "listener 8883\n" in conf and "/etc/mosquitto/shulian/" in conf
    conf = conf.replace("/etc/mosquitto/shulian", str(folder))
    conf = conf.replace("listener 8883", f"listener {tls_port} 127.0.0.1")
    (folder / "secure.conf").write_text(conf)
    # devservices adds a plain loopback listener after ours (its readiness probe); the password
    # file and ACL are global (per_listener_settings false), so it is as locked down, only not
    # encrypted. use_username_as_clientid is per listener, so it is repeated for that one.
    broker = Mosquitto(
        workdir / "mosquitto",
        security_conf=folder / "secure.conf",
        extra_conf="use_username_as_clientid true\n",
    ).start()
    return SecureBroker(broker, tls_port, folder, passwords)
