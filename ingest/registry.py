"""The registry as the ingest sees it: wire ids to surrogate keys, and who may send what.

The database is the source of truth; ``RegistryCache`` mirrors the parts the hot path needs.
A flush looks ids up through a ``RegistryView``, which asks the database on a miss (another
worker, the API or a CSV import may have registered it), applies the auto-registration rules
(settings ``registry.*``), and stages what it learnt until the flush commits.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import psycopg

from ingest.settings import RegistrySettings
from wire.payloads import CustomSignal
from wire.signals import SIGNALS, SignalKind, base_name, is_custom, lookup_signal

log = logging.getLogger(__name__)

NEGATIVE_TTL_S = 10.0
"""How long an unknown id is remembered as unknown, so a flood of it costs no queries."""


GatewayKey = tuple[str, str]
"""(enterprise id, gateway id): a gateway id is unique only within its enterprise."""


@dataclass(slots=True)
class GatewayInfo:
    enterprise_id: str
    online: bool = False


@dataclass(frozen=True, slots=True)
class SignalInfo:
    id: int
    kind: str


@dataclass(slots=True)
class _Maps:
    gateways: dict[GatewayKey, GatewayInfo] = field(default_factory=dict)
    devices: dict[tuple[str, str], int] = field(default_factory=dict)
    signals: dict[str, SignalInfo] = field(default_factory=dict)
    boots: dict[tuple[str, str, str], int] = field(default_factory=dict)
    """(enterprise, gateway, boot) -> gateway_boots.key"""
    device_gateways: dict[int, str | None] = field(default_factory=dict)
    declared: dict[str, CustomSignal] = field(default_factory=dict)
    """Custom signal declarations stored since the process started (to skip repeats)."""


class RegistryCache:
    """The process-wide mirror of registry ids, shared by all lanes (updated after commits)."""

    def __init__(self) -> None:
        self.maps = _Maps()
        self.unknown: dict[tuple[str, ...], float] = {}
        self.loaded_mono = 0.0
        self._lock = threading.Lock()

    def load(self, conn: psycopg.Connection) -> None:
        """Replace the mirror with the database's current registry."""
        maps = _Maps()
        for gateway_id, enterprise_id, online in conn.execute(
            "SELECT id, enterprise_id, online FROM gateways"
        ):
            maps.gateways[(enterprise_id, gateway_id)] = GatewayInfo(enterprise_id, online)
        for key, enterprise_id, device_id, gateway_id in conn.execute(
            "SELECT key, enterprise_id, device_id, gateway_id FROM devices"
        ):
            maps.devices[(enterprise_id, device_id)] = key
            maps.device_gateways[key] = gateway_id
        for signal_id, name, kind in conn.execute("SELECT id, name, kind FROM signals"):
            maps.signals[name] = SignalInfo(signal_id, kind)
        with self._lock:
            maps.boots = self.maps.boots  # immutable facts: keep what we know
            self.maps = maps
            self.unknown.clear()
            self.loaded_mono = time.monotonic()

    def merge(self, staged: _Maps, unknown: dict[tuple[str, ...], float]) -> None:
        with self._lock:
            maps = self.maps
            maps.gateways.update(staged.gateways)
            maps.devices.update(staged.devices)
            maps.signals.update(staged.signals)
            maps.boots.update(staged.boots)
            maps.device_gateways.update(staged.device_gateways)
            maps.declared.update(staged.declared)
            self.unknown.update(unknown)
            for ident in list(staged.devices):
                self.unknown.pop(("device", *ident), None)
            for ident in list(staged.gateways):
                self.unknown.pop(("gateway", *ident), None)
            for name in staged.declared:
                self.unknown.pop(("signal", name), None)

    def signal(self, name: str) -> SignalInfo | None:
        return self.maps.signals.get(name)

    def declared(self, name: str) -> CustomSignal | None:
        return self.maps.declared.get(name)


class RegistryView:
    """One flush's window on the registry: reads through to the database, stages new facts."""

    def __init__(
        self, cache: RegistryCache, conn: psycopg.Connection, settings: RegistrySettings
    ) -> None:
        self.cache = cache
        self.conn = conn
        self.settings = settings
        self.staged = _Maps()
        self.unknown: dict[tuple[str, ...], float] = {}

    def commit(self) -> None:
        """Publish what this flush learnt; call only after the transaction committed."""
        self.cache.merge(self.staged, self.unknown)

    # --- gateways -----------------------------------------------------------------------

    def gateway(self, enterprise_id: str, gateway_id: str) -> GatewayInfo | None:
        ident = (enterprise_id, gateway_id)
        info = self.staged.gateways.get(ident) or self.cache.maps.gateways.get(ident)
        if info is not None or self._known_unknown(("gateway", *ident)):
            return info
        row = self.conn.execute(
            "SELECT enterprise_id, online FROM gateways WHERE enterprise_id = %s AND id = %s",
            ident,
        ).fetchone()
        if row is None:
            self.unknown[("gateway", *ident)] = time.monotonic() + NEGATIVE_TTL_S
            return None
        info = self.staged.gateways[ident] = GatewayInfo(row[0], row[1])
        return info

    def admit_gateway(self, gateway_id: str, enterprise_id: str) -> tuple[GatewayInfo | None, str]:
        """The gateway's registry entry, registering it when allowed; else None and why.

        The enterprise comes from the topic, which the broker's ACL ties to the login, so
        ``ent-b/gw-01`` is another gateway than ``ent-a/gw-01``.
        """
        info = self.gateway(enterprise_id, gateway_id)
        if info is None:
            if not self.settings.auto_register_gateways:
                return None, (
                    f"gateway {gateway_id!r} of enterprise {enterprise_id!r} is not registered "
                    "(registry.auto_register_gateways is off); register it or turn "
                    "auto-registration on"
                )
            info = self._register_gateway(gateway_id, enterprise_id)
        return info, ""

    def _register_gateway(self, gateway_id: str, enterprise_id: str) -> GatewayInfo:
        self.conn.execute(
            "INSERT INTO enterprises (id, name, auto_registered) VALUES (%s, %s, true) "
            "ON CONFLICT (id) DO NOTHING",
            (enterprise_id, enterprise_id),
        )
        self.conn.execute(
            "INSERT INTO gateways (id, enterprise_id, auto_registered) VALUES (%s, %s, true) "
            "ON CONFLICT (enterprise_id, id) DO NOTHING",
            (gateway_id, enterprise_id),
        )
        row = self.conn.execute(
            "SELECT enterprise_id, online FROM gateways WHERE enterprise_id = %s AND id = %s",
            (enterprise_id, gateway_id),
        ).fetchone()
        assert row is not None
        log.info("auto-registered gateway %s of enterprise %s", gateway_id, row[0])
        info = self.staged.gateways[(enterprise_id, gateway_id)] = GatewayInfo(row[0], row[1])
        return info

    def set_gateway_online(self, enterprise_id: str, gateway_id: str, online: bool) -> None:
        info = self.gateway(enterprise_id, gateway_id)
        if info is not None:
            self.staged.gateways[(enterprise_id, gateway_id)] = GatewayInfo(
                info.enterprise_id, online
            )

    # --- devices ------------------------------------------------------------------------

    def device_keys(self, enterprise_id: str, device_ids: set[str]) -> dict[str, int]:
        """Keys of the registered devices among ``device_ids`` (unknown ones are left out)."""
        keys: dict[str, int] = {}
        missing: list[str] = []
        staged, cached = self.staged.devices, self.cache.maps.devices
        for device_id in device_ids:
            ident = (enterprise_id, device_id)
            key = staged.get(ident) or cached.get(ident)
            if key is not None:
                keys[device_id] = key
            elif not self._known_unknown(("device", *ident)):
                missing.append(device_id)
        if missing:
            rows = self.conn.execute(
                "SELECT device_id, key, gateway_id FROM devices "
                "WHERE enterprise_id = %s AND device_id = ANY(%s)",
                (enterprise_id, missing),
            ).fetchall()
            for device_id, key, gateway_id in rows:
                keys[device_id] = staged[(enterprise_id, device_id)] = key
                self.staged.device_gateways[key] = gateway_id
            expires = time.monotonic() + NEGATIVE_TTL_S
            for device_id in set(missing) - {r[0] for r in rows}:
                self.unknown[("device", enterprise_id, device_id)] = expires
        return keys

    def register_devices(
        self, enterprise_id: str, gateway_id: str, devices: dict[str, str]
    ) -> dict[str, int]:
        """Register (or move to ``gateway_id``) the announced devices; ``devices`` maps id to
        profile ('' when unknown, which keeps a profile set earlier)."""
        if not devices:
            return {}
        ids = sorted(devices)
        rows = self.conn.execute(
            """
            INSERT INTO devices (enterprise_id, device_id, gateway_id, profile, auto_registered)
            SELECT %s, d, %s, p, true FROM unnest(%s::text[], %s::text[]) AS u(d, p)
            ON CONFLICT (enterprise_id, device_id) DO UPDATE
            SET gateway_id = excluded.gateway_id,
                profile = CASE WHEN excluded.profile <> '' THEN excluded.profile
                               ELSE devices.profile END
            WHERE devices.gateway_id IS DISTINCT FROM excluded.gateway_id
               OR (excluded.profile <> '' AND devices.profile <> excluded.profile)
            RETURNING device_id, key
            """,
            (enterprise_id, gateway_id, ids, [devices[d] for d in ids]),
        ).fetchall()
        keys = {device_id: key for device_id, key in rows}
        for device_id, key in keys.items():
            self.staged.devices[(enterprise_id, device_id)] = key
            self.staged.device_gateways[key] = gateway_id
        profiles = sorted({p for p in devices.values() if p})
        if profiles:
            self.conn.execute(
                "INSERT INTO profiles (name) SELECT unnest(%s::text[]) ON CONFLICT DO NOTHING",
                (profiles,),
            )
        # rows left unchanged are not returned; their keys come from the cache or a lookup
        unchanged = set(ids) - set(keys)
        if unchanged:
            keys.update(self.device_keys(enterprise_id, unchanged))
        return keys

    def gateway_device_keys(self, enterprise_id: str, gateway_id: str) -> list[int]:
        """Keys of the devices registered under the gateway (for marking them offline)."""
        rows = self.conn.execute(
            "SELECT key FROM devices WHERE enterprise_id = %s AND gateway_id = %s ORDER BY key",
            (enterprise_id, gateway_id),
        ).fetchall()
        return [r[0] for r in rows]

    # --- signals and boots --------------------------------------------------------------

    def signal(self, name: str) -> SignalInfo:
        """The id and kind of a signal name that passed decoding (registered on first sight)."""
        info = self.staged.signals.get(name) or self.cache.signal(name)
        if info is not None:
            return info
        if is_custom(name) and name != base_name(name):
            # A qualified custom name (acme:fan_speed.left) takes its declared base's entry.
            self.conn.execute(
                "INSERT INTO signals (name, base, unit, kind, meaning, name_zh) "
                "SELECT %s, base, unit, kind, meaning, name_zh FROM signals WHERE name = %s "
                "ON CONFLICT (name) DO NOTHING",
                (name, base_name(name)),
            )
        spec = lookup_signal(name)
        kind = spec.kind.value if spec else _kind_of_unknown(name)
        self.conn.execute(
            "INSERT INTO signals (name, base, unit, kind, meaning, name_zh) "
            "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
            (
                name,
                base_name(name),
                spec.unit if spec else "",
                kind,
                spec.meaning if spec else "",
                spec.zh if spec else "",
            ),
        )
        row = self.conn.execute("SELECT id, kind FROM signals WHERE name = %s", (name,)).fetchone()
        assert row is not None
        info = self.staged.signals[name] = SignalInfo(row[0], row[1])
        return info

    def is_declared(self, name: str) -> bool:
        """Whether a custom signal (``acme:fan_speed.l``) was declared in some device status:
        its base has a row (only declarations make those). Misses are remembered for
        ``NEGATIVE_TTL_S``, so a flood of an undeclared name costs no queries."""
        base = base_name(name)
        if base in self.staged.declared or self.staged.signals.get(base):
            return True
        if self.cache.signal(base) is not None or self.cache.declared(base) is not None:
            return True
        ident = ("signal", base)
        if self._known_unknown(ident):
            return False
        row = self.conn.execute("SELECT id, kind FROM signals WHERE name = %s", (base,)).fetchone()
        if row is None:
            self.unknown[ident] = time.monotonic() + NEGATIVE_TTL_S
            return False
        self.staged.signals[base] = SignalInfo(row[0], row[1])
        return True

    def declare_signals(self, declarations: list[CustomSignal]) -> None:
        """Store (or update) custom signals as a device's status declares them.

        A declaration's row is its base name; rows of its qualified names (``acme:fan_speed.l``)
        follow it. ``base`` is the canonical counter it ``counts_as``, else its own name: KPIs
        select counters by ``base``, so an unmapped custom signal never counts. Unchanged
        declarations (every status repeats them) write nothing.
        """
        for decl in declarations:
            known = self.staged.declared.get(decl.name) or self.cache.declared(decl.name)
            if known == decl:
                continue
            base = decl.counts_as or decl.name
            row = (base, decl.unit, decl.kind.value, decl.meaning.en, decl.meaning.zh)
            self.conn.execute(
                "INSERT INTO signals (name, base, unit, kind, meaning, name_zh) "
                "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO NOTHING",
                (decl.name, *row),
            )
            changed = self.conn.execute(
                "UPDATE signals SET base = %s, unit = %s, kind = %s, meaning = %s, name_zh = %s "
                "WHERE (name = %s OR starts_with(name, %s)) "
                "AND (base, unit, kind, meaning, name_zh) IS DISTINCT FROM (%s, %s, %s, %s, %s) "
                "RETURNING id, name, kind",
                (*row, decl.name, f"{decl.name}.", *row),
            ).fetchall()
            if changed and known is not None:
                log.warning(
                    "custom signal %s declared differently than before; the new declaration "
                    "replaces it (declare it the same way in every profile)",
                    decl.name,
                    extra={"signal": decl.name},
                )
            for signal_id, name, kind in changed:
                self.staged.signals[name] = SignalInfo(signal_id, kind)
            self.staged.declared[decl.name] = decl
            self.unknown.pop(("signal", decl.name), None)

    def boot_key(self, enterprise_id: str, gateway_id: str, boot: str) -> int:
        """The ledger key of one boot of one enterprise's gateway (batches are (boot key, seq))."""
        ident = (enterprise_id, gateway_id, boot)
        key = self.staged.boots.get(ident) or self.cache.maps.boots.get(ident)
        if key is not None:
            return key
        row = self.conn.execute(
            "INSERT INTO gateway_boots (enterprise_id, gateway_id, boot) VALUES (%s, %s, %s) "
            "ON CONFLICT (enterprise_id, gateway_id, boot) DO UPDATE SET last_seen_at = now() "
            "RETURNING key",
            ident,
        ).fetchone()
        assert row is not None
        self.staged.boots[ident] = row[0]
        return int(row[0])

    def _known_unknown(self, ident: tuple[str, ...]) -> bool:
        expires = self.unknown.get(ident) or self.cache.unknown.get(ident)
        return expires is not None and expires > time.monotonic()


def _kind_of_unknown(name: str) -> str:
    return SignalKind.GAUGE.value


def sync_signals(conn: psycopg.Connection) -> int:
    """Upsert the wire vocabulary (wire.signals) into ``signals``; returns how many rows changed."""
    names = sorted(SIGNALS)
    specs = [SIGNALS[n] for n in names]
    cursor = conn.execute(
        """
        INSERT INTO signals (name, base, unit, kind, meaning, name_zh)
        SELECT n, n, u, k, m, z FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[],
                                            %s::text[]) AS s(n, u, k, m, z)
        ON CONFLICT (name) DO UPDATE SET unit = excluded.unit, kind = excluded.kind,
            meaning = excluded.meaning, name_zh = excluded.name_zh
        WHERE (signals.unit, signals.kind, signals.meaning, signals.name_zh)
              IS DISTINCT FROM (excluded.unit, excluded.kind, excluded.meaning, excluded.name_zh)
        """,
        (
            names,
            [s.unit for s in specs],
            [s.kind.value for s in specs],
            [s.meaning for s in specs],
            [s.zh for s in specs],
        ),
    )
    return cursor.rowcount
