"""The credentials tool: Mosquitto-compatible hashes, idempotent password-file and ACL edits."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gateway.cli import app
from gateway.credentials import (
    GATEWAY_PATTERN,
    ensure_acl,
    hash_password,
    remove_password_line,
    set_password_line,
    verify_password,
)


def test_hash_has_mosquitto_format_and_verifies() -> None:
    hashed = hash_password("s3cret")
    assert hashed.startswith("$7$101$")
    assert verify_password("s3cret", hashed) and not verify_password("other", hashed)


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
def test_matches_what_mosquitto_passwd_writes(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "u", "pw"], check=True)
    assert verify_password("pw", path.read_text().strip().split(":", 1)[1])


def test_password_lines_are_added_replaced_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "passwd"
    assert set_password_line(path, "ent-a/gw-1", "one") is False
    assert set_password_line(path, "ent-b/gw-1", "two") is False
    assert set_password_line(path, "ent-a/gw-1", "three") is True
    lines = dict(line.split(":", 1) for line in path.read_text().splitlines())
    assert set(lines) == {"ent-a/gw-1", "ent-b/gw-1"}
    assert verify_password("three", lines["ent-a/gw-1"])
    assert oct(path.stat().st_mode & 0o777) == "0o640"
    assert remove_password_line(path, "ent-a/gw-1") and not remove_password_line(path, "nobody")
    assert path.read_text().startswith("ent-b/gw-1:")


def test_acl_gets_the_pattern_once_and_reader_blocks(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    ensure_acl(acl)
    ensure_acl(acl, readers=["ingest@shulian"])
    ensure_acl(acl, readers=["ingest@shulian"])
    text = acl.read_text()
    assert text.count(GATEWAY_PATTERN) == 1
    assert text.count("user ingest@shulian\ntopic read shulian/v1/#") == 1


def test_cli_refuses_bad_ids_and_reader_names(tmp_path: Path) -> None:
    opts = ["--password-file", str(tmp_path / "p"), "--acl-file", str(tmp_path / "a")]
    bad = CliRunner().invoke(
        app, ["credentials", "add", "--enterprise", "ent/x", "--gateway", "gw", *opts]
    )
    assert bad.exit_code != 0 and "not a valid id" in bad.output
    bad = CliRunner().invoke(app, ["credentials", "add-reader", "--username", "ingest", *opts])
    assert bad.exit_code != 0 and "@" in bad.output


def test_cli_reads_password_from_stdin_and_never_prints_it(tmp_path: Path) -> None:
    opts = ["--password-file", str(tmp_path / "p"), "--acl-file", str(tmp_path / "a")]
    result = CliRunner().invoke(
        app,
        ["credentials", "add", "--enterprise", "e1", "--gateway", "g1", "--password-stdin", *opts],
        input="typed-secret\n",
    )
    assert result.exit_code == 0, result.output
    assert "typed-secret" not in result.output
    user, hashed = (tmp_path / "p").read_text().strip().split(":", 1)
    assert user == "e1/g1" and verify_password("typed-secret", hashed)
