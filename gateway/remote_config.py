"""Apply the configuration the cloud assigned to this gateway (docs/remote-config.md).

Off by default (``remote_config.enabled``). When on, the publisher subscribes to the gateway's own
``config`` topic; each ConfigBundle received is

1. checked: addressed to this gateway, every file's sha256 and the bundle's hash as sent;
2. written to ``<data_dir>/remote-config/staging-<revision>/`` and validated there exactly as
   ``shulian profile validate`` does (the same function);
3. applied through the reload path, which restarts only the devices whose configuration changed
   and never touches the disk buffer;
4. only then made the last good one: the folder becomes ``rev-<revision>`` and ``current`` names
   it, so a restart runs it (``last_good_site``) even with the cloud unreachable.

Anything refused leaves the running configuration and the last good one as they were, and the
gateway reports ``refused`` with every message; applied, it reports the devices it restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Final

from pydantic import ValidationError

from wire.payloads import ConfigBundle, ConfigReport, bundle_hash, file_hash

if TYPE_CHECKING:
    from gateway.app import GatewayApp

log = logging.getLogger(__name__)

CURRENT: Final = "current"
"""File naming the folder of the last good revision."""
KEEP: Final = 3
"""Applied revisions kept on disk (the current one and two before it, for inspection)."""
BUNDLE: Final = "<bundle>"
"""How a refusal message names the folder of the bundle it was validated in."""


def last_good_site(folder: Path) -> Path | None:
    """The site file of the last remote configuration applied, if there is one."""
    try:
        revision = folder / (folder / CURRENT).read_text(encoding="utf-8").strip()
        site = revision / (revision / ".site").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return site if site.is_file() else None


class RemoteConfig:
    """Receives bundles from the publisher (on the event loop) and applies them one at a time."""

    def __init__(self, app: GatewayApp, folder: Path) -> None:
        self.app = app
        self.folder = folder
        self.applied_revision = 0
        self.applied_hash = ""
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[ConfigReport]] = set()

    def receive(self, payload: bytes) -> None:
        if not payload:
            return  # the cloud cleared the topic: keep running the last good configuration
        task = asyncio.get_running_loop().create_task(self.apply(payload), name="remote-config")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def apply(self, payload: bytes) -> ConfigReport:
        async with self._lock:
            report = await self._apply(payload)
        self.app.publisher.publish_config_report(report.model_dump_json().encode())
        log.log(
            logging.INFO if report.status == "applied" else logging.ERROR,
            "remote configuration %s",
            report.status,
            extra={
                "revision": report.revision,
                "messages": report.messages,
                "restarted": report.restarted,
            },
        )
        return report

    async def _apply(self, payload: bytes) -> ConfigReport:
        gw = self.app.settings.gateway
        try:
            bundle = ConfigBundle.model_validate_json(payload)
        except ValidationError as exc:
            return self._report(0, "refused", [f"config message: {exc}"])
        problems = integrity_problems(bundle, gw.enterprise, gw.id)
        if problems:
            return self._report(bundle.revision, "refused", problems, bundle.sha256)
        if bundle.revision == self.applied_revision and bundle.sha256 == self.applied_hash:
            return self._report(bundle.revision, "applied", [], bundle.sha256)
        staging = self.folder / f"staging-{bundle.revision}"
        site = await asyncio.to_thread(_write_bundle, staging, bundle)
        messages = await asyncio.to_thread(_validation_errors, site, staging)
        messages += await asyncio.to_thread(_identity_problems, site, gw.enterprise, gw.id)
        if messages:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            return self._report(bundle.revision, "refused", messages, bundle.sha256)
        final = self.folder / f"rev-{bundle.revision}"
        await asyncio.to_thread(_replace_dir, staging, final)
        if not await self.app.reload(final / site.name):
            return self._report(
                bundle.revision,
                "refused",
                ["the gateway could not load it; see its log (it keeps the running configuration)"],
                bundle.sha256,
            )
        await asyncio.to_thread(_point_current, self.folder, final.name)
        self.applied_revision, self.applied_hash = bundle.revision, bundle.sha256
        return self._report(bundle.revision, "applied", [], bundle.sha256, self.app.last_restarted)

    def _report(
        self,
        revision: int,
        status: str,
        messages: list[str],
        sha256: str = "",
        restarted: list[str] | None = None,
    ) -> ConfigReport:
        from gateway.pipeline import now_ms

        return ConfigReport.model_validate(
            {
                "gateway": self.app.settings.gateway.id,
                "revision": revision,
                "status": status,
                "sha256": sha256,
                "messages": [m[:2000] for m in messages],
                "restarted": restarted or [],
                "ts_ms": now_ms(),
            }
        )


def integrity_problems(bundle: ConfigBundle, enterprise: str, gateway: str) -> list[str]:
    """Why the bundle cannot be trusted as sent: wrong addressee, a hash that does not match."""
    problems = []
    if (bundle.enterprise, bundle.gateway) != (enterprise, gateway):
        problems.append(
            f"revision {bundle.revision} is for {bundle.enterprise}/{bundle.gateway}, "
            f"not this gateway {enterprise}/{gateway}"
        )
    for file in bundle.files:
        if file_hash(file.content) != file.sha256:
            problems.append(f"{file.name}: sha256 does not match its content (damaged in transit)")
    if bundle_hash(bundle.files) != bundle.sha256:
        problems.append(f"revision {bundle.revision}: bundle sha256 does not match its files")
    sites = [f.name for f in bundle.files if f.kind == "site"]
    if len(sites) != 1:
        problems.append(
            f"revision {bundle.revision}: a configuration needs exactly one site file, got "
            f"{len(sites)} ({', '.join(sites) or 'none'})"
        )
    return problems


def _write_bundle(folder: Path, bundle: ConfigBundle) -> Path:
    """Write every file of the bundle into a fresh ``folder``; the site file's path."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    site = folder
    for file in bundle.files:
        (folder / file.name).write_text(file.content, encoding="utf-8")
        if file.kind == "site":
            site = folder / file.name
            (folder / ".site").write_text(file.name, encoding="utf-8")
    return site


def _validation_errors(site: Path, folder: Path) -> list[str]:
    """The errors ``shulian profile validate`` reports for the bundle, named by file name."""
    from gateway.profile_cli import validate_paths

    # The staging folder is this gateway's and is removed after a refusal: the provider reading
    # the messages on the console knows the files by their names and the folder as the bundle.
    prefix = f"{folder}/"
    return [
        f.text.replace(prefix, "").replace(str(folder), BUNDLE)
        for f in validate_paths(sorted(folder.glob("*.y*ml")))
        if f.severity == "error"
    ]


def _identity_problems(site: Path, enterprise: str, gateway: str) -> list[str]:
    """A site file naming another gateway would make this one read that gateway's machines."""
    from gateway.errors import ConfigError
    from gateway.profiles.loader import read_yaml

    try:
        data = read_yaml(site)
    except ConfigError:  # the validator has already reported it
        return []
    section = data.get("gateway") if isinstance(data, dict) else None
    if not isinstance(section, dict):
        return []
    problems = []
    for key, mine in (("id", gateway), ("enterprise", enterprise)):
        named = section.get(key)
        if named is not None and str(named) != mine:
            problems.append(
                f"{site.name}: gateway.{key}: {named!r} is not this gateway's ({mine!r}); "
                "a site file of another gateway is never applied"
            )
    return problems


def _replace_dir(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    source.rename(target)


def _point_current(folder: Path, name: str) -> None:
    """Name ``name`` the last good configuration (atomically), and drop old revisions."""
    tmp = folder / f"{CURRENT}.tmp"
    tmp.write_text(name, encoding="utf-8")
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(folder / CURRENT)
    revisions = sorted(
        (p for p in folder.glob("rev-*") if p.name.removeprefix("rev-").isdigit()),
        key=lambda p: int(p.name.removeprefix("rev-")),
    )
    for old in revisions[:-KEEP]:
        if old.name != name:
            with contextlib.suppress(OSError):
                shutil.rmtree(old)
