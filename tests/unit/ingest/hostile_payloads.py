"""Hypothesis strategies for hostile telemetry, each message labelled with what the ingest must do.

A ``HostileSpec`` knows which of its samples are good (must be stored) and, for each bad one, the
reason it must be rejected with; or that the whole message must be rejected. Boot and seq are
given when rendering, so every rendered batch is new to the ledger.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st

from ingest.errors import Reason

ENTERPRISE = "ent-fz"
GATEWAY = "gw-fz"
UNKNOWN_GATEWAY = "gw-nobody"
DEVICES = ["dev-0", "dev-1", "dev-2", "dev-3"]
NOW_MS = 1_764_324_000_000
MAX_MESSAGE_BYTES = 16 * 1024
STATES = ["running", "idle", "setup", "fault", "off"]

GOOD_SIGNALS: dict[str, st.SearchStrategy[Any]] = {
    "spindle_speed": st.floats(-1e12, 1e12, allow_nan=False),
    "feed_rate": st.integers(-(2**53), 2**53),
    "alarm_active": st.booleans(),
    "part_count": st.integers(0, 2**32),
    "machine_state": st.sampled_from(STATES),
    "alarm_text": st.text(max_size=40).filter(lambda s: "\x00" not in s),
    "voltage.l2": st.floats(0, 500),
}


@dataclass
class HostileSpec:
    kind: str
    topic_gateway: str = GATEWAY
    samples: list[Any] = field(default_factory=list)
    envelope: dict[str, Any] = field(default_factory=dict)
    raw: bytes | None = None
    raw_topic: str | None = None
    good: list[int] = field(default_factory=list)
    """Indexes of samples that must be stored."""
    bad: dict[int, Reason] = field(default_factory=dict)
    """Index -> reason of samples that must be dead-lettered."""
    whole: Reason | tuple[Reason, ...] | None = None
    """The whole message must be rejected (with this reason, or one of these)."""

    @property
    def is_batch(self) -> bool:
        """A batch the ledger must claim (its gateway is known and its envelope valid)."""
        return self.whole is None

    def topic(self) -> str:
        if self.raw_topic is not None:
            return self.raw_topic
        return f"shulian/v1/{ENTERPRISE}/{self.topic_gateway}/telemetry"

    def render(self, boot: str, seq: int, shift_ms: int = 0) -> bytes:
        """The payload; ``shift_ms`` moves every timestamp (NOW_MS becomes NOW_MS + shift_ms)."""
        if self.raw is not None:
            return self.raw
        body = {
            "v": "1.0",
            "gateway": GATEWAY,
            "boot": boot,
            "seq": seq,
            "ts_ms": NOW_MS + shift_ms,
            "samples": [shifted(s, shift_ms) for s in self.samples],
            **self.envelope,
        }
        return json.dumps(body, allow_nan=True).encode()


def shifted(sample: Any, shift_ms: int) -> Any:
    if isinstance(sample, dict) and isinstance(sample.get("ts_ms"), int) and sample["ts_ms"] >= 0:
        return {**sample, "ts_ms": sample["ts_ms"] + shift_ms}
    return sample


def expected_row(sample: dict[str, Any]) -> tuple[str, str, int, float | None, str | None, int]:
    """The telemetry row a good sample becomes (device, signal, ts_ms, value, value_text, q)."""
    value = sample["value"]
    quality = {"good": 0, "uncertain": 1, "bad": 2}[sample.get("quality", "good")]
    if isinstance(value, str):
        return sample["device"], sample["signal"], sample["ts_ms"], None, value, quality
    number = None if value is None else float(value)
    return sample["device"], sample["signal"], sample["ts_ms"], number, None, quality


@st.composite
def good_sample(draw: st.DrawFn) -> dict[str, Any]:
    signal = draw(st.sampled_from(sorted(GOOD_SIGNALS)))
    quality = draw(st.sampled_from(["good", "good", "uncertain", "bad"]))
    value = draw(GOOD_SIGNALS[signal])
    if quality == "bad" and draw(st.booleans()):
        value = None
    return {
        "device": draw(st.sampled_from(DEVICES)),
        "signal": signal,
        "ts_ms": NOW_MS - draw(st.integers(0, 3_600_000)),
        "value": value,
        "quality": quality,
    }


BAD_KINDS: list[tuple[str, Reason]] = [
    ("nan", Reason.NON_FINITE),
    ("infinity", Reason.NON_FINITE),
    ("list_value", Reason.INVALID_SAMPLE),
    ("dict_value", Reason.INVALID_SAMPLE),
    ("unknown_signal", Reason.UNKNOWN_SIGNAL),
    ("bad_signal_name", Reason.INVALID_SAMPLE),
    ("future", Reason.TOO_NEW),
    ("ancient", Reason.TOO_OLD),
    ("negative_ts", Reason.INVALID_SAMPLE),
    ("ghost_device", Reason.UNKNOWN_DEVICE),
    ("bad_device_id", Reason.INVALID_SAMPLE),
    ("missing_field", Reason.INVALID_SAMPLE),
    ("long_text", Reason.INVALID_SAMPLE),
    ("nul_text", Reason.INVALID_SAMPLE),
    ("bad_state", Reason.INVALID_SAMPLE),
    ("not_an_object", Reason.INVALID_SAMPLE),
    ("huge_int", Reason.INVALID_SAMPLE),
    ("duplicate", Reason.DUPLICATE_POINT),
]


def bad_sample(
    draw: st.DrawFn, kind: str, index: int, base: dict[str, Any], earlier: list[dict[str, Any]]
) -> Any:
    s = dict(base)
    if kind == "nan":
        s["value"] = float("nan")
    elif kind == "infinity":
        s["value"] = draw(st.sampled_from([float("inf"), float("-inf")]))
    elif kind == "list_value":
        s["value"] = [1, 2]
    elif kind == "dict_value":
        s["value"] = {"v": 1}
    elif kind == "unknown_signal":
        s["signal"] = draw(st.sampled_from(["warp_drive", "flux_capacitance.x", "zzz"]))
    elif kind == "bad_signal_name":
        s["signal"] = draw(st.sampled_from(["Spindle Speed", "", "1abc", "a..b", "x" * 200]))
    elif kind == "future":
        s["ts_ms"] = NOW_MS + draw(st.integers(3_600_000, 10**12))
    elif kind == "ancient":
        s["ts_ms"] = draw(st.integers(0, NOW_MS - 8 * 86_400_000))
    elif kind == "negative_ts":
        s["ts_ms"] = draw(st.integers(-(10**15), -1))
    elif kind == "ghost_device":
        s["device"] = f"ghost-{index}"
    elif kind == "bad_device_id":
        s["device"] = draw(st.sampled_from(["bad/id", "", "#", "with space", "-lead"]))
    elif kind == "missing_field":
        del s[draw(st.sampled_from(["device", "signal", "ts_ms", "value"]))]
    elif kind == "long_text":
        s["signal"], s["value"] = "alarm_text", "x" * 1025
    elif kind == "nul_text":
        s["signal"], s["value"] = "alarm_text", "a\x00b"
    elif kind == "bad_state":
        s["signal"], s["value"] = "machine_state", draw(st.sampled_from(["offline", "RUN", "?"]))
    elif kind == "not_an_object":
        return draw(st.sampled_from([42, "sample", None, [1], True]))
    elif kind == "huge_int":
        s["value"] = draw(st.sampled_from([10**400, -(10**309)]))
    elif kind == "duplicate":
        twin = draw(st.sampled_from(earlier))
        s = {**twin, "value": draw(GOOD_SIGNALS[twin["signal"]])}
    return s


@st.composite
def batch_spec(draw: st.DrawFn) -> HostileSpec:
    spec = HostileSpec("batch")
    used: set[tuple[str, str, int]] = set()
    goods: list[dict[str, Any]] = []
    for index in range(draw(st.integers(0, 12))):
        base = draw(good_sample())
        if draw(st.integers(0, 2)) == 0:
            kind, reason = draw(st.sampled_from(BAD_KINDS))
            if kind == "duplicate" and not goods:
                kind, reason = "nan", Reason.NON_FINITE
            spec.samples.append(bad_sample(draw, kind, index, base, goods))
            spec.bad[index] = reason
            continue
        key = (base["device"], base["signal"], base["ts_ms"])
        spec.samples.append(base)
        if key in used:
            spec.bad[index] = Reason.DUPLICATE_POINT
        else:
            used.add(key)
            goods.append(base)
            spec.good.append(index)
    return spec


@st.composite
def hostile_spec(draw: st.DrawFn) -> HostileSpec:
    """Mostly batches with bad samples mixed in; the rest whole-message failures of every kind."""
    kind = draw(
        st.sampled_from(
            ["batch"] * 6
            + [
                "mismatch",
                "unknown_gateway",
                "garbage",
                "random_json",
                "envelope",
                "oversized",
                "bad_topic",
            ]
        )
    )
    spec = draw(batch_spec())
    if kind == "batch":
        return spec
    spec.kind, spec.good, spec.bad = kind, [], {}
    if kind == "mismatch":
        spec.envelope = {"gateway": "gw-someone-else"}
        spec.whole = Reason.IDENTITY_MISMATCH
    elif kind == "unknown_gateway":
        spec.topic_gateway = UNKNOWN_GATEWAY
        spec.envelope = {"gateway": UNKNOWN_GATEWAY}
        spec.whole = Reason.UNKNOWN_GATEWAY
    elif kind == "garbage":
        spec.raw = draw(st.binary(min_size=0, max_size=300))
        spec.whole = (Reason.MALFORMED_JSON, Reason.INVALID_PAYLOAD)
    elif kind == "random_json":
        value = draw(
            st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
                lambda inner: (
                    st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4)
                ),
                max_leaves=12,
            )
        )
        spec.raw = json.dumps(value, allow_nan=True).encode()
        spec.whole = Reason.INVALID_PAYLOAD
    elif kind == "envelope":
        field_name, bad_value = draw(
            st.sampled_from(
                [("seq", 0), ("seq", "seven"), ("boot", ""), ("boot", None), ("v", "2.0"),
                 ("ts_ms", -5), ("samples", {"a": 1}), ("gateway", 17)]
            )
        )  # fmt: skip
        spec.envelope = {field_name: bad_value}
        spec.whole = Reason.IDENTITY_MISMATCH if field_name == "gateway" else Reason.INVALID_PAYLOAD
        if field_name == "gateway":
            spec.whole = (Reason.INVALID_PAYLOAD, Reason.IDENTITY_MISMATCH)
    elif kind == "oversized":
        spec.envelope = {"padding": "p" * (MAX_MESSAGE_BYTES + 1)}
        spec.whole = Reason.OVERSIZED
    elif kind == "bad_topic":
        spec.raw_topic = f"shulian/v1/{ENTERPRISE}/gw fz/telemetry"
        spec.whole = Reason.UNKNOWN_TOPIC
    return spec
