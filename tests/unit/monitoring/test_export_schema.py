"""docs/export.schema.json is what the export models publish; regenerate it with
``python -m monitoring.api.export_doc > docs/export.schema.json`` after changing them."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from monitoring.api.export_doc import SCHEMA_VERSION, DailyExport, json_schema

PUBLISHED = Path(__file__).resolve().parents[3] / "docs" / "export.schema.json"


def test_published_schema_matches_the_models() -> None:
    published = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    assert published == json_schema(), (
        "docs/export.schema.json is stale: python -m monitoring.api.export_doc > docs/export.schema.json"
    )


def test_schema_version_is_documented_in_docs_export_md() -> None:
    doc = (PUBLISHED.parent / "export.md").read_text(encoding="utf-8")
    assert f"| {SCHEMA_VERSION} |" in doc, "docs/export.md's version table lacks this version"


def test_the_schema_refuses_a_document_without_its_version_or_with_a_bad_colour() -> None:
    document = json.loads(DailyExport(day="2025-06-10", timezone="Asia/Shanghai",
                                      generated_at="2025-06-11T00:00:00Z", enterprises=[]).to_bytes())  # fmt: skip
    jsonschema.validate(document, json_schema())
    del document["schema_version"]
    with pytest.raises(jsonschema.ValidationError, match="schema_version"):
        jsonschema.validate(document, json_schema())
