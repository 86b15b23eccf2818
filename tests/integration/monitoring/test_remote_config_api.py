"""Remote configuration in the cloud: validated immutable versions, assignments and who may do what.

The provider sp-1 serves ent-a (gateway gw-ent-a) only; ent-b has no provider. Uploads are checked
by ``shulian profile validate`` itself, so a refusal carries its file:line: field messages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from monitoring_data import issue_tokens

PROFILE = (Path(__file__).parents[2] / "data/profiles/servo_press_cabinet.yaml").read_text()
BROKEN = PROFILE.replace("    scale: 0.01\n", "    scale: fast\n", 1)


def _h(tokens: dict[str, str], who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[who]}"}


@pytest.fixture()
def tokens(monitoring_db: str) -> dict[str, str]:
    return issue_tokens(monitoring_db)


def _upload(client: TestClient, tokens: dict[str, str], who: str, content: str) -> Any:
    return client.post(
        "/api/config/providers/sp-1/files",
        headers=_h(tokens, who),
        json={"name": "servo_press_cabinet.yaml", "kind": "profile", "content": content},
    )


def test_versions_are_numbered_validated_and_immutable(
    client: TestClient, tokens: dict[str, str], monitoring_db: str
) -> None:
    first = _upload(client, tokens, "provider", PROFILE)
    assert first.status_code == 200, first.text
    second = _upload(client, tokens, "admin", PROFILE + "\n# v2\n")
    assert (first.json()["version"], second.json()["version"]) == (1, 2)
    assert second.json()["uploaded_by_role"] == "admin"

    bad = _upload(client, tokens, "provider", BROKEN)
    assert bad.status_code == 422
    message = bad.json()["message"]
    assert "servo_press_cabinet.yaml:" in message and "scale" in message, message
    assert "shulian-upload-" not in message  # the temporary folder is not shown
    listed = client.get("/api/config/providers/sp-1/files", headers=_h(tokens, "provider"))
    assert [v["version"] for v in listed.json()["versions"]] == [1, 2]  # the bad one not stored

    with psycopg.connect(monitoring_db, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.RaiseException, match="immutable"):
            conn.execute("UPDATE config_versions SET content = 'x'")


def test_assignments_audit_and_refusal(client: TestClient, tokens: dict[str, str]) -> None:
    _upload(client, tokens, "provider", PROFILE)
    _upload(client, tokens, "provider", PROFILE + "\n# v2\n")
    body = {
        "gateways": [{"enterprise": "ent-a", "gateway": "gw-ent-a"}],
        "files": {"servo_press_cabinet.yaml": 1},
    }
    r1 = client.post("/api/config/assignments", headers=_h(tokens, "provider"), json=body)
    assert r1.status_code == 200, r1.text
    body["files"] = {"servo_press_cabinet.yaml": 2}
    r2 = client.post("/api/config/assignments", headers=_h(tokens, "provider"), json=body)
    rev2 = r2.json()["assignments"][0]["revision"]
    state = client.get(
        "/api/config/enterprises/ent-a/gateways/gw-ent-a", headers=_h(tokens, "ent-a")
    ).json()
    assert state["assigned"]["revision"] == rev2
    assert state["assigned"]["files"][0]["version"] == 2

    # The enterprise refuses its provider's newest assignment: the one before is in force again.
    refused = client.post(
        f"/api/config/assignments/{rev2}/refuse",
        headers=_h(tokens, "ent-a"),
        json={"reason": "not during the night shift"},
    )
    assert refused.status_code == 200, refused.text
    state = client.get(
        "/api/config/enterprises/ent-a/gateways/gw-ent-a", headers=_h(tokens, "provider")
    ).json()
    assert state["assigned"]["files"][0]["version"] == 1
    audit = client.get("/api/config/audit", headers=_h(tokens, "provider")).json()["assignments"]
    assert [a["refusal_reason"] for a in audit] == ["not during the night shift", ""]
    assert client.get("/api/config/audit", headers=_h(tokens, "ent-a")).json() == {
        "assignments": audit
    }


ACCESS = [
    # (method, path, body, {caller: status})
    (
        "POST",
        "/api/config/providers/sp-1/files",
        {"name": "p.yaml", "kind": "profile", "content": "x"},
        {"bureau": 404, "ent-a": 404, "ent-b": 404},
    ),
    ("GET", "/api/config/providers/sp-1/files", None, {"bureau": 404, "ent-a": 404, "ent-b": 404}),
    (
        "POST",
        "/api/config/assignments",
        {
            "gateways": [{"enterprise": "ent-b", "gateway": "gw-ent-b"}],
            "files": {"servo_press_cabinet.yaml": 1},
        },
        {"provider": 404, "bureau": 404, "ent-a": 404, "ent-b": 403, "admin": 422},
    ),
    (
        "POST",
        "/api/config/assignments",
        {
            "gateways": [{"enterprise": "ent-a", "gateway": "gw-ent-a"}],
            "files": {"servo_press_cabinet.yaml": 1},
        },
        {"bureau": 404, "ent-a": 403, "ent-b": 404},
    ),
    (
        "GET",
        "/api/config/enterprises/ent-b/gateways/gw-ent-b",
        None,
        {"provider": 404, "bureau": 404, "ent-a": 404},
    ),
    (
        "GET",
        "/api/config/enterprises/ent-a/gateways/gw-ent-a",
        None,
        {"bureau": 404, "ent-b": 404, "provider": 200},
    ),
]


@pytest.mark.parametrize(("method", "path", "body", "table"), ACCESS)
def test_who_may_do_what(
    client: TestClient,
    tokens: dict[str, str],
    method: str,
    path: str,
    body: Any,
    table: dict[str, int],
) -> None:
    for who, expected in table.items():
        response = client.request(method, path, headers=_h(tokens, who), json=body)
        assert response.status_code == expected, (who, response.text)


def test_bureau_sees_assignments_only_when_granted(
    client: TestClient, tokens: dict[str, str]
) -> None:
    _upload(client, tokens, "provider", PROFILE)
    client.post(
        "/api/config/assignments",
        headers=_h(tokens, "provider"),
        json={
            "gateways": [{"enterprise": "ent-a", "gateway": "gw-ent-a"}],
            "files": {"servo_press_cabinet.yaml": 1},
        },
    )
    assert client.get("/api/config/audit", headers=_h(tokens, "bureau")).json() == {
        "assignments": []
    }
    assert client.put(
        "/api/enterprises/ent-a/grants/bureau", headers=_h(tokens, "ent-a")
    ).is_success
    assert (
        len(client.get("/api/config/audit", headers=_h(tokens, "bureau")).json()["assignments"])
        == 1
    )
    assert (
        client.get(
            "/api/config/enterprises/ent-a/gateways/gw-ent-a", headers=_h(tokens, "bureau")
        ).status_code
        == 200
    )
    # The bureau still cannot refuse or assign.
    assert client.post(
        "/api/config/assignments/1/refuse", headers=_h(tokens, "bureau"), json={}
    ).status_code in (403, 404)


def test_delivery_publishes_what_is_in_force_and_clears_a_refused_one(
    client: TestClient, tokens: dict[str, str], monitoring_db: str
) -> None:
    """ConfigDelivery against the database (the broker side is in the e2e test): a new
    assignment is published once, as a bundle whose hashes check; refusing the only assignment
    publishes an empty retained message, which clears the topic."""
    from psycopg_pool import ConnectionPool

    from ingest.config_delivery import ConfigDelivery
    from wire.payloads import ConfigBundle, bundle_hash

    _upload(client, tokens, "provider", PROFILE)
    body = {
        "gateways": [{"enterprise": "ent-a", "gateway": "gw-ent-a"}],
        "files": {"servo_press_cabinet.yaml": 1},
    }
    revision = client.post("/api/config/assignments", headers=_h(tokens, "provider"), json=body)
    rev = revision.json()["assignments"][0]["revision"]
    sent: list[tuple[str, bytes]] = []
    with ConnectionPool(monitoring_db, min_size=1, max_size=2) as pool:
        delivery = ConfigDelivery(pool, lambda t, p: sent.append((t, p)))
        assert delivery.deliver_pending() == 1
        assert delivery.deliver_pending() == 0  # published once
        [(topic, payload)] = sent
        assert topic == "shulian/v1/ent-a/gw-ent-a/config"
        bundle = ConfigBundle.model_validate_json(payload)
        assert bundle.revision == rev and bundle.sha256 == bundle_hash(bundle.files)
        assert bundle.files[0].content == PROFILE
        client.post(f"/api/config/assignments/{rev}/refuse", headers=_h(tokens, "ent-a"), json={})
        assert delivery.deliver_pending() == 1
        assert sent[-1] == (topic, b"")
        assert delivery.deliver_pending() == 0
    state = client.get(
        "/api/config/enterprises/ent-a/gateways/gw-ent-a", headers=_h(tokens, "ent-a")
    ).json()
    assert state["assigned"] is None and state["delivered"]["revision"] is None
