"""The industry-operation monitoring (产业运行监测): KPIs, pages and API for the bureau, enterprises
and providers. It reads the database the ingest writes; docs/architecture.md draws the boundary."""

__all__: list[str] = []  # nothing re-exported: import the submodule that has the one job
