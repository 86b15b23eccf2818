"""``python -m simulators``: the same commands as ``shulian sim``."""

from simulators.cli import app

app(prog_name="python -m simulators")
