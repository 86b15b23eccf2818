"""The API's routers, one module per resource."""

__all__: list[str] = []  # nothing re-exported: import the submodule that has the one job
