"""The profiles in docs/profiles.md validate, so the guide never teaches a broken example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.profile_cli import app
from gateway.profiles.loader import REPO_PROFILES

GUIDE = Path(__file__).resolve().parents[4] / "docs" / "profiles.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", GUIDE.read_text(encoding="utf-8"), re.S)
PROFILES = [b for b in BLOCKS if re.search(r"^id: ", b, re.M) and "protocol:" in b]


def test_the_guide_has_profile_examples() -> None:
    assert len(PROFILES) >= 2


@pytest.mark.parametrize(
    "text", PROFILES, ids=[re.search(r"^id: (\S+)", b, re.M).group(1) for b in PROFILES]
)  # type: ignore[union-attr]
def test_guide_profile_validates_strictly(tmp_path: Path, text: str) -> None:
    folder = tmp_path / "345"  # beside the schema, like a shipped profile
    folder.mkdir()
    path = folder / "example.yaml"
    path.write_text(
        text.replace("../profile.schema.json", str(REPO_PROFILES / "profile.schema.json"))
    )
    result = CliRunner().invoke(app, ["validate", "--strict", str(path)])
    assert result.exit_code == 0, result.output
