"""Remote configuration through real parts: Modbus simulators, two gateway processes, Mosquitto,
the ingest process, PostgreSQL and the provider's API (issue 11, Must show).

Each gateway reads two simulated machines of two kinds (profile ``drill_<a>`` and ``drill_<b>``).
The provider uploads a new version of ``drill_<a>``, used by both gateways, and assigns it: both
apply it within 10 s and restart only the device using it. An invalid version (the profile is
valid on its own but no longer has the id the sites name) is refused by both with the
validator's messages, visible through the API and in the provider's fleet console (API and, in
chromium, the page: assigned and applied revisions apart, the gateways' own refusal messages, the
``config`` problem), and they keep running. Then a rollback, which the console shows as assigned
equal to applied with no problem left, and a
gateway that was stopped during an assignment applies it when it comes back. The simulators'
ground truth then shows no row stored twice, and no lasting state or counter value missed.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from pipeline import (
    Simulators,
    duplicates,
    forced_profiles,
    ingest_is_subscribed,
    load_truth,
    log_tails,
    missed_changes,
    never_served,
    rows,
    spawn_gateway,
    spawn_ingest,
    stop,
    write_site,
)
from support import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from browser_support import api_server, chromium_page, need_chromium

from monitoring.api.app import create_app
from monitoring.auth import Role, create_token
from monitoring.settings import MonitoringSettings
from shulian.devservices import Mosquitto, free_port
from simulators.scenario import generate_load_scenario

pytestmark = [pytest.mark.slow, pytest.mark.needs_pg, pytest.mark.needs_broker]

ENTERPRISE = "ent-drill"
PROVIDER = "sp-rc"
GATEWAYS = ("gw-rc1", "gw-rc2")
KINDS = ["servo_press", "energy_meter"]
POLL_MS = 500
APPLY_WITHIN_S = 10.0


def _gateway_folder(
    tmp_path: Path, gateway: str, endpoints: list[dict[str, Any]], mqtt: str
) -> Path:
    """A gateway's local folder: its profiles beside its site file, remote configuration on."""
    folder = tmp_path / gateway
    profiles = forced_profiles(folder, KINDS, POLL_MS)
    site = write_site(
        folder / "site.yaml", mqtt_url=mqtt, metrics_port=free_port(), endpoints=endpoints,
        profiles=profiles, data_dir=folder / "data",
    )  # fmt: skip
    text = site.read_text().replace("id: gw-drill,", f"id: {gateway},")
    site.write_text(text + "remote_config: {enabled: true}\n")
    return site


def _token(pg_url: str) -> str:
    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            return (
                await create_token(conn, Role.PROVIDER, provider=PROVIDER, name="sp-rc ops")
            ).secret

    return asyncio.run(make())


def _enterprise_token(pg_url: str) -> str:
    async def make() -> str:
        async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
            return (await create_token(conn, Role.ENTERPRISE, enterprise=ENTERPRISE)).secret

    return asyncio.run(make())


def _register(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO service_providers (id, name) VALUES ('sp-rc', 'provider')")
        conn.execute(
            "INSERT INTO enterprises (id, name, service_provider_id) VALUES (%s, 'drill', 'sp-rc')",
            (ENTERPRISE,),
        )
        for gateway in GATEWAYS:
            conn.execute(
                "INSERT INTO gateways (id, enterprise_id) VALUES (%s, %s)", (gateway, ENTERPRISE)
            )


def fleet(api: TestClient, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The provider's fleet console (its API), one row per gateway id."""
    r = api.get(f"/api/fleet/{PROVIDER}", headers=headers)
    assert r.status_code == 200, r.text
    return {g["id"]: g for g in r.json()["gateways"]}


def _console_page_shows(pg_url: str, token: str, refused: dict[str, dict[str, Any]]) -> None:
    """The console page in chromium (English) lists each gateway's refusal messages."""
    need_chromium()
    from playwright.sync_api import expect

    i18n = Path(__file__).resolve().parents[2] / "monitoring" / "web" / "i18n" / "en.json"
    t: dict[str, str] = json.loads(i18n.read_text("utf-8"))
    with api_server(pg_url) as base, chromium_page() as page:
        page.context.add_cookies([{"name": "shulian_lang", "value": "en", "url": base}])
        page.goto(base + "/login")
        page.fill("#token", token)
        page.click("button[type=submit]")
        expect(page).to_have_url(base + "/provider")
        page.goto(f"{base}/fleet/{PROVIDER}")
        for g, report in refused.items():
            card = page.locator(f'.fleet-gateway[data-gateway="{ENTERPRISE}/{g}"]')
            expect(card.locator(".config-refusal li")).to_have_text(report["messages"])
            expect(card.locator(".config-refusal")).to_contain_text(
                f"{t['fleet.config.refused']} {report['revision']}"
            )
            expect(card.locator(".problems")).to_contain_text(t["problem.config"])


# Remote configuration lives in plain tables on both storage paths and travels over MQTT; the
# telemetry store only records (and the gateway drills check it on each path), so this drill runs
# once, on plain PostgreSQL.
@pytest.mark.only_storage_path("postgresql")
@pytest.mark.timeout(400)
def test_provider_pushes_a_profile_to_two_gateways_and_rolls_back(
    tmp_path: Path, mosquitto: Mosquitto, pg_url: str
) -> None:
    procs: list[Any] = []
    try:
        _run(tmp_path, mosquitto, pg_url, procs)
    except BaseException:
        print(log_tails(tmp_path))
        raise
    finally:
        for item in reversed(procs):
            item.stop() if isinstance(item, Simulators) else stop(item)


def _run(tmp_path: Path, mosquitto: Mosquitto, pg_url: str, procs: list[Any]) -> None:
    scenario = generate_load_scenario(4, seed=11, kinds=KINDS, units_per_modbus_port=1)
    sims = Simulators(scenario, tmp_path).start()
    procs.append(sims)
    by_kind = {k: [e for e in sims.endpoints if e["kind"] == k] for k in KINDS}
    assert all(len(v) >= 2 for v in by_kind.values()), sims.endpoints
    # Each gateway: one machine of each kind.
    endpoints = {g: [by_kind[k][i] for k in KINDS] for i, g in enumerate(GATEWAYS)}
    sites = {g: _gateway_folder(tmp_path, g, endpoints[g], mosquitto.url) for g in GATEWAYS}
    changed_device = {g: endpoints[g][0]["id"] for g in GATEWAYS}  # the one using drill_<a>

    procs.append(spawn_ingest(pg_url, mosquitto.url, tmp_path / "ingest.log"))
    wait_until(lambda: ingest_is_subscribed(tmp_path / "ingest.log"), 60, 0.2, what="the ingest")
    _register(pg_url)
    gw_procs = {g: spawn_gateway(sites[g], tmp_path / f"{g}.log") for g in GATEWAYS}
    procs.extend(gw_procs.values())
    devices = {e["id"] for g in GATEWAYS for e in endpoints[g]}
    wait_until(
        lambda: {r.device for r in rows(pg_url, "t.ts > now() - interval '3 s'")} == devices,
        90, 1.0, what="rows of every device",
    )  # fmt: skip
    start_ms = int(time.time() * 1000)

    app = create_app(MonitoringSettings(db={"url": pg_url}))
    with TestClient(app) as api:
        token = _token(pg_url)
        headers = {"Authorization": f"Bearer {token}"}
        profile_a = f"drill_{KINDS[0]}.yaml"

        def upload(name: str, content: str, kind: str = "profile") -> Any:
            return api.post(
                "/api/config/providers/sp-rc/files",
                headers=headers,
                json={"name": name, "kind": kind, "content": content},
            )

        def assign(gateways: tuple[str, ...], files: dict[str, int]) -> list[int]:
            r = api.post(
                "/api/config/assignments",
                headers=headers,
                json={
                    "gateways": [{"enterprise": ENTERPRISE, "gateway": g} for g in gateways],
                    "files": files,
                },
            )
            assert r.status_code == 200, r.text
            return [a["revision"] for a in r.json()["assignments"]]

        def state(gateway: str) -> dict[str, Any]:
            r = api.get(f"/api/config/enterprises/{ENTERPRISE}/gateways/{gateway}", headers=headers)
            assert r.status_code == 200, r.text
            return dict(r.json())

        def report_of(gateway: str, revision: int) -> dict[str, Any] | None:
            return next((r for r in state(gateway)["reports"] if r["revision"] == revision), None)

        def wait_reports(revisions: dict[str, int], within_s: float) -> dict[str, dict[str, Any]]:
            found: dict[str, dict[str, Any]] = {}

            def all_in() -> bool:
                for g, rev in revisions.items():
                    got = report_of(g, rev)
                    if got is not None:
                        found[g] = got
                return len(found) == len(revisions)

            wait_until(all_in, within_s, 0.2, what=f"reports on {revisions}")
            return found

        # Revision 1: what the gateways run now, adopted from the cloud (every file uploaded).
        folder = {g: sites[g].parent for g in GATEWAYS}
        for name in (profile_a, f"drill_{KINDS[1]}.yaml"):
            assert upload(name, (folder[GATEWAYS[0]] / name).read_text()).status_code == 200
        for g in GATEWAYS:
            r = upload(f"site-{g}.yaml", sites[g].read_text(), "site")
            assert r.status_code == 200, r.text
        first = {}
        for g in GATEWAYS:
            files = {f"site-{g}.yaml": 1, profile_a: 1, f"drill_{KINDS[1]}.yaml": 1}
            [first[g]] = assign((g,), files)
        adopted = wait_reports(first, 30)
        assert all(r["status"] == "applied" for r in adopted.values()), adopted

        # Version 2 of drill_<a> (polled slower), for both gateways: only its devices restart.
        v1_text = (folder[GATEWAYS[0]] / profile_a).read_text()
        v2_text = v1_text.replace(f"interval_ms: {POLL_MS}", f"interval_ms: {POLL_MS + 100}")
        assert v2_text != v1_text
        assert upload(profile_a, v2_text).json()["version"] == 2
        assigned_at = time.monotonic()
        second = dict(zip(GATEWAYS, assign(GATEWAYS, {profile_a: 2}), strict=True))
        applied = wait_reports(second, APPLY_WITHIN_S)
        took_s = time.monotonic() - assigned_at
        for g in GATEWAYS:
            assert applied[g]["status"] == "applied", applied[g]
            assert applied[g]["restarted"] == [changed_device[g]], applied[g]
            assert state(g)["applied_revision"] == second[g]
        print(f"both gateways applied version 2 within {took_s:.1f} s of the assignment")

        # Version 3: valid on its own, but not the profile the sites name: both refuse it.
        v3_text = v2_text.replace(f"id: drill_{KINDS[0]}", f"id: drill_{KINDS[0]}_renamed")
        assert upload(profile_a, v3_text).json()["version"] == 3
        third = dict(zip(GATEWAYS, assign(GATEWAYS, {profile_a: 3}), strict=True))
        refused = wait_reports(third, APPLY_WITHIN_S)
        for g in GATEWAYS:
            assert refused[g]["status"] == "refused", refused[g]
            assert refused[g]["messages"], refused[g]
            assert any(f"drill_{KINDS[0]}" in m for m in refused[g]["messages"]), refused[g]
            # Named for the provider: files by name, no path local to the gateway.
            assert not any(str(tmp_path) in m for m in refused[g]["messages"]), refused[g]
            assert state(g)["applied_revision"] == second[g], "the old version keeps running"
            assert state(g)["last_report"]["messages"] == refused[g]["messages"]
        # The fleet console reads what the gateways reported: revisions apart, their messages.
        console = fleet(api, headers)
        for g in GATEWAYS:
            assert console[g]["config_assigned"] == third[g], console[g]
            assert console[g]["config_applied"] == second[g], console[g]
            refusal = {"revision": third[g], "messages": refused[g]["messages"]}
            assert console[g]["config_refusal"] == refusal, console[g]
            assert "config" in console[g]["problems"], console[g]
        _console_page_shows(pg_url, token, refused)

        # Rollback: assign version 1 again.
        fourth = dict(zip(GATEWAYS, assign(GATEWAYS, {profile_a: 1}), strict=True))
        rolled = wait_reports(fourth, APPLY_WITHIN_S)
        for g in GATEWAYS:
            assert rolled[g]["status"] == "applied" and rolled[g]["restarted"] == [
                changed_device[g]
            ]
        console = fleet(api, headers)
        for g in GATEWAYS:
            assert console[g]["config_assigned"] == console[g]["config_applied"] == fourth[g]
            assert console[g]["config_refusal"] is None, console[g]
            assert "config" not in console[g]["problems"], console[g]

        # A gateway stopped during an assignment applies it when it comes back.
        offline = GATEWAYS[1]
        stop(gw_procs[offline])
        fifth = dict(zip(GATEWAYS, assign(GATEWAYS, {profile_a: 2}), strict=True))
        wait_reports({GATEWAYS[0]: fifth[GATEWAYS[0]]}, APPLY_WITHIN_S)
        assert report_of(offline, fifth[offline]) is None
        restarted = spawn_gateway(sites[offline], tmp_path / f"{offline}-again.log")
        procs.append(restarted)
        back = wait_reports({offline: fifth[offline]}, 30)
        assert back[offline]["status"] == "applied", back[offline]
        # It started from its last good remote configuration (the rollback), not its local file.
        assert (
            "running the last good remote configuration"
            in (tmp_path / f"{offline}-again.log").read_text()
        )

        # The enterprise refuses the newest assignment of one gateway: the one before it (the
        # rollback) is in force again, is delivered again and applied, and the console agrees.
        kept = GATEWAYS[0]
        enterprise = {"Authorization": f"Bearer {_enterprise_token(pg_url)}"}
        r = api.post(
            f"/api/config/assignments/{fifth[kept]}/refuse",
            headers=enterprise,
            json={"reason": "not during the night shift"},
        )
        assert r.status_code == 200, r.text
        wait_until(
            lambda: state(kept)["applied_revision"] == fourth[kept], APPLY_WITHIN_S, 0.2,
            what="the assignment before the refused one applied again",
        )  # fmt: skip
        console = fleet(api, headers)[kept]
        assert console["config_assigned"] == console["config_applied"] == fourth[kept], console
        assert "config" not in console["problems"], console

    time.sleep(3)  # let the last reads arrive
    end_ms = int(time.time() * 1000)
    for p in (restarted, gw_procs[GATEWAYS[0]]):
        stop(p)
    truth = load_truth(sims.truth_file)
    stored = rows(pg_url)
    assert duplicates(pg_url) == []
    assert never_served(stored, truth) == []
    steady = [r for r in stored if r.device in {e["id"] for e in endpoints[GATEWAYS[0]]}]
    lasting = 3 * (POLL_MS + 100)
    missed = missed_changes(
        steady, truth, {"machine_state", "part_count", "energy_total"}, start_ms, end_ms - 2000,
        lasting,
    )  # fmt: skip
    missed = [m for m in missed if m[0] in {e["id"] for e in endpoints[GATEWAYS[0]]}]
    assert missed == [], missed[:10]
