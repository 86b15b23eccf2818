"""The `shulian` command: one noun per deployable (gateway, ingest, monitoring, sim, profile) plus
`demo`.

Each package's CLI module is imported only when its noun is used, so a gateway installed with
`shulian[gateway]` never imports psycopg or FastAPI, and a missing extra is reported by name.
"""

from __future__ import annotations

import importlib
import sys
from typing import Final

import typer

# noun -> (module with a Typer `app`, the extra that brings its dependencies, help text)
NOUNS: Final[dict[str, tuple[str, str, str]]] = {
    "gateway": ("gateway.cli", "gateway", "Run the factory gateway agent and manage its settings."),
    "profile": (
        "gateway.profile_cli",
        "gateway",
        "Validate, inspect, plan and probe device profiles.",
    ),
    # shulian.hosting is ingest.cli's app, able to host the monitoring (--with-monitoring).
    "ingest": ("shulian.hosting", "ingest", "Run the cloud ingest (MQTT -> database)."),
    "monitoring": (
        "monitoring.cli",
        "monitoring",
        "Run the industry-operation monitoring (pages, API, KPI refresh).",
    ),
    "sim": ("simulators.cli", "sim", "Run simulated line equipment (OPC UA and Modbus servers)."),
    "demo": (
        "shulian.demo",
        "all",
        "Run the whole pipeline locally: simulated factories to live dashboard.",
    ),
}


def _missing_extra(noun: str, extra: str, error: ImportError) -> typer.Typer:
    stub = typer.Typer(help=f"(unavailable: {error})", invoke_without_command=True)

    @stub.callback()
    def _explain() -> None:
        typer.echo(
            f"`shulian {noun}` needs the '{extra}' extra: pip install 'shulian[{extra}]' ({error})",
            err=True,
        )
        raise typer.Exit(2)

    return stub


def _load(noun: str) -> typer.Typer:
    module_name, extra, _ = NOUNS[noun]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if exc.name and exc.name.split(".")[0] in (
            "shulian",
            "wire",
            "gateway",
            "ingest",
            "monitoring",
            "simulators",
        ):
            raise  # our own module is broken: a bug, not a missing extra
        return _missing_extra(noun, extra, exc)
    app = module.app
    assert isinstance(app, typer.Typer)
    return app


def build_app(nouns: list[str] | None = None) -> typer.Typer:
    """The root app; with ``nouns`` only those sub-apps are imported (the one being run)."""
    root = typer.Typer(
        help="shulian: edge-to-cloud telemetry for SME digital-transformation pilots.",
        no_args_is_help=True,
        add_completion=False,
    )
    for noun, (_, _, help_text) in NOUNS.items():
        if nouns is None or noun in nouns:
            root.add_typer(_load(noun), name=noun, help=help_text)
        else:
            root.add_typer(typer.Typer(help=help_text), name=noun, help=help_text)
    return root


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    noun = args[0] if args and args[0] in NOUNS else None
    build_app([noun] if noun else [])(args=args, prog_name="shulian")


if __name__ == "__main__":
    main()
