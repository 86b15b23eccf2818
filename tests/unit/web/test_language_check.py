"""The per-language page check (tests/browser/language_check.py) finds what it is meant to find:
without this, a browser test built on it could pass on any page."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "browser"))
from language_check import foreign_text, vocabulary


def test_clean_pages_pass() -> None:
    zh = "设备 LATHE-1 · 数控车床 · 运行 · 主轴转速 1,450 rpm · OEE 62.0% · 导出 CSV · ent-a"
    en = "Device LATHE-1 · CNC lathe · Running · Spindle speed 1,450 rpm · Dalian Jia Bearing Co."
    assert foreign_text(zh, "zh-CN") == []
    assert foreign_text(en, "en") == []


def test_a_raw_machine_kind_or_signal_fails_in_either_language() -> None:
    assert foreign_text("类型 raceway_grinder", "zh-CN") == ["raw id 'raceway_grinder'"]
    assert foreign_text("Kind raceway_grinder", "en") == ["raw id 'raceway_grinder'"]
    assert foreign_text("Signal spindle_speed 1450", "en") == ["raw id 'spindle_speed'"]
    assert foreign_text("状态 running", "zh-CN") == ["raw id 'running'"]
    assert foreign_text("Profile: cnc_lathe.yaml", "en") == ["raw id 'cnc_lathe.yaml'"]


def test_chinese_on_an_english_page_fails() -> None:
    found = foreign_text("Enterprise 大连甲轴承有限公司 online", "en")
    assert len(found) == 9 and found[0].startswith("CJK '大'"), found
    assert foreign_text("Rate（daily）", "en")  # full-width brackets are CJK forms too


def test_an_untranslated_server_message_on_a_chinese_page_fails() -> None:
    text = "无权限：The enterprise has not granted the bureau access to its device data."
    found = foreign_text(text, "zh-CN")
    assert "English word 'bureau'" in found and "English word 'granted'" in found, found
    # the words of the Chinese catalog, units and all-capital codes stay allowed
    assert vocabulary().chinese_ui and "oee" in vocabulary().chinese_ui
    assert foreign_text("能耗 12.5 kWh，PDF", "zh-CN") == []
