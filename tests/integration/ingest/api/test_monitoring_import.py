"""CSV import through the API: a partial file changes only the columns it has.

The registry comes from monitoring_data.seed_registry: lathe-1 of ent-a is named LATHE-1, uses
cnc_lathe.yaml on line L1 with a rated cycle of 30 s.
"""

from __future__ import annotations

from typing import Any

import psycopg
from fastapi.testclient import TestClient
from monitoring_data import issue_tokens


def _post(client: TestClient, url: str, path: str, body: str) -> dict[str, Any]:
    token = issue_tokens(url)["bureau"]
    response = client.post(
        path,
        content=body.encode(),
        headers={"Authorization": f"Bearer {token}", "content-type": "text/csv"},
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def _device(url: str, device: str) -> tuple[Any, ...]:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            """SELECT name, gateway_id, profile, machine_kind, line, rated_cycle_s FROM devices
               WHERE enterprise_id = 'ent-a' AND device_id = %s""",
            (device,),
        ).fetchone()
    assert row is not None
    return tuple(row)


def test_device_import_keeps_stored_values_of_columns_the_file_omits(
    client: TestClient, monitoring_db: str
) -> None:
    body = "enterprise,device,machine_kind\nent-a,lathe-1,cnc_mill\nent-a,lathe-9,cnc_lathe\n"
    result = _post(client, monitoring_db, "/api/import/devices", body)
    assert (result["created"], result["updated"]) == (1, 1)
    # name, profile, line and rated cycle were not in the file: unchanged; machine_kind was.
    assert _device(monitoring_db, "lathe-1") == (
        "LATHE-1",
        "gw-ent-a",
        "cnc_lathe.yaml",
        "cnc_mill",
        "L1",
        30.0,
    )
    # A new device gets the defaults for what the file does not say.
    assert _device(monitoring_db, "lathe-9") == ("", None, "", "cnc_lathe", "", None)


def test_device_import_overwrites_columns_the_file_has_even_when_blank(
    client: TestClient, monitoring_db: str
) -> None:
    body = "enterprise,device,name,line,rated_cycle_s\nent-a,lathe-1,车床一号,,\n"
    _post(client, monitoring_db, "/api/import/devices", body)
    assert _device(monitoring_db, "lathe-1") == (
        "车床一号",
        "gw-ent-a",
        "cnc_lathe.yaml",
        "cnc_lathe",
        "",
        None,
    )


def test_enterprise_import_keeps_stored_flags_the_file_omits(
    client: TestClient, monitoring_db: str
) -> None:
    body = "id,name,district,segment\nent-a,大连甲轴承股份有限公司,金州区,345\n"
    _post(client, monitoring_db, "/api/import/enterprises", body)
    with psycopg.connect(monitoring_db) as conn:
        row = conn.execute(
            """SELECT name, district_id, above_designated_size, specialized,
                      service_provider_id FROM enterprises WHERE id = 'ent-a'"""
        ).fetchone()
    assert row == ("大连甲轴承股份有限公司", "210213", True, True, "sp-1")
