"""A small real OPC UA server (asyncua) for the driver's integration tests, and device builders.

The server is ours on purpose: the driver is tested against a real protocol stack whose nodes,
users and certificates each test controls (the shipped simulators get their own round-trip tests).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import Server, ua
from asyncua.crypto import cert_gen
from asyncua.crypto.permission_rules import User, UserRole
from cryptography.x509.oid import ExtendedKeyUsageOID
from support import wait_until_async  # noqa: F401  # re-exported for the tests here

from gateway.drivers.base import DriverMetrics
from gateway.drivers.opcua.driver import OpcUaDriver
from gateway.drivers.opcua.models import OpcUaProfile
from gateway.profiles.models import DeviceConfig
from shulian.devservices import free_port

NAMESPACE = "urn:shulian:test:grinder"
SERVER_URI = "urn:shulian:test:server"
STARTING_VALUES: dict[str, Any] = {
    "SpindleSpeed": 1480.0,
    "PartCount": 7,
    "State": 1,
    "Program": "O1234",
}

logging.getLogger("asyncua").setLevel(logging.ERROR)  # its teardown warnings drown test output


class PasswordUsers:
    """asyncua user manager: the given user names and passwords, nobody else."""

    def __init__(self, users: dict[str, str]) -> None:
        self.users = users

    def get_user(
        self,
        iserver: Any,
        username: str | None = None,
        password: str | None = None,
        certificate: Any = None,
    ) -> User | None:
        if username is not None and self.users.get(username) == password:
            return User(role=UserRole.User, name=username)
        return None


class GrinderServer:
    """A grinder's worth of nodes: Objects/Grinder/{SpindleSpeed, PartCount, State, Program}.

    ``stop()`` then ``start()`` restarts it on the same port, as a PLC power cycle would.
    """

    def __init__(
        self,
        port: int,
        *,
        cert_dir: Path | None = None,
        users: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.endpoint = f"opc.tcp://127.0.0.1:{port}"
        self.cert_dir = cert_dir
        self.users = users
        self.server: Server | None = None
        self.is_running = False
        self.nodes: dict[str, Any] = {}
        self.values: dict[str, Any] = dict(STARTING_VALUES)

    @property
    def cert_path(self) -> Path:
        assert self.cert_dir is not None
        return self.cert_dir / "server_cert.der"

    async def start(self) -> None:
        """Listen; a restart reuses the address space, as a PLC keeps its program."""
        if self.server is None:
            self.server = await self._build()
        await self.server.start()
        self.is_running = True

    async def _build(self) -> Server:
        server = Server(user_manager=PasswordUsers(self.users) if self.users is not None else None)
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name("shulian test grinder")
        await server.set_application_uri(SERVER_URI)
        if self.cert_dir is not None:
            key_path = self.cert_dir / "server_key.pem"
            if not self.cert_path.exists():
                await cert_gen.setup_self_signed_certificate(
                    key_path,
                    self.cert_path,
                    SERVER_URI,
                    socket.gethostname(),
                    [ExtendedKeyUsageOID.SERVER_AUTH],
                    {"commonName": "shulian test grinder"},
                )
            await server.load_certificate(str(self.cert_path))
            await server.load_private_key(str(key_path))
            server.set_security_policy(
                [
                    ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
                    ua.SecurityPolicyType.Basic256Sha256_Sign,
                ]
            )
        if self.users is not None:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        ns = await server.register_namespace(NAMESPACE)
        grinder = await server.nodes.objects.add_object(
            ua.NodeId("Grinder", ns), ua.QualifiedName("Grinder", ns)
        )
        for name, value in self.values.items():
            self.nodes[name] = await grinder.add_variable(
                ua.NodeId(f"Grinder.{name}", ns), ua.QualifiedName(name, ns), value
            )
        return server

    async def stop(self) -> None:
        """Close the port and every session (the nodes and their values stay)."""
        if self.server is not None and self.is_running:
            self.is_running = False
            await self.server.stop()

    async def write(self, name: str, value: Any) -> None:
        self.values[name] = value
        await self.nodes[name].write_value(value)

    async def reset(self) -> None:
        """Write the starting values back, for the next test on a shared server."""
        for name, value in STARTING_VALUES.items():
            await self.write(name, value)


def grinder_profile(signals: list[dict[str, Any]] | None = None, **opcua: Any) -> OpcUaProfile:
    return OpcUaProfile.model_validate(
        {
            "id": "test-grinder",
            "protocol": "opcua",
            "groups": [{"name": "fast", "interval_ms": 100}],
            "signals": signals
            or [
                {
                    "name": "spindle_speed",
                    "node_id": "ns=2;s=Grinder.SpindleSpeed",
                    "group": "fast",
                },
                {
                    "name": "part_count",
                    "browse_path": "0:Objects/2:Grinder/2:PartCount",
                    "group": "fast",
                },
            ],
            "opcua": {"keepalive_s": 0.5, "timeout_s": 1.0, **opcua},
        }
    )


def make_driver(
    endpoint: str,
    profile: OpcUaProfile,
    settings: dict[str, Any] | None = None,
    device_id: str = "grinder-01",
) -> OpcUaDriver:
    device = DeviceConfig(
        id=device_id,
        enterprise="acme",
        endpoint=endpoint,
        unit_id=None,
        line="",
        profile=profile,
        settings=settings or {},
    )
    problems = [p for p in OpcUaDriver.check(device) if p.severity == "error"]
    assert not problems, problems
    logger = logging.LoggerAdapter(logging.getLogger("test.opcua"), {"device": device_id})
    return OpcUaDriver(device, logger, DriverMetrics())


@pytest.fixture()
async def grinder() -> AsyncIterator[GrinderServer]:
    """A plain (no security, anonymous) grinder server on a free port, for a test to break."""
    server = GrinderServer(free_port())
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def module_grinder() -> AsyncIterator[GrinderServer]:
    """One plain grinder server for a whole module (starting one takes seconds); tests using it
    run on the module's event loop (``pytest.mark.asyncio(loop_scope="module")``)."""
    server = GrinderServer(free_port())
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module")
async def shared_grinder(module_grinder: GrinderServer) -> GrinderServer:
    """The module's grinder, with its starting values written back."""
    await module_grinder.reset()
    return module_grinder
