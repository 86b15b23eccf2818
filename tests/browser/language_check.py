"""Does a page's visible text speak only its own language? The rules of the per-language browser
test (tests/browser/test_monitoring_ui.py), as a pure function with a unit test of its own
(tests/unit/web/test_language_check.py) so that it is known to fail.

- **English pages**: no CJK character at all (ideographs, CJK punctuation, full-width forms).
  Chinese names must come out as their ``name_en``; nothing Chinese is allowed on them.
- **Chinese pages**: no English word of the UI's or the server's messages. A word is a run of
  letters standing alone (not part of a token with digits, ``-`` or ``_`` such as a device id
  ``LATHE-1`` or a tag); it is flagged when it occurs in the English catalog (en.json) or in the
  server's English messages and not in the Chinese catalog (zh-CN.json keeps words such as OEE,
  kWh, CSV, PDF that the Chinese UI uses on purpose). Units (a profile's ``unit``), and codes
  written all in capitals (brands, protocols) are allowed.
- **Both**: no raw machine id: a ``machine_kind`` or profile id (also as ``cnc_lathe.yaml``), a
  signal name or a state code of the shipped device profiles (``raceway_grinder``,
  ``spindle_speed``, ``running``) or of the catalogs' ``kind.``, ``state.`` and ``signal.`` keys. A vendor's custom signal tag (``sim:cabinet_fan_speed``) is not
  one of them: it is the vendor's name for its data, shown beside its meaning. On English
  pages only the ids with ``_`` count: a one-word id (``grinder``, ``running``) is also the
  English word its label uses.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]
I18N = REPO / "monitoring" / "web" / "i18n"
PROFILES = REPO / "device_profiles"

CJK_RE = re.compile(r"[\u2e80-\u2fff\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
                    r"\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef]")  # fmt: skip
TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-/]*[A-Za-z0-9]|[A-Za-z0-9]")
WORD_RE = re.compile(r"[A-Za-z]{2,}")
RAW_KEY_PREFIXES = ("kind", "state", "signal")
STATES_ALWAYS = {"running", "idle", "setup", "fault", "off", "offline", "unknown"}


@dataclass(frozen=True)
class Vocabulary:
    english: frozenset[str]  # lower-case words of English UI text and server messages
    chinese_ui: frozenset[str]  # lower-case Latin words the Chinese catalog itself uses
    raw_ids: frozenset[str]  # machine kinds, profile ids, signal names, state codes
    units: frozenset[str]


def _words(texts: list[str]) -> frozenset[str]:
    return frozenset(w.lower() for text in texts for w in WORD_RE.findall(text))


def _catalog(name: str) -> list[str]:
    data = json.loads((I18N / name).read_text(encoding="utf-8"))
    return [re.sub(r"\{[^}]*\}", " ", str(v)) for v in data.values()]  # not placeholders


def server_messages() -> list[str]:
    """English messages and hints the API writes (``"...`` string literals of ingest/api)."""
    texts: list[str] = []
    for path in (REPO / "monitoring" / "api").rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        texts += re.findall(r'(?:hint=|message=|detail=|Error\()\s*f?"([^"]{12,})"', source)
    return texts


@cache
def vocabulary() -> Vocabulary:
    ids: set[str] = set(STATES_ALWAYS)
    units: set[str] = set()
    yaml = YAML(typ="safe")
    for path in PROFILES.rglob("*.yaml"):
        data = yaml.load(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            continue
        ids.add(path.stem)
        for key in ("id", "machine_kind"):
            if isinstance(data.get(key), str):
                ids.add(data[key])
        for signal in data.get("signals") or []:
            if isinstance(signal, dict):
                ids.add(str(signal.get("name", "")))
                if signal.get("unit"):
                    units.add(str(signal["unit"]))
                ids.update(str(s) for s in (signal.get("states") or {}).values())
    # and the ids the catalogs translate (kind.cnc_lathe, state.running, signal.part_count)
    keys = json.loads((I18N / "en.json").read_text(encoding="utf-8"))
    ids.update(key.split(".", 1)[1] for key in keys if key.split(".")[0] in RAW_KEY_PREFIXES)
    ids.discard("")
    return Vocabulary(
        english=_words(_catalog("en.json") + server_messages()),
        chinese_ui=_words(_catalog("zh-CN.json")),
        raw_ids=frozenset(ids),
        units=frozenset(units),
    )


def foreign_text(text: str, lang: str, vocab: Vocabulary | None = None) -> list[str]:
    """What in ``text`` (a page's visible text in ``lang``) is not of that language, or a raw
    id: each finding names the offending token; empty when the page is clean."""
    vocab = vocab or vocabulary()
    found: list[str] = []
    if lang == "en":
        found += [f"CJK {c!r} in …{_around(text, m.start())}…"
                  for m in CJK_RE.finditer(text) for c in [m.group()]]  # fmt: skip
    for token in TOKEN_RE.findall(text):
        bare = re.sub(r"\.ya?ml$", "", token)  # a profile's file name is its id too
        raw = bare in vocab.raw_ids and ("_" in bare or lang != "en")
        if raw:
            found.append(f"raw id {token!r}")
        elif lang != "en" and _untranslated(token, vocab):
            found.append(f"English word {token!r}")
    return found


def _untranslated(token: str, vocab: Vocabulary) -> bool:
    if not token.isalpha() or len(token) < 2 or token.isupper() or token in vocab.units:
        return False
    word = token.lower()
    return word in vocab.english and word not in vocab.chinese_ui


def _around(text: str, at: int) -> str:
    return text[max(0, at - 15) : at + 15].replace("\n", " ")
