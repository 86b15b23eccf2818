"""Generate wire/sparkplug_b_pb2.py from wire/sparkplug_b.proto with grpcio-tools' protoc.

Run ``python -m wire.sparkplug_gen`` after editing the .proto (never edit the generated files);
``python -m wire.sparkplug_gen --check`` exits 1 when the committed files differ from what protoc
makes now. grpcio-tools is a development dependency only: the gateway and the ingest import the
generated module and need just the ``protobuf`` runtime.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = "sparkplug_b.proto"
OUTPUTS = ("sparkplug_b_pb2.py",)


def generate(out_dir: Path) -> None:
    from grpc_tools import protoc

    code = protoc.main(["protoc", f"-I{HERE}", f"--python_out={out_dir}", str(HERE / PROTO)])
    if code != 0:
        raise SystemExit(f"protoc failed on {HERE / PROTO} (exit {code})")


def stale() -> list[str]:
    """The generated files that differ from a fresh protoc run."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return [
            name
            for name in OUTPUTS
            if not (HERE / name).exists()
            or (HERE / name).read_bytes() != (Path(tmp) / name).read_bytes()
        ]


if __name__ == "__main__":
    if sys.argv[1:] == ["--check"]:
        differ = stale()
        if differ:
            print(f"regenerate with `python -m wire.sparkplug_gen`: {', '.join(differ)} differ")
            raise SystemExit(1)
    else:
        generate(HERE)
