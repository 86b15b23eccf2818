"""`{device}` in a node id becomes each device's id, so one profile serves a multi-machine server."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gateway.profile_cli import app
from gateway.profiles.loader import load_site

PROFILE = """\
id: line_grinder
protocol: opcua
signals:
  - name: spindle_speed
    node_id: nsu=urn:line-server;s={device}.Spindle.Speed
  - name: machine_state
    browse_path: 0:Objects/2:{device}/2:State
    states: {1: running, 0: idle}
"""


def test_each_device_gets_its_own_node_ids(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text(PROFILE)
    site = tmp_path / "site.yaml"
    site.write_text(
        "gateway: {id: gw-1, enterprise: ent-1}\ndevices:\n"
        "  - {id: grinder-01, profile: g.yaml, endpoint: 'opc.tcp://10.0.0.1:4840'}\n"
        "  - {id: grinder-02, profile: g.yaml, endpoint: 'opc.tcp://10.0.0.1:4840'}\n"
    )
    devices = {d.id: d for d in load_site(site).devices}
    first = devices["grinder-01"].profile.signals
    second = devices["grinder-02"].profile.signals
    assert first[0].node_id == "nsu=urn:line-server;s=grinder-01.Spindle.Speed"  # type: ignore[attr-defined]
    assert second[0].node_id == "nsu=urn:line-server;s=grinder-02.Spindle.Speed"  # type: ignore[attr-defined]
    assert second[1].browse_path == "0:Objects/2:grinder-02/2:State"  # type: ignore[attr-defined]


def test_profile_with_placeholder_validates_on_its_own(tmp_path: Path) -> None:
    path = tmp_path / "g.yaml"
    path.write_text(PROFILE)
    result = CliRunner().invoke(app, ["validate", "--strict", str(path)])
    assert result.exit_code == 0, result.output
