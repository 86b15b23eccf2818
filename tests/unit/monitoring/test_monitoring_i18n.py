"""Both UI languages name the same strings, and every string the pages ask for exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

WEB = Path(__file__).resolve().parents[3] / "monitoring" / "web"
LANGS = ("zh-CN", "en")


def _strings(lang: str) -> dict[str, str]:
    data: dict[str, str] = json.loads((WEB / "i18n" / f"{lang}.json").read_text("utf-8"))
    return data


def _asked_for() -> set[str]:
    """Literal keys passed to t() in the script and the templates."""
    sources = [WEB / "static" / "app.js", *sorted((WEB / "templates").glob("*.html"))]
    pattern = re.compile(r"""\bt\(\s*["']([a-z_]+\.[a-z_.]+)["']\s*\)""")
    return {key for path in sources for key in pattern.findall(path.read_text("utf-8"))}


def test_both_languages_have_the_same_keys_and_no_blank_text() -> None:
    zh, en = _strings("zh-CN"), _strings("en")
    assert set(zh) == set(en)
    # unit.devices is deliberately empty in English ("5", not "5 devices")
    assert [k for k, v in zh.items() if not v.strip()] == []
    assert [k for k, v in en.items() if not v.strip()] == ["unit.devices"]


def test_every_key_the_pages_ask_for_is_translated() -> None:
    asked = _asked_for()
    assert len(asked) > 40  # the pattern still finds the calls
    for lang in LANGS:
        assert sorted(asked - set(_strings(lang))) == [], lang


def test_chinese_text_is_chinese() -> None:
    """A key copied over from en.json untranslated shows up as ASCII-only text in zh-CN."""
    latin_ok = {"kpi.oee", "unit.kwh", "unit.kwh_part", "nav.lang"}
    untranslated = [
        key
        for key, text in _strings("zh-CN").items()
        if key not in latin_ok and text.isascii() and text == _strings("en")[key]
    ]
    assert untranslated == []
