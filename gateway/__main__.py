"""``python -m gateway``: the same commands as ``shulian gateway``."""

from gateway.cli import app

if __name__ == "__main__":
    app(prog_name="python -m gateway")
