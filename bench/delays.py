"""What the delay statistics (ingest/delays.py) add to the writer's work per batch.

Baseline, measured in the same run: encoding a gateway-shaped batch's samples for the binary COPY
(``TelemetryCopy``), the least per-sample work the writer does for every batch. Measured: the
``DelayRecorder.record`` call the writer makes for the same batch after its commit (its devices
and oldest sample time). Prints one JSON line with both costs per batch and their ratio.

    python bench/delays.py                      # 120 samples of 10 devices per batch
    python bench/delays.py --devices 50 --samples 500
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/ingest.py shadows ingest

from ingest.db.pgcopy import TelemetryCopy
from ingest.delays import DelayRecorder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10)
    parser.add_argument("--samples", type=int, default=120)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--number", type=int, default=2000)
    args = parser.parse_args()
    now_ms = int(time.time() * 1000)
    samples = [
        (now_ms - 1000 + n, n % args.devices + 1, n % 12 + 1, float(n)) for n in range(args.samples)
    ]
    keys = {f"dev-{k}": k for k in range(1, args.devices + 1)}
    recorder = DelayRecorder("Asia/Shanghai", flush_every_s=3600)

    def encode() -> None:
        copy = TelemetryCopy()
        for ts, key, signal, value in samples:
            copy.add_number(ts, value, key, signal, 0)
        copy.data()

    def record() -> None:
        recorder.record([(keys.values(), now_ms - 1000, False)], time.time())

    baseline = min(timeit.repeat(encode, number=args.number, repeat=args.repeat)) / args.number
    measured = min(timeit.repeat(record, number=args.number, repeat=args.repeat)) / args.number
    print(
        json.dumps(
            {
                "devices_per_batch": args.devices,
                "samples_per_batch": args.samples,
                "copy_encode_us_per_batch": round(baseline * 1e6, 2),
                "delay_record_us_per_batch": round(measured * 1e6, 2),
                "ratio_record_to_encode": round(measured / baseline, 4),
            }
        )
    )


if __name__ == "__main__":
    main()
