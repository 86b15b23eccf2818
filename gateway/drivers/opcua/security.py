"""The gateway's OPC UA identity: its own certificate, the trust list of servers, and passwords.

Folder layout (the same as most OPC UA stacks, so installers recognise it)::

    <pki_dir>/own/cert.der      the gateway's application instance certificate (created on
    <pki_dir>/own/key.pem       first start, RSA 2048, valid 5 years; the key is mode 0600)
    <pki_dir>/trusted/          server certificates the gateway accepts (.der, .pem, .crt)
    <pki_dir>/rejected/         server certificates it refused; move one to trusted/ to accept it

Pure ``cryptography`` and file work, no network; callers run it in a thread
(``asyncio.to_thread``) because key generation takes a noticeable fraction of a second.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "CertificateInfo",
    "ClientIdentity",
    "Pki",
    "TrustDecision",
    "default_pki_dir",
    "describe_certificate",
    "password_env_var",
    "read_password",
]

DATA_DIR_ENV = "SHULIAN_GW_GATEWAY__DATA_DIR"
"""The gateway's ``gateway.data_dir`` as an environment variable (gateway/settings.py)."""
DEFAULT_DATA_DIR = Path("var") / "gateway"
"""The default of ``gateway.data_dir``."""
PASSWORD_ENV_PREFIX = "SHULIAN_GW_OPCUA_PASSWORD__"
_VALIDITY = dt.timedelta(days=5 * 365)
_CERT_SUFFIXES = (".der", ".pem", ".crt", ".cer")


def default_pki_dir() -> Path:
    """``<data dir>/pki``: ``$SHULIAN_GW_GATEWAY__DATA_DIR/pki``, else ``var/gateway/pki``.

    The gateway's composition root passes ``pki_dir`` explicitly when ``gateway.data_dir`` comes
    from the site file; this default only covers a driver used on its own (``profile probe``).
    """
    data_dir = os.environ.get(DATA_DIR_ENV)
    return (Path(data_dir) if data_dir else DEFAULT_DATA_DIR) / "pki"


def password_env_var(device_id: str) -> str:
    """``SHULIAN_GW_OPCUA_PASSWORD__GRINDER_01`` for device ``grinder-01``."""
    return PASSWORD_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", device_id).upper()


def read_password(device_id: str, password_file: str | None) -> str | None:
    """The password from ``password_file`` (first line) or the device's environment variable.

    Raises:
        OSError: when ``password_file`` is set but cannot be read.
    """
    if password_file:
        text = Path(password_file).expanduser().read_text(encoding="utf-8")
        return text.splitlines()[0] if text else ""
    return os.environ.get(password_env_var(device_id))


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    subject: str
    application_uri: str | None
    sha1: str
    """Thumbprint as OPC UA tools show it: 40 hex digits."""
    not_after: dt.datetime

    def __str__(self) -> str:
        uri = f", application URI {self.application_uri}" if self.application_uri else ""
        return f"{self.subject}{uri}, SHA-1 thumbprint {self.sha1}"


def describe_certificate(der: bytes) -> CertificateInfo:
    cert = x509.load_der_x509_certificate(der)
    return CertificateInfo(
        subject=cert.subject.rfc4514_string() or "(no subject)",
        application_uri=_application_uri(cert),
        sha1=hashlib.sha1(der).hexdigest().upper(),  # the OPC UA thumbprint is SHA-1
        not_after=cert.not_valid_after_utc,
    )


def _application_uri(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    """The gateway's certificate and key files, and the application URI written in them."""

    cert_path: Path
    key_path: Path
    application_uri: str
    info: CertificateInfo
    is_new: bool = False
    """Created by this call (first start, or the old one had expired)."""


@dataclass(frozen=True, slots=True)
class TrustDecision:
    is_trusted: bool
    info: CertificateInfo
    reason: str
    """Why: 'in the trust list', 'trusted on first use', or why it was refused."""
    saved_to: Path | None = None
    """Where a refused certificate was saved (rejected/) or a first-use one was added."""


class Pki:
    """One PKI folder; every method does blocking file work (run it in a thread)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.own_dir = root / "own"
        self.trusted_dir = root / "trusted"
        self.rejected_dir = root / "rejected"

    def ensure_client_identity(self, hostname: str | None = None) -> ClientIdentity:
        """Load the gateway's certificate, creating it (and the folders) on first use.

        Creation is atomic (a complete temporary folder renamed into place), so several
        devices starting together end up sharing one certificate.
        """
        self._ensure_folders()
        cert_path, key_path = self.own_dir / "cert.der", self.own_dir / "key.pem"
        if cert_path.is_file() and key_path.is_file():
            der = cert_path.read_bytes()
            cert = x509.load_der_x509_certificate(der)
            if cert.not_valid_after_utc > dt.datetime.now(dt.UTC):
                return self._identity(cert_path, key_path, der)
            # An expired certificate is set aside, not deleted: servers may still list it.
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
            with contextlib.suppress(FileNotFoundError):  # another device moved it first
                self.own_dir.rename(self.root / f"own.expired-{stamp}")
        self._create_client_identity(hostname or socket.gethostname())
        return self._identity(cert_path, key_path, cert_path.read_bytes(), is_new=True)

    def _identity(
        self, cert_path: Path, key_path: Path, der: bytes, *, is_new: bool = False
    ) -> ClientIdentity:
        info = describe_certificate(der)
        uri = info.application_uri or _gateway_uri(socket.gethostname())
        return ClientIdentity(cert_path, key_path, uri, info, is_new)

    def _create_client_identity(self, hostname: str) -> None:
        staging = Path(tempfile.mkdtemp(prefix="own.", dir=self.root))
        try:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            key_file = staging / "key.pem"
            key_file.write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )
            key_file.chmod(0o600)
            cert = _self_signed(key, hostname)
            (staging / "cert.der").write_bytes(cert.public_bytes(serialization.Encoding.DER))
            try:
                staging.rename(self.own_dir)
            except OSError:
                if not (self.own_dir / "cert.der").is_file():
                    raise  # not a lost race with another device: a real file-system problem
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def check_server_certificate(self, der: bytes, trust_on_first_use: bool) -> TrustDecision:
        """Is this server certificate in the trust list? Adds it there on first use if allowed;
        saves a refused one in rejected/ so an installer can move it to trusted/."""
        self._ensure_folders()
        info = describe_certificate(der)
        fingerprint = hashlib.sha256(der).digest()
        trusted = list(self._trusted_certificates())
        if any(hashlib.sha256(cert_der).digest() == fingerprint for cert_der, _ in trusted):
            return TrustDecision(True, info, "in the trust list")
        same_uri = [
            path
            for cert_der, path in trusted
            if info.application_uri and _uri_of(cert_der) == info.application_uri
        ]
        if trust_on_first_use and not same_uri:
            saved = self._save(self.trusted_dir, der, info)
            return TrustDecision(True, info, "trusted on first use", saved)
        saved = self._save(self.rejected_dir, der, info)
        if same_uri:
            reason = (
                f"it differs from the certificate trusted for {info.application_uri} "
                f"({same_uri[0].name}); the server was given a new certificate, or another "
                "machine is answering in its place"
            )
        else:
            reason = "it is not in the trust list"
        return TrustDecision(False, info, reason, saved)

    def _ensure_folders(self) -> None:
        """Create the layout, so an installer finds trusted/ and rejected/ where they belong."""
        for folder in (self.root, self.trusted_dir, self.rejected_dir):
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    def _trusted_certificates(self) -> list[tuple[bytes, Path]]:
        out: list[tuple[bytes, Path]] = []
        if not self.trusted_dir.is_dir():
            return out
        for path in sorted(self.trusted_dir.iterdir()):
            if path.suffix.lower() not in _CERT_SUFFIXES or not path.is_file():
                continue
            der = _load_der(path.read_bytes())
            if der is not None:
                out.append((der, path))
        return out

    def _save(self, folder: Path, der: bytes, info: CertificateInfo) -> Path:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", _common_name(der) or "server")[:60]
        path = folder / f"{name} [{info.sha1}].der"
        path.write_bytes(der)
        return path


def _gateway_uri(hostname: str) -> str:
    return f"urn:{hostname}:shulian:gateway"


def _self_signed(key: rsa.RSAPrivateKey, hostname: str) -> x509.Certificate:
    uri = _gateway_uri(hostname)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, f"shulian gateway @ {hostname}"[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "shulian"),
        ]
    )
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))  # tolerate a server clock a little behind
        .not_valid_after(now + _VALIDITY)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(uri), x509.DNSName(hostname)]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def _load_der(data: bytes) -> bytes | None:
    """DER bytes of a certificate file in DER or PEM; None for something else."""
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            cert = x509.load_pem_x509_certificate(data)
        else:
            cert = x509.load_der_x509_certificate(data)
    except ValueError:
        return None
    return cert.public_bytes(serialization.Encoding.DER)


def _uri_of(der: bytes) -> str | None:
    return _application_uri(x509.load_der_x509_certificate(der))


def _common_name(der: bytes) -> str | None:
    names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = names[0].value if names else None
    return value if isinstance(value, str) else None
