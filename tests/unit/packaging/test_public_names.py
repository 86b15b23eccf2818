"""Every package states its public names in __all__, and each listed name exists."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
PACKAGES = sorted(
    ".".join(p.parent.relative_to(REPO).parts)
    for top in (
        "wire",
        "gateway",
        "ingest",
        "monitoring",
        "simulators",
        "shulian",
        "device_profiles",
    )
    for p in (REPO / top).rglob("__init__.py")
)


@pytest.mark.parametrize("package", PACKAGES)
def test_package_lists_its_public_names(package: str) -> None:
    module = importlib.import_module(package)
    assert isinstance(getattr(module, "__all__", None), list), f"{package} has no __all__"
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert not missing, f"{package}.__all__ names what it does not define: {missing}"
