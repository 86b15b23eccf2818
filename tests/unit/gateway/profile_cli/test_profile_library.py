"""The shipped profile library validates cleanly, says what it models, and is editor-ready."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from gateway.profile_cli import app
from gateway.profiles.loader import REPO_PROFILES, ProfileResolver

YAML_FILES = sorted(REPO_PROFILES.rglob("*.yaml"))
PROFILE_FILES = [p for p in YAML_FILES if p.relative_to(REPO_PROFILES).parts[0] != "fleets"]
CONCRETE = [p for p in PROFILE_FILES if p.relative_to(REPO_PROFILES).parts[0] != "_base"]
SEGMENT_FOLDERS = {"345", "367", "common"}


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO_PROFILES)) for p in paths]


def test_the_library_has_profiles_for_both_segments_and_both_protocols() -> None:
    profiles = [ProfileResolver().load(str(p)).profile for p in CONCRETE]
    assert {p.segment for p in profiles} == SEGMENT_FOLDERS
    for segment in ("345", "367"):
        protocols = {p.protocol for p in profiles if p.segment == segment}
        assert protocols == {"modbus", "opcua"}, (segment, protocols)


def test_whole_library_validates_strictly_through_the_cli() -> None:
    result = CliRunner().invoke(app, ["validate", "--strict", str(REPO_PROFILES)])
    assert result.exit_code == 0, result.output
    assert (
        result.output.splitlines()[-1] == f"{len(YAML_FILES)} files checked: 0 errors, 0 warnings"
    )


@pytest.mark.parametrize("path", PROFILE_FILES, ids=_ids(PROFILE_FILES))
def test_each_profile_validates_cleanly(path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", "--strict", str(path)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("path", CONCRETE, ids=_ids(CONCRETE))
def test_each_profile_says_what_real_equipment_it_models(path: Path) -> None:
    profile = ProfileResolver().load(str(path)).profile
    folder = path.relative_to(REPO_PROFILES).parts[0]
    assert folder in SEGMENT_FOLDERS and profile.segment == folder
    assert path.stem == profile.id, "file name and id differ: sites and the demo use the id"
    assert len(profile.models) > 40 and len(profile.description) > 40
    header = path.read_text(encoding="utf-8").splitlines()
    comments = [line for line in header[1:] if line.startswith("#")]
    assert len(comments) >= 4 and "Models:" in "\n".join(comments), "header comment missing"


@pytest.mark.parametrize("path", PROFILE_FILES, ids=_ids(PROFILE_FILES))
def test_each_profile_points_editors_at_the_schema_and_satisfies_it(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    schema_path = (path.parent / first.removeprefix(prefix)).resolve()
    assert schema_path == REPO_PROFILES / "profile.schema.json"
    schema = json.loads(schema_path.read_text(encoding="utf-8"))
    document = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
    errors = [e.message for e in jsonschema.Draft7Validator(schema).iter_errors(document)]
    assert not errors, errors


def test_example_fleet_site_configures_every_csv_row() -> None:
    from gateway.profiles.loader import load_site

    site = load_site(REPO_PROFILES / "fleets" / "example_site.yaml")
    devices = {d.id: d for d in site.devices}
    presses = [d for d in devices.values() if d.profile.id == "servo_press"]
    meters = [d for d in devices.values() if d.profile.id == "energy_meter"]
    assert len(presses) == 12 and len(meters) == 8 and len(devices) == 23
    assert devices["press-010"].enterprise == "nb-autoparts-05"  # the row's enterprise wins
    assert devices["press-001"].enterprise == "nb-autoparts-02"
    assert devices["press-001"].line == "stamping-1"
    assert {m.endpoint for m in meters} == {"rtu+tcp://10.3.9.50:4001"}
    assert sorted(m.unit_id for m in meters) == list(range(1, 9))
    assert devices["meter-03"].source.endswith("energy_meters.csv:4")


def test_every_simulated_kind_has_a_shipped_profile_of_that_id() -> None:
    """The demo maps each simulated machine to the profile whose id is its kind; a kind that can
    also serve a companion spec's address space has a profile ``<kind>_<spec>`` for that form."""
    from simulators.machines import KINDS

    profiles = [ProfileResolver().load(str(p)).profile for p in CONCRETE]
    companion_ids = {
        f"{name}_{kind.companion.name}": name for name, kind in KINDS.items() if kind.companion
    }
    ids = {p.id for p in profiles}
    assert ids == set(KINDS) | set(companion_ids), (
        sorted((set(KINDS) | set(companion_ids)) - ids),
        sorted(ids - set(KINDS) - set(companion_ids)),
    )
    for profile in profiles:
        kind = companion_ids.get(profile.id, profile.id)
        assert profile.protocol == KINDS[kind].protocol, profile.id
