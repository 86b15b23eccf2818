"""The shipped device-profile library (YAML data, packaged so an installed gateway has it too)."""

__all__: list[str] = []  # nothing re-exported: import the submodule that has the one job
