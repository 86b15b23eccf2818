"""Run a real gateway process whose devices are fakes: ``python fake_gateway_main.py spec.json``.

The spec holds the settings sections and ``devices`` ({id, interval_ms, unreachable}); each fake
device's part_count counts its reads, so a test can spot any lost sample as a gap; an unreachable
one refuses every connection (the gateway reports its error).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # support, for gateway_fakes
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "unit" / "gateway"))

from gateway_fakes import FakeDriver, make_device, make_profile, world

from gateway.app import GatewayApp
from gateway.logs import configure_logging
from gateway.profiles.loader import Site
from gateway.scheduler import Backoff
from gateway.settings import build_settings


def main() -> None:
    spec = orjson.loads(Path(sys.argv[1]).read_bytes())
    settings = build_settings({k: v for k, v in spec.items() if k != "devices"})
    configure_logging("text", settings.log.level)
    devices = [
        make_device(
            d["id"],
            enterprise=settings.gateway.enterprise,
            profile=make_profile(interval_ms=d.get("interval_ms", 50)),
        )
        for d in spec["devices"]
    ]
    for d in spec["devices"]:
        world(d["id"]).is_unreachable = bool(d.get("unreachable", False))
    app = GatewayApp(
        settings,
        Site(file=sys.argv[1], settings={}, devices=devices),
        driver_for=lambda _p: FakeDriver,
        device_backoff=Backoff(0.05, 0.2),
    )
    asyncio.run(app.run())


if __name__ == "__main__":
    main()
