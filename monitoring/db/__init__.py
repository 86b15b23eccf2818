"""The monitoring's database side: its migration chain and the roles it and a replica log in as."""

__all__: list[str] = []  # nothing re-exported: import the submodule that has the one job
