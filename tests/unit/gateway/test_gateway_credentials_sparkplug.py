"""``credentials add-sparkplug`` and the reader's Sparkplug lines: written once, bad ids refused."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from gateway.cli import app
from gateway.credentials import READER_CONFIG, READER_SPARKPLUG, ensure_acl


def _add(tmp_path: Path, group: str, node: str) -> tuple[int, str]:
    opts = ["--password-file", str(tmp_path / "p"), "--acl-file", str(tmp_path / "acl")]
    result = CliRunner().invoke(
        app,
        ["credentials", "add-sparkplug", "--group", group, "--node", node, *opts,
         "--secret-out", str(tmp_path / "secret")],
    )  # fmt: skip
    # typer draws errors in a box: drop its borders and line breaks to read the message
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


def test_an_edge_node_gets_one_block_of_its_own_topics(tmp_path: Path) -> None:
    assert _add(tmp_path, "plant-7", "neuron-1")[0] == 0
    assert _add(tmp_path, "plant-7", "neuron-1")[0] == 0  # re-keyed, block not repeated
    text = (tmp_path / "acl").read_text()
    assert text.count("user sparkplug@plant-7/neuron-1\n") == 1
    block = text.split("user sparkplug@plant-7/neuron-1\n", 1)[1].split("\n\n", 1)[0]
    writes = [line.split()[-1] for line in block.splitlines() if line.startswith("topic write")]
    assert writes == [
        "spBv1.0/plant-7/NBIRTH/neuron-1",
        "spBv1.0/plant-7/NDATA/neuron-1",
        "spBv1.0/plant-7/NDEATH/neuron-1",
        "spBv1.0/plant-7/DBIRTH/neuron-1/+",
        "spBv1.0/plant-7/DDATA/neuron-1/+",
        "spBv1.0/plant-7/DDEATH/neuron-1/+",
    ]
    assert (tmp_path / "p").read_text().startswith("sparkplug@plant-7/neuron-1:$7$")


def test_ids_that_would_widen_the_acl_are_refused(tmp_path: Path) -> None:
    for group, node in (("plant 7", "n"), ("g", "n/+"), ("g", "#")):
        code, output = _add(tmp_path, group, node)
        assert code != 0 and "cannot hold spaces" in output
    assert not (tmp_path / "acl").exists()


def test_an_older_reader_block_gets_the_config_and_sparkplug_lines_in_place(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    acl.write_text("user ingest@shulian\ntopic read shulian/v1/#\n\nuser other@x\ntopic read a\n")
    ensure_acl(acl, readers=["ingest@shulian"])
    ensure_acl(acl, readers=["ingest@shulian"])
    text = acl.read_text()
    reader = text.split("user ingest@shulian\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert reader == ["topic read shulian/v1/#", READER_CONFIG, *READER_SPARKPLUG]
    assert "user other@x\ntopic read a" in text
