"""The monitoring module: FastAPI app, routes, access policy, live updates (create_app in app.py)."""

__all__: list[str] = []  # nothing re-exported: import the submodule that has the one job
