"""gateway/profiles."""

__all__: list[str] = []  # nothing re-exported: import the submodule that has the one job
