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


def test_device_import_keys_gateways_per_enterprise(client: TestClient, monitoring_db: str) -> None:
    """Both enterprises have a gw-01 (gateway ids are unique per enterprise, issue 10)."""
    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO gateways (id, enterprise_id) VALUES ('gw-01', 'ent-a'), ('gw-01', 'ent-b')"
        )
    body = "enterprise,device,gateway\nent-a,lathe-9,gw-01\nent-b,press-9,gw-01\n"
    result = _post(client, monitoring_db, "/api/import/devices", body)
    assert (result["created"], result["updated"]) == (2, 0)
    with psycopg.connect(monitoring_db) as conn:
        assert conn.execute(
            "SELECT enterprise_id, device_id, gateway_id FROM devices WHERE gateway_id = 'gw-01' "
            "ORDER BY 1"
        ).fetchall() == [("ent-a", "lathe-9", "gw-01"), ("ent-b", "press-9", "gw-01")]

    tokens = issue_tokens(monitoring_db)
    response = client.post(
        "/api/import/devices",
        content=b"enterprise,device,gateway\nent-c,hobber-9,gw-ent-b\n",
        headers={"Authorization": f"Bearer {tokens['bureau']}", "content-type": "text/csv"},
    )
    assert response.status_code == 422, response.text
    assert "enterprise 'ent-c' has no gateway 'gw-ent-b'" in response.json()["message"]

    response = client.get(
        "/api/enterprises/ent-b/gateways", headers={"Authorization": f"Bearer {tokens['ent-b']}"}
    )
    assert response.status_code == 200, response.text
    counts = {g["id"]: g["devices"] for g in response.json()["gateways"]}
    assert counts == {"gw-01": 1, "gw-ent-b": 1}


def test_a_credit_code_with_a_wrong_check_character_is_refused_naming_its_row(
    client: TestClient, monitoring_db: str
) -> None:
    """Line 3's code is Huawei's with its last character mistyped (6 for 8): that row alone is
    refused, named by file, line and column; the good rows around it are written."""
    body = (
        "id,name,district,segment,credit_code\n"
        "ent-a,大连甲轴承有限公司,甘井子区,345,91110000600037341L\n"
        "ent-b,大连乙汽车部件有限公司,金州区,367,914403001922038218\n"
        "ent-d,大连丁齿轮有限公司,金州区,345,9144 0300 7152 6726xg\n"
    )
    token = issue_tokens(monitoring_db)["bureau"]
    response = client.post(
        "/api/import/enterprises?filename=pilot.csv",
        content=body.encode(),
        headers={"Authorization": f"Bearer {token}", "content-type": "text/csv"},
    )
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["rejected"] == [
        "pilot.csv:3: credit_code: '914403001922038218' has the check character '8' but its "
        "first 17 characters give '6': a character is mistyped (Copy the 18 characters from "
        "the business licence (营业执照).)"
    ]
    assert (answer["created"], answer["updated"]) == (1, 1)
    assert "pilot.csv:3: credit_code" in answer["message"]
    with psycopg.connect(monitoring_db) as conn:
        codes = dict(conn.execute("SELECT id, credit_code FROM enterprises").fetchall())
    assert codes == {"ent-a": "91110000600037341L", "ent-b": None, "ent-c": None,
                     "ent-d": "9144030071526726XG"}  # fmt: skip

    # The same code for another enterprise is refused too; the database would refuse it anyway.
    response = client.post(
        "/api/import/enterprises",
        content="id,name,district,segment,credit_code\nent-c,丙,甘井子区,345,91110000600037341L\n".encode(),
        headers={"Authorization": f"Bearer {token}", "content-type": "text/csv"},
    )
    assert response.status_code == 422, response.text
    assert response.json()["rejected"] == [
        "enterprises.csv:2: credit_code: 91110000600037341L is already the code of 'ent-a'"
    ]
