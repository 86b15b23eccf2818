"""The disk buffer survives a writer killed with SIGKILL: every committed batch is there, in order."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from gateway.buffer import DiskBuffer

WRITER = """
import sys, orjson
from pathlib import Path
from gateway.buffer import DiskBuffer, NewBatch
buf = DiskBuffer(Path(sys.argv[1]), synchronous="normal")
seq = 0
while True:
    group = []
    for _ in range(5):
        seq += 1
        group.append(NewBatch("boot-x", seq, seq, 3, orjson.dumps([seq] * 50)))
    buf.append(group)
    print(seq, flush=True)
"""


def test_committed_batches_survive_sigkill_of_the_writer(tmp_path: Path) -> None:
    path = tmp_path / "buffer.sqlite3"
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    committed = 0
    for line in proc.stdout:
        committed = int(line)
        if committed >= 2000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    buf = DiskBuffer(path)
    seqs = [b.seq for b in buf.read_after(0, limit=1_000_000)]
    assert len(seqs) >= committed, "every batch reported committed is on disk"
    assert seqs == list(range(1, len(seqs) + 1)), "in order, without holes"
    assert buf.stats().batches == len(seqs)
