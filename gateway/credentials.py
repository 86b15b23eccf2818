"""``shulian gateway credentials``: add gateways and readers to a Mosquitto password file and ACL.

A gateway's username is ``<enterprise>/<gateway>``; the shipped ACL (deploy/mosquitto/acl) has
``pattern write shulian/v1/%u/#``, so that login can publish only below its own subtree, and adding
a gateway needs only its password line. Readers (the ingest) get ``user``/``topic read`` blocks.

A Sparkplug B edge node (a Neuron, an Ignition Edge, or our gateway's Sparkplug output) logs in as
``sparkplug@<group>/<node>``. Its group and node are not adjacent in Sparkplug topics
(``spBv1.0/<group>/NDATA/<node>``), which Mosquitto's ``%u`` patterns cannot express, so it gets
its own ``user`` block: write only its own births, data and deaths, read only its own commands and
the hosts' STATE. The '@' keeps the gateway pattern from giving it any valid shulian topic.

Passwords are hashed here in Mosquitto's own format (``$7$``: PBKDF2-SHA512, 101 iterations, the
``mosquitto_passwd`` default) rather than by calling ``mosquitto_passwd -b``, which would put the
password on a command line that any local user can read in the process list. Mosquitto reads the
files at start and on SIGHUP (``systemctl reload mosquitto``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Annotated

import typer

from wire.topics import ID_PATTERN, NAMESPACE

app = typer.Typer(
    help="Manage broker credentials: Mosquitto password file and ACL entries.",
    no_args_is_help=True,
)

ITERATIONS = 101
SALT_BYTES = 12
ID_RE = re.compile(rf"^{ID_PATTERN}$")
GATEWAY_PATTERN = f"pattern write {NAMESPACE}/%u/#"
GATEWAY_CONFIG_PATTERN = f"pattern read {NAMESPACE}/%u/config"
"""A gateway reads its own remote configuration topic and no other (docs/remote-config.md)."""
READ_ALL = f"topic read {NAMESPACE}/#"
READER_CONFIG = f"topic write {NAMESPACE}/+/+/config"
"""A reader (the ingest) publishes each gateway's assigned configuration, retained."""
SPB = "spBv1.0"
READER_SPARKPLUG = (
    f"topic read {SPB}/#",
    f"topic write {SPB}/+/NCMD/+",
    f"topic write {SPB}/STATE/+",
)
"""A reader (the ingest as Sparkplug host) reads every edge node, may ask any for a rebirth, and
publishes its host STATE (``sparkplug.host_id``); edge nodes cannot write STATE."""


def sparkplug_username(group: str, node: str) -> str:
    for value, what in ((group, "group"), (node, "node")):
        if not ID_RE.match(value):
            raise typer.BadParameter(
                f"{what} {value!r}: use 1-64 letters, digits, '_', '.', '-' (the broker's ACL "
                "file cannot hold spaces, and '/', '+', '#' are topic syntax)"
            )
    return f"sparkplug@{group}/{node}"


def sparkplug_block(group: str, node: str) -> str:
    """The ACL block confining one edge node's login to its own Sparkplug topics."""
    lines = [f"user {sparkplug_username(group, node)}"]
    lines += [f"topic write {SPB}/{group}/{kind}/{node}" for kind in ("NBIRTH", "NDATA", "NDEATH")]
    lines += [
        f"topic write {SPB}/{group}/{kind}/{node}/+" for kind in ("DBIRTH", "DDATA", "DDEATH")
    ]
    lines += [
        f"topic read {SPB}/{group}/NCMD/{node}",
        f"topic read {SPB}/{group}/DCMD/{node}/+",
        f"topic read {SPB}/STATE/+",
    ]
    return "\n".join(lines) + "\n"


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    """Mosquitto 2.x password-file hash: ``$7$<iterations>$<b64 salt>$<b64 PBKDF2-SHA512>``."""
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    b64 = base64.b64encode
    return f"$7${iterations}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """True if ``password`` matches a ``$7$`` entry (used by tests and ``check``)."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    expected = hash_password(password, salt=base64.b64decode(salt), iterations=int(iterations))
    return secrets.compare_digest(expected.split("$")[-1], digest)


def gateway_username(enterprise: str, gateway: str) -> str:
    for value, what in ((enterprise, "enterprise"), (gateway, "gateway")):
        if not ID_RE.match(value):
            raise typer.BadParameter(
                f"{what} {value!r} is not a valid id (1-64 letters, digits, '_', '.', '-')"
            )
    return f"{enterprise}/{gateway}"


def set_password_line(password_file: Path, username: str, password: str) -> bool:
    """Add or replace ``username``'s line; returns True if it replaced one. Written atomically."""
    lines = password_file.read_text().splitlines() if password_file.exists() else []
    entry = f"{username}:{hash_password(password)}"
    replaced = False
    out = []
    for line in lines:
        if line.split(":", 1)[0] == username:
            out.append(entry)
            replaced = True
        else:
            out.append(line)
    if not replaced:
        out.append(entry)
    _write_private(password_file, "\n".join(out) + "\n")
    return replaced


def remove_password_line(password_file: Path, username: str) -> bool:
    if not password_file.exists():
        return False
    lines = password_file.read_text().splitlines()
    kept = [line for line in lines if line.split(":", 1)[0] != username]
    _write_private(password_file, "\n".join(kept) + ("\n" if kept else ""))
    return len(kept) != len(lines)


def ensure_acl(acl_file: Path, readers: list[str] | None = None) -> None:
    """Make sure the ACL has the gateway pattern, and a read block for each of ``readers``."""
    text = acl_file.read_text() if acl_file.exists() else ""
    lines = text.splitlines()
    if GATEWAY_PATTERN not in (line.strip() for line in lines):
        text += ("" if text.endswith("\n") or not text else "\n") + (
            "# Gateways log in as <enterprise>/<gateway> and write only below their own topics.\n"
            f"{GATEWAY_PATTERN}\n"
        )
    if GATEWAY_CONFIG_PATTERN not in (line.strip() for line in text.splitlines()):
        text += ("" if text.endswith("\n") or not text else "\n") + (
            f"# ... and read only their own remote configuration topic.\n{GATEWAY_CONFIG_PATTERN}\n"
        )
    for reader in readers or []:
        block = "\n".join([f"user {reader}", READ_ALL, READER_CONFIG, *READER_SPARKPLUG]) + "\n"
        if f"user {reader}" not in (line.strip() for line in text.splitlines()):
            text += ("" if text.endswith("\n") else "\n") + "\n" + block
        else:
            text = _with_sparkplug_lines(text, reader)
    _write_private(acl_file, text, mode=0o644)


def _with_sparkplug_lines(text: str, reader: str) -> str:
    """Add the Sparkplug host lines to an existing reader block that predates them."""
    lines = text.splitlines()
    start = [line.strip() for line in lines].index(f"user {reader}")
    end = start + 1
    while end < len(lines) and lines[end].strip() and not lines[end].startswith("user "):
        end += 1
    missing = [
        line
        for line in (READER_CONFIG, *READER_SPARKPLUG)
        if line not in (x.strip() for x in lines[start:end])
    ]
    return "\n".join(lines[:end] + missing + lines[end:]) + "\n"


def _write_private(path: Path, text: str, mode: int = 0o640) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    if path.exists():
        st = path.stat()
        try:
            os.chown(tmp, st.st_uid, st.st_gid)  # keep Mosquitto's group able to read it
        except PermissionError:
            pass
        os.chmod(tmp, st.st_mode & 0o777)
    os.replace(tmp, path)


def _read_secret(password_stdin: bool, secret_out: Path | None, label: str) -> str:
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
        if not password:
            raise typer.BadParameter("no password on standard input")
        return password
    password = secrets.token_urlsafe(24)
    target = secret_out or Path(f"{label}.mqtt-password")
    _write_private(target, password + "\n", mode=0o600)
    typer.echo(f"generated password written to {target} (mode 0600); give it to the gateway as")
    typer.echo("  mqtt.password_file, then delete this copy")
    return password


PasswordFile = Annotated[
    Path,
    typer.Option(help="Mosquitto password_file to edit.", envvar="SHULIAN_BROKER_PASSWORD_FILE"),
]
AclFile = Annotated[
    Path, typer.Option(help="Mosquitto acl_file to check/extend.", envvar="SHULIAN_BROKER_ACL_FILE")
]
PasswordStdin = Annotated[
    bool,
    typer.Option(
        "--password-stdin", help="Read the password from stdin instead of generating one."
    ),
]
SecretOut = Annotated[
    Path | None,
    typer.Option(help="Where to write a generated password (default ./<user>.mqtt-password)."),
]


@app.command("add")
def add_gateway(
    enterprise: Annotated[str, typer.Option(help="Enterprise id, as in the gateway's settings.")],
    gateway: Annotated[str, typer.Option(help="Gateway id, as in the gateway's settings.")],
    password_file: PasswordFile = Path("/etc/mosquitto/shulian/passwd"),
    acl_file: AclFile = Path("/etc/mosquitto/shulian/acl"),
    password_stdin: PasswordStdin = False,
    secret_out: SecretOut = None,
) -> None:
    """Add (or re-key) a gateway: username <enterprise>/<gateway>, confined to its topics."""
    username = gateway_username(enterprise, gateway)
    password = _read_secret(password_stdin, secret_out, f"{enterprise}.{gateway}")
    replaced = set_password_line(password_file, username, password)
    ensure_acl(acl_file)
    typer.echo(
        f"{'replaced' if replaced else 'added'} {username} in {password_file}; it may publish only "
        f"under {NAMESPACE}/{enterprise}/{gateway}/#. Reload the broker: systemctl reload mosquitto"
    )


@app.command("add-reader")
def add_reader(
    username: Annotated[
        str, typer.Option(help="Reader login, e.g. ingest@shulian (must contain '@').")
    ] = "ingest@shulian",
    password_file: PasswordFile = Path("/etc/mosquitto/shulian/passwd"),
    acl_file: AclFile = Path("/etc/mosquitto/shulian/acl"),
    password_stdin: PasswordStdin = False,
    secret_out: SecretOut = None,
) -> None:
    """Add a reader (the ingest) that may read every enterprise's topics and write none."""
    if "@" not in username or "/" in username or ":" in username or " " in username:
        raise typer.BadParameter(
            "a reader's username contains '@' and no '/', ':' or spaces (e.g. ingest@shulian), "
            "so it can never match a gateway's <enterprise>/<gateway> login"
        )
    password = _read_secret(password_stdin, secret_out, username)
    set_password_line(password_file, username, password)
    ensure_acl(acl_file, readers=[username])
    typer.echo(
        f"reader {username} may read {NAMESPACE}/#. Reload the broker: systemctl reload mosquitto"
    )


@app.command("add-sparkplug")
def add_sparkplug(
    group: Annotated[str, typer.Option(help="Sparkplug group id of the edge node.")],
    node: Annotated[str, typer.Option(help="Sparkplug edge node id.")],
    password_file: PasswordFile = Path("/etc/mosquitto/shulian/passwd"),
    acl_file: AclFile = Path("/etc/mosquitto/shulian/acl"),
    password_stdin: PasswordStdin = False,
    secret_out: SecretOut = None,
) -> None:
    """Add (or re-key) a Sparkplug B edge node: username sparkplug@<group>/<node>, confined to
    its own births, data, deaths and commands."""
    username = sparkplug_username(group, node)
    password = _read_secret(password_stdin, secret_out, f"sparkplug.{group}.{node}")
    replaced = set_password_line(password_file, username, password)
    ensure_acl(acl_file)
    text = acl_file.read_text()
    if f"user {username}" not in (line.strip() for line in text.splitlines()):
        text += ("" if text.endswith("\n") else "\n") + "\n" + sparkplug_block(group, node)
        _write_private(acl_file, text, mode=0o644)
    typer.echo(
        f"{'replaced' if replaced else 'added'} {username} in {password_file}; it may publish only "
        f"{SPB}/{group}/N*|D*/{node}[/...]. Reload the broker: systemctl reload mosquitto"
    )


@app.command("remove")
def remove(
    username: Annotated[str, typer.Argument(help="<enterprise>/<gateway> or a reader's name.")],
    password_file: PasswordFile = Path("/etc/mosquitto/shulian/passwd"),
) -> None:
    """Remove a login (its ACL pattern needs no change)."""
    if not remove_password_line(password_file, username):
        typer.echo(f"{username} is not in {password_file}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {username}; reload the broker: systemctl reload mosquitto")
