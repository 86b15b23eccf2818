"""`shulian profile schema` gives editors a schema that accepts what the loader accepts, and is committed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from gateway.profile_cli import app
from gateway.profiles.loader import REPO_PROFILES

COMMITTED = REPO_PROFILES / "profile.schema.json"


def _schema_output() -> str:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    return result.output


def _validator() -> jsonschema.Draft7Validator:
    schema = json.loads(_schema_output())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_committed_schema_is_current() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == _schema_output(), (
        "device_profiles/profile.schema.json is stale: run "
        "`shulian profile schema -o device_profiles/profile.schema.json`"
    )


def test_schema_option_writes_a_file(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    result = CliRunner().invoke(app, ["schema", "-o", str(out)])
    assert result.exit_code == 0
    assert out.read_text(encoding="utf-8") == _schema_output()


def test_schema_documents_fields_for_editor_hovers() -> None:
    schema = json.loads(_schema_output())
    address = schema["$defs"]["ModbusSignal"]["properties"]["address"]
    assert "Zero-based" in address["description"]


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    (
        "complete_modbus",
        {
            "id": "m",
            "protocol": "modbus",
            "groups": [{"name": "fast", "interval_ms": 500}],
            "signals": [{"name": "spindle_speed", "group": "fast", "address": 0, "unit": "rpm"}],
        },
    ),
    (
        "qualified_names",
        {
            "id": "m",
            "protocol": "modbus",
            "signals": [
                {"name": "voltage.l12", "address": 0},
                {"name": "furnace_zone_temperature.z3", "address": 1},
            ],
        },
    ),
    (
        "complete_opcua",
        {
            "id": "o",
            "protocol": "opcua",
            "signals": [{"name": "spindle_speed", "node_id": "ns=2;i=5"}],
        },
    ),
    (
        "child_overriding_one_field",
        {
            "id": "c",
            "extends": "gear_hobber",
            "protocol": "modbus",
            "signals": [
                {"name": "spindle_speed", "deadband": 5},
                {"name": "part_count", "remove": True},
            ],
        },
    ),
    (
        "abstract_base_without_protocol",
        {"id": "b", "abstract": True, "signals": [{"name": "machine_state", "group": "fast"}]},
    ),
]
REJECTED: list[tuple[str, dict[str, Any]]] = [
    (
        "misspelt_signal_field",
        {"id": "m", "protocol": "modbus", "signals": [{"name": "spindle_speed", "adress": 0}]},
    ),
    ("complete_profile_without_protocol", {"id": "m", "signals": []}),
    (
        "unknown_word_order",
        {
            "id": "m",
            "protocol": "modbus",
            "signals": [{"name": "part_count", "address": 0, "word_order": "CADB"}],
        },
    ),
    (
        "unknown_state",
        {
            "id": "m",
            "protocol": "modbus",
            "signals": [{"name": "machine_state", "address": 0, "states": {"1": "runing"}}],
        },
    ),
    ("unknown_protocol", {"id": "m", "protocol": "profinet", "signals": []}),
    (
        "signal_name_not_in_the_vocabulary",
        {"id": "m", "protocol": "modbus", "signals": [{"name": "spindel_speed", "address": 0}]},
    ),
    (
        "qualifier_on_an_unknown_name",
        {"id": "m", "protocol": "modbus", "signals": [{"name": "voltge.l1", "address": 0}]},
    ),
]


@pytest.mark.parametrize(("case", "document"), ACCEPTED, ids=[c for c, _ in ACCEPTED])
def test_schema_accepts_what_the_loader_accepts(case: str, document: dict[str, Any]) -> None:
    errors = list(_validator().iter_errors(document))
    assert not errors, [e.message for e in errors]


@pytest.mark.parametrize(("case", "document"), REJECTED, ids=[c for c, _ in REJECTED])
def test_schema_rejects_mistakes_editors_should_flag(case: str, document: dict[str, Any]) -> None:
    assert list(_validator().iter_errors(document))
