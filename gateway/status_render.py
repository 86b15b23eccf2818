"""How the status figures (``gateway.status.collect_status``) look: an HTML page and terminal tables.

Both languages of every label live in ``TEXT``; the page is plain HTML with inline CSS and a
``<meta http-equiv="refresh">`` (no script), so it works in any browser an installer has.
"""

from __future__ import annotations

import time
from html import escape
from typing import Any, Final

LANGUAGES: Final = ("en", "zh-CN")

TEXT: Final[dict[str, dict[str, str]]] = {
    "title": {"en": "Gateway status", "zh-CN": "网关状态"},
    "gateway": {"en": "Gateway", "zh-CN": "网关"},
    "enterprise": {"en": "Enterprise", "zh-CN": "企业"},
    "version": {"en": "Version", "zh-CN": "版本"},
    "config_hash": {"en": "Configuration hash", "zh-CN": "配置哈希"},
    "started": {"en": "Started", "zh-CN": "启动于"},
    "broker": {"en": "Broker", "zh-CN": "消息代理"},
    "buffer": {"en": "Disk buffer", "zh-CN": "磁盘缓冲"},
    "output": {"en": "Output", "zh-CN": "输出"},
    "connected": {"en": "connected", "zh-CN": "已连接"},
    "disconnected": {"en": "disconnected", "zh-CN": "已断开"},
    "error": {"en": "error", "zh-CN": "错误"},
    "since": {"en": "since", "zh-CN": "自"},
    "last_error": {"en": "Last error", "zh-CN": "最近错误"},
    "none": {"en": "none", "zh-CN": "无"},
    "samples": {"en": "samples", "zh-CN": "个样本"},
    "batches": {"en": "batches", "zh-CN": "批"},
    "oldest": {"en": "oldest sample", "zh-CN": "最旧样本"},
    "dropped": {"en": "dropped samples", "zh-CN": "丢弃样本"},
    "inflight": {"en": "awaiting PUBACK", "zh-CN": "等待确认"},
    "devices": {"en": "Devices", "zh-CN": "设备"},
    "device": {"en": "Device", "zh-CN": "设备"},
    "profile": {"en": "Profile", "zh-CN": "设备模型"},
    "endpoint": {"en": "Endpoint", "zh-CN": "地址"},
    "state": {"en": "Connection", "zh-CN": "连接"},
    "last_good": {"en": "Last good read", "zh-CN": "最近成功读取"},
    "reads_per_s": {"en": "Reads/s", "zh-CN": "读取/秒"},
    "values_per_s": {"en": "Values/s", "zh-CN": "数值/秒"},
    "signal": {"en": "Signal", "zh-CN": "信号"},
    "raw": {"en": "Raw", "zh-CN": "原始值"},
    "value": {"en": "Normalized", "zh-CN": "标准化值"},
    "quality": {"en": "Quality", "zh-CN": "质量"},
    "read_at": {"en": "Read at", "zh-CN": "读取时间"},
    "never": {"en": "never", "zh-CN": "从未"},
    "ago": {"en": "{s} ago", "zh-CN": "{s}前"},
    "refresh": {"en": "Refreshes every {n} s", "zh-CN": "每 {n} 秒刷新"},
    "other_lang": {"en": "中文", "zh-CN": "English"},
    "good": {"en": "good", "zh-CN": "良好"},
    "bad": {"en": "bad", "zh-CN": "不良"},
    "uncertain": {"en": "uncertain", "zh-CN": "不确定"},
}


def t(key: str, lang: str) -> str:
    return TEXT[key][lang]


def pick_language(asked: str, accept_language: str) -> str:
    """``?lang=`` wins; else the first of Accept-Language that we speak; else English."""
    for choice in [asked, *(part.split(";")[0].strip() for part in accept_language.split(","))]:
        if choice.lower().startswith("zh"):
            return "zh-CN"
        if choice.lower().startswith("en"):
            return "en"
    return "en"


def clock(ms: int | None, lang: str) -> str:
    if ms is None:
        return t("never", lang)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000))


def age(ms: int | None, now_ms: int, lang: str) -> str:
    if ms is None:
        return t("never", lang)
    seconds = max(0.0, (now_ms - ms) / 1000)
    text = f"{seconds:.1f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return t("ago", lang).format(s=text)


def human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def shown(value: Any) -> str:
    """A value as a person reads it: ``-`` for none, numbers without float noise."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def connection_word(state: str | bool, lang: str) -> str:
    if isinstance(state, bool):
        state = "connected" if state else "disconnected"
    return TEXT[state][lang] if state in TEXT else state


def raw_text(sig: dict[str, Any]) -> str:
    """The raw value, with the profile's unit when unscaled, else with its scale and offset."""
    text = shown(sig["raw"])
    if sig["raw"] is None:
        return text
    if sig["raw_unit"]:
        return f"{text} {sig['raw_unit']}"
    scale, offset = sig.get("scale", 1), sig.get("offset", 0)
    if scale != 1:
        text += f" (×{shown(scale)})"
    if offset:
        text += f" (+{shown(offset)})"
    return text


def quality_text(sig: dict[str, Any], lang: str) -> str:
    quality = sig["quality"]
    if quality is None:
        return "-"
    word = TEXT[quality][lang] if quality in TEXT else quality
    return f"{word}: {sig['reason']}" if sig["reason"] else word


def buffer_line(buffer: dict[str, Any], lang: str) -> str:
    oldest = buffer["oldest_age_s"]
    return (
        f"{buffer['samples']:,} {t('samples', lang)} / {buffer['batches']:,} {t('batches', lang)}, "
        f"{human_bytes(buffer['bytes'])}; {t('oldest', lang)}: "
        f"{'-' if oldest is None else f'{oldest:.1f} s'}; "
        f"{t('dropped', lang)}: {buffer['dropped_samples']:,}"
    )


# ---------------------------------------------------------------------------------- HTML

CSS: Final = """
body{font-family:system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif;margin:1rem;color:#222}
h1{font-size:1.3rem;margin:0 0 .5rem}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}
table{border-collapse:collapse;margin:.3rem 0 1rem}td,th{border:1px solid #ccc;padding:.2rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}.connected{color:#176f2c;font-weight:bold}.disconnected,.error{color:#b00020;font-weight:bold}
.err{color:#b00020}.muted{color:#777}.num{text-align:right;font-variant-numeric:tabular-nums}
.dev{border:1px solid #ddd;border-radius:4px;padding:.5rem .8rem;margin:.6rem 0}
"""


def _row(cells: list[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{c}</{tag}>" for c in cells) + "</tr>"


def _state_html(state: str | bool, lang: str) -> str:
    word = "connected" if state is True else "disconnected" if state is False else str(state)
    return f'<span class="{escape(word)}">{escape(connection_word(word, lang))}</span>'


def _outputs_html(status: dict[str, Any], lang: str) -> str:
    now = status["now_ms"]
    rows = [_row([t(k, lang) for k in ("output", "broker", "state", "last_error", "buffer")], "th")]
    for out in status["outputs"]:
        broker = out["broker"]
        error = broker["last_error"]
        rows.append(
            _row(
                [
                    escape(out["name"]),
                    escape(broker["url"])
                    + f'<br><span class="muted">{escape(broker["client_id"])}</span>',
                    f"{_state_html(broker['connected'], lang)} {t('since', lang)} "
                    f"{escape(clock(broker['since_ms'], lang))}<br>{t('inflight', lang)}: "
                    f"{broker['inflight_batches']}",
                    f'<span class="err">{escape(error)}</span> '
                    f'<span class="muted">({escape(age(broker["last_error_ms"], now, lang))})</span>'
                    if error
                    else t("none", lang),
                    escape(buffer_line(out["buffer"], lang)),
                ]
            )
        )
    return "<table>" + "".join(rows) + "</table>"


def _device_html(device: dict[str, Any], now: int, lang: str) -> str:
    unit = f" unit {device['unit_id']}" if device["unit_id"] is not None else ""
    rates = (
        f"{t('reads_per_s', lang)}: {shown(device['reads_per_s'])}, "
        f"{t('values_per_s', lang)}: {shown(device['values_per_s'])}"
    )
    head = (
        f'<h2 id="dev-{escape(device["id"])}">{escape(device["id"])} '
        f"{_state_html(device['connection'], lang)}</h2>"
        f"<div>{t('profile', lang)}: {escape(device['profile'])} · "
        f"{escape(device['protocol'])} {escape(device['endpoint'] + unit)}</div>"
        f"<div>{t('state', lang)}: {escape(connection_word(device['connection'], lang))} "
        f"{t('since', lang)} {escape(clock(device['since_ms'], lang))} · "
        f"{t('last_good', lang)}: {escape(age(device['last_good_ms'], now, lang))} · {rates}</div>"
    )
    error = device["error"] or device["last_error"]
    if error:
        head += (
            f'<div>{t("last_error", lang)}: <span class="err">{escape(error)}</span> '
            f'<span class="muted">({escape(age(device["last_error_ms"], now, lang))})</span></div>'
        )
    rows = [_row([t(k, lang) for k in ("signal", "raw", "value", "quality", "read_at")], "th")]
    for sig in device["signals"]:
        unit = f" {sig['unit']}" if sig["unit"] and sig["value"] is not None else ""
        rows.append(
            _row(
                [
                    escape(sig["signal"]),
                    f'<span class="num">{escape(raw_text(sig))}</span>',
                    f'<span class="num">{escape(shown(sig["value"]) + unit)}</span>',
                    escape(quality_text(sig, lang)),
                    escape(age(sig["read_ms"], now, lang)),
                ]
            )
        )
    return f'<div class="dev">{head}<table>{"".join(rows)}</table></div>'


def render_html(status: dict[str, Any], lang: str, refresh_s: int = 5) -> str:
    """The whole page; every text from the gateway (errors, names) is escaped."""
    now = status["now_ms"]
    other = "en" if lang == "zh-CN" else "zh-CN"
    summary = [
        (t("gateway", lang), status["gateway"]),
        (t("enterprise", lang), status["enterprise"]),
        (t("version", lang), status["version"]),
        (t("config_hash", lang), status["config_hash"]),
        (t("started", lang), clock(status["started_ms"], lang)),
    ]
    devices = "".join(_device_html(d, now, lang) for d in status["devices"])
    return (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{int(refresh_s)}">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{t('title', lang)} {escape(status['gateway'])}</title><style>{CSS}</style></head>"
        f"<body><h1>{t('title', lang)}: {escape(status['gateway'])}</h1>"
        f'<p class="muted">{escape(t("refresh", lang).format(n=refresh_s))} · '
        f'<a href="?lang={other}">{t("other_lang", lang)}</a> · '
        f'<a href="/status.json">status.json</a></p>'
        "<table>"
        + "".join(_row([escape(k), escape(str(v))]) for k, v in summary)
        + "</table>"
        + _outputs_html(status, lang)
        + f"<h2>{t('devices', lang)} ({len(status['devices'])})</h2>{devices}</body></html>"
    )


# ------------------------------------------------------------------------------ terminal


def print_terminal(status: dict[str, Any], lang: str = "en") -> None:
    """``shulian gateway status``: the same figures as rich tables."""
    from rich.console import Console
    from rich.markup import escape as esc
    from rich.table import Table

    console = Console()
    now = status["now_ms"]
    console.print(
        f"[bold]{t('gateway', lang)} {status['gateway']}[/] ({status['enterprise']}) "
        f"{t('version', lang)} {status['version']} · {t('config_hash', lang)} "
        f"{status['config_hash']} · {t('started', lang)} {clock(status['started_ms'], lang)}",
        highlight=False,
    )
    for out in status["outputs"]:
        broker = out["broker"]
        word = connection_word(broker["connected"], lang)
        error = broker["last_error"]
        console.print(
            f"{t('broker', lang)} ({out['name']}) {broker['url']}: "
            f"[{'green' if broker['connected'] else 'red'}]{word}[/] {t('since', lang)} "
            f"{clock(broker['since_ms'], lang)}"
            + (f"; {t('last_error', lang)}: {esc(error)}" if error else ""),
            highlight=False,
            markup=True,
        )
        console.print(
            f"{t('buffer', lang)}: {esc(buffer_line(out['buffer'], lang))}", highlight=False
        )
    devices = Table(title=t("devices", lang), show_lines=False)
    for key in ("device", "profile", "endpoint", "state", "last_good", "reads_per_s", "last_error"):
        devices.add_column(t(key, lang), overflow="fold")
    for device in status["devices"]:
        colour = "green" if device["connection"] == "connected" else "red"
        devices.add_row(
            esc(device["id"]),
            esc(device["profile"]),
            esc(device["endpoint"] + (f" unit {device['unit_id']}" if device["unit_id"] else "")),
            f"[{colour}]{connection_word(device['connection'], lang)}[/] {t('since', lang)} "
            f"{clock(device['since_ms'], lang)}",
            age(device["last_good_ms"], now, lang),
            shown(device["reads_per_s"]),
            esc(device["error"] or device["last_error"] or ""),
        )
    console.print(devices)
    values = Table(title=f"{t('raw', lang)} / {t('value', lang)}")
    for key in ("device", "signal", "raw", "value", "quality", "read_at"):
        values.add_column(t(key, lang), overflow="fold")
    for device in status["devices"]:
        for sig in device["signals"]:
            values.add_row(
                esc(device["id"]),
                esc(sig["signal"]),
                esc(raw_text(sig)),
                esc(
                    shown(sig["value"])
                    + (f" {sig['unit']}" if sig["unit"] and sig["value"] is not None else "")
                ),
                esc(quality_text(sig, lang)),
                age(sig["read_ms"], now, lang),
            )
    console.print(values)
