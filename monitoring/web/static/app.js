/* The monitoring UI: fetch JSON from /api, draw tiles, tables and ECharts, follow live updates. */
"use strict";

const I18N = JSON.parse(document.getElementById("i18n").textContent);
const t = (key) => I18N[key] ?? key;
const body = document.body;
const LANG = body.dataset.lang;
const charts = {};
// Charts draw at once for people who ask for less motion (and for screenshots taken by tests).
const ANIMATE = !window.matchMedia("(prefers-reduced-motion: reduce)").matches;

function fmtNum(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Number(value).toLocaleString(LANG, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}
function fmtPct(value) {
  return value === null || value === undefined ? "–" : (value * 100).toFixed(1) + "%";
}
function fmtTime(iso) {
  if (!iso) return "–";
  return new Date(iso).toLocaleString(LANG, { hour12: false });
}
function esc(text) {
  return String(text ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
function kindName(kind) {  // machine kinds come from profiles: unknown ones show as they are
  return kind ? (I18N["kind." + kind] ?? kind) : "–";
}
function localName(row) {
  return LANG === "en" ? (row.name_en || row.name) : (row.name || row.name_en);
}

async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (response.status === 401) { window.location.href = "/login"; throw new Error("unauthorized"); }
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

/* ---- tiles ---- */
const ONE_ENTERPRISE = new Set(["enterprise", "device"]);  // no "enterprises: 1" under the device count
const TILE_FORMAT = {
  registered: (k) => [fmtNum(k.registered), ONE_ENTERPRISE.has(body.dataset.page) ? "" : `${t("kpi.enterprises")} ${fmtNum(k.enterprises)}`],
  networked_rate: (k) => [fmtPct(k.networked_rate), `${fmtNum(k.networked)} / ${fmtNum(k.registered)}`],
  online_rate: (k) => [fmtPct(k.online_rate), `${t("kpi.online")} ${fmtNum(k.online)}`],
  running_rate: (k) => [fmtPct(k.running_rate), `${t("kpi.running")} ${fmtNum(k.running)} · ${t("kpi.ran_today")} ${fmtNum(k.ran_today)}`],
  utilization: (k) => [fmtPct(k.utilization), ""],
  output: (k) => [fmtNum(k.output), `${t("kpi.good")} ${fmtNum(k.good)} · ${t("kpi.reject")} ${fmtNum(k.reject)}`],
  energy_kwh: (k) => [fmtNum(k.energy_kwh, 1), ""],
  kwh_per_part: (k) => [fmtNum(k.kwh_per_part, 3), ""],
  oee: (k) => [fmtPct(k.oee), ""],
  alarms_active: (k) => [fmtNum(k.alarms_active), ""],
};

function renderTiles(kpis) {
  for (const tile of document.querySelectorAll(".tile")) {
    const key = tile.dataset.kpi;
    const [value, sub] = TILE_FORMAT[key](kpis);
    const num = tile.querySelector(".num");
    if (num.textContent !== value) {
      num.textContent = value;
      tile.classList.remove("flash"); void tile.offsetWidth; tile.classList.add("flash");
    }
    tile.querySelector(".sub").textContent = sub;
  }
}

/* ---- charts ---- */
function chart(id) {
  const el = document.getElementById(id);
  if (!el || !window.echarts) return null;
  if (!charts[id]) charts[id] = echarts.init(el, "dark", { renderer: "canvas" });
  return charts[id];
}
window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
const AXIS = { axisLine: { lineStyle: { color: "#24406b" } }, splitLine: { lineStyle: { color: "#1b3050" } } };
const BASE = { backgroundColor: "transparent", textStyle: { fontFamily: "inherit" }, tooltip: { trigger: "axis" },
  grid: { left: 60, right: 60, top: 36, bottom: 30 }, animation: ANIMATE };

function renderTrend(data) {
  const c = chart("trend-chart");
  if (!c) return;
  const days = data.days.map((d) => d.day.slice(5));
  c.setOption({
    ...BASE,
    legend: { data: [t("trend.output"), t("trend.energy"), t("trend.utilization")], top: 0 },
    xAxis: { type: "category", data: days, ...AXIS },
    yAxis: [
      { type: "value", name: t("unit.parts") || t("trend.output"), ...AXIS },
      { type: "value", name: "kWh", ...AXIS, splitLine: { show: false } },
      { type: "value", show: false, min: 0, max: 1 },
    ],
    series: [
      { name: t("trend.output"), type: "bar", data: data.days.map((d) => d.output), itemStyle: { color: "#3fc1ff" } },
      { name: t("trend.energy"), type: "line", yAxisIndex: 1, data: data.days.map((d) => d.energy_kwh), itemStyle: { color: "#ff9f1a" } },
      { name: t("trend.utilization"), type: "line", yAxisIndex: 2, data: data.days.map((d) => d.utilization), itemStyle: { color: "#2ecc71" },
        tooltip: { valueFormatter: (v) => fmtPct(v) } },
    ],
  });
}

function renderSegments(segments) {
  const c = chart("segment-chart");
  if (!c) return;
  const names = segments.map((s) => `${s.code} ${localName(s)}`);
  const metric = (key) => segments.map((s) => s.kpis[key]);
  c.setOption({
    ...BASE,
    grid: { left: 60, right: 20, top: 36, bottom: 60 },
    legend: { top: 0, data: [t("kpi.online_rate"), t("kpi.running_rate"), t("kpi.utilization")] },
    tooltip: { trigger: "axis", valueFormatter: (v) => fmtPct(v) },
    xAxis: { type: "category", data: names, ...AXIS, axisLabel: { interval: 0, width: 160, overflow: "break" } },
    yAxis: { type: "value", max: 1, axisLabel: { formatter: (v) => `${v * 100}%` }, ...AXIS },
    series: [
      { name: t("kpi.online_rate"), type: "bar", data: metric("online_rate") },
      { name: t("kpi.running_rate"), type: "bar", data: metric("running_rate") },
      { name: t("kpi.utilization"), type: "bar", data: metric("utilization") },
    ],
  });
}

function renderAlarms(alarms) {
  const c = chart("alarm-chart");
  if (!c) return;
  const entries = Object.entries(alarms.by_kind || {});
  c.setOption({
    ...BASE,
    tooltip: { trigger: "item" },
    legend: { bottom: 0, type: "scroll" },
    graphic: entries.length ? [] : [{ type: "text", left: "center", top: "middle",
      style: { text: t("alarm.none"), fill: "#2ecc71", fontSize: 20 } }],
    series: [{ type: "pie", radius: ["40%", "68%"], center: ["50%", "45%"], showEmptyCircle: false,
      data: entries.map(([kind, value]) => ({ name: kindName(kind), value })), label: { formatter: "{b}: {c}" } }],
  }, true);  // replace, not merge: the "none" text must go when an alarm comes
}

function warningBadge(colour) {
  return `<span class="badge w-${esc(colour)}">${esc(t("warning." + colour))}</span>`;
}

function renderWarnings(warnings) {
  const tbody = document.querySelector("#warning-table tbody");
  if (!tbody) return;
  const rows = warnings.filter((w) => w.colour !== "green" && w.colour !== "grey");
  tbody.innerHTML = rows.length ? rows.map((w) => `<tr><td><a href="/enterprises/${encodeURIComponent(w.enterprise)}">${esc(localName(w))}</a></td>` +
    `<td>${esc(LANG === "en" ? w.district_name_en : w.district_name)}</td><td>${warningBadge(w.colour)}</td><td>${esc(LANG === "en" ? w.reason_en : w.reason)}</td></tr>`).join("")
    : `<tr><td colspan="4">${esc(t("warning.none"))}</td></tr>`;
}

function renderDistricts(districts) {
  const tbody = document.querySelector("#district-table tbody");
  if (!tbody) return;
  tbody.innerHTML = districts.map((d) => {
    const k = d.kpis;
    return `<tr><td><a href="/districts/${encodeURIComponent(d.code)}">${esc(localName(d))}</a></td><td class="num">${fmtNum(k.enterprises)}</td>` +
      `<td class="num">${fmtNum(k.registered)}</td><td class="num">${fmtPct(k.networked_rate)}</td><td class="num">${fmtPct(k.online_rate)}</td>` +
      `<td class="num">${fmtPct(k.running_rate)}</td><td class="num">${fmtPct(k.utilization)}</td><td class="num">${fmtNum(k.output)}</td><td class="num">${fmtNum(k.energy_kwh, 1)}</td></tr>`;
  }).join("");
}

function renderEnterprises(enterprises, kind) {
  const tbody = document.querySelector("#enterprise-table tbody");
  if (!tbody) return;
  tbody.innerHTML = enterprises.map((e) => {
    const k = e.kpis;
    const where = kind === "segment" ? (LANG === "en" ? e.district_name_en : e.district_name) : e.segment;
    const flags = (e.flags || []).map((f) => `<span class="flag">${esc(t("flag." + f))}</span>`).join("");
    return `<tr><td><a href="/enterprises/${encodeURIComponent(e.id)}">${esc(localName(e))}</a></td><td>${esc(where)}</td><td>${flags}</td>` +
      `<td class="num">${fmtNum(k.registered)}</td><td class="num">${fmtPct(k.online_rate)}</td><td class="num">${fmtPct(k.utilization)}</td>` +
      `<td class="num">${fmtNum(k.output)}</td><td class="num">${fmtNum(k.energy_kwh, 1)}</td><td>${e.warning ? warningBadge(e.warning.colour) : ""}</td></tr>`;
  }).join("");
}

function stateBadge(state) {
  return `<span class="badge state-${esc(state)}">${esc(t("state." + state))}</span>`;
}

function renderDevices(devices) {
  const tbody = document.querySelector("#device-table tbody");
  if (!tbody) return;
  tbody.innerHTML = devices.map((d) => {
    const k = d.kpis || {};
    return `<tr><td><a href="${devicePath("", d.enterprise, d.id)}">${esc(d.name || d.id)}</a></td><td>${esc(kindName(d.machine_kind))}</td><td>${esc(d.line)}</td>` +
      `<td>${stateBadge(d.state)}</td><td>${fmtTime(d.last_seen)}</td><td class="num">${fmtPct(k.utilization)}</td>` +
      `<td class="num">${fmtNum(k.output)}</td><td class="num">${fmtNum(k.energy_kwh, 1)}</td></tr>`;
  }).join("");
}

/* A device is addressed as enterprise + device id, in pages and in the API alike. */
function devicePath(prefix, enterprise, device) {
  return `${prefix}/enterprises/${encodeURIComponent(enterprise)}/devices/${encodeURIComponent(device)}`;
}
function scopeDevicePath(prefix) {
  const [enterprise, device] = body.dataset.scope.split(":")[1].split("/");
  return devicePath(prefix, enterprise, device);
}

const STATE_COLOURS = { running: "#2ecc71", idle: "#d4b106", setup: "#3d8bfd", fault: "#ff4d4f", off: "#555", offline: "#7d8799", online: "#13a8a8" };

function renderTimeline(intervals, start, end) {
  const c = chart("timeline-chart");
  if (!c) return;
  const data = intervals.map((iv) => ({ value: [0, Date.parse(iv.start), Date.parse(iv.end || end), iv.state],
    itemStyle: { color: STATE_COLOURS[iv.state] || "#888" } }));
  c.setOption({
    ...BASE,
    grid: { left: 20, right: 20, top: 10, bottom: 30 },
    tooltip: { formatter: (p) => `${t("state." + p.value[3])}<br>${fmtTime(new Date(p.value[1]).toISOString())} – ${fmtTime(new Date(p.value[2]).toISOString())}` },
    xAxis: { type: "time", min: Date.parse(start), max: Date.parse(end), ...AXIS, axisLabel: { hideOverlap: true } },
    yAxis: { type: "category", data: [""], show: false },
    series: [{ type: "custom", encode: { x: [1, 2], y: 0 }, data,
      renderItem: (params, api) => {
        const a = api.coord([api.value(1), 0]);
        const b = api.coord([api.value(2), 0]);
        const h = api.size([0, 1])[1] * 0.6;
        return { type: "rect", shape: { x: a[0], y: a[1] - h / 2, width: Math.max(b[0] - a[0], 1), height: h }, style: api.style() };
      } }],
  });
}

function signalValue(s) {
  if (typeof s.value === "number") return fmtNum(s.value, 2);
  if (s.signal === "machine_state" && I18N["state." + s.value]) return esc(t("state." + s.value));
  return esc(s.value);
}

/* A signal by its meaning in the page's language; the id of a profile's signal (spindle_speed)
   only in the tooltip. A vendor's custom signal keeps its tag (sim:cabinet_fan_speed) in view:
   it is the name the vendor's documentation uses. */
function signalLabel(s) {
  return (LANG === "en" ? s.meaning : s.zh) || s.meaning || s.signal;
}

function renderSignals(signals) {
  const tbody = document.querySelector("#signal-table tbody");
  if (!tbody) return;
  tbody.innerHTML = signals.length ? signals.map((s) => `<tr><td title="${esc(s.signal)}">${s.custom ? `${esc(s.signal)} <span class="help">${esc(signalLabel(s))}</span>` : esc(signalLabel(s))}${s.custom ? ` <span class="help custom-signal">(${esc(t("signal.custom"))})</span>` : ""}</td>` +
    `<td class="num">${signalValue(s)} ${esc(s.unit)}</td><td>${fmtTime(s.ts)}</td></tr>`).join("")
    : `<tr><td colspan="3">${esc(t("device.no_data"))}</td></tr>`;
  const select = document.getElementById("series-signal");
  if (select && !select.options.length) {
    const numeric = signals.filter((s) => typeof s.value === "number");
    select.innerHTML = numeric.map((s) => `<option value="${esc(s.signal)}">${esc(signalLabel(s))}</option>`).join("");
    select.addEventListener("change", () => loadSeries(select.value));
    if (numeric.length) loadSeries(numeric[0].signal);
  }
}

async function loadSeries(signal) {
  const c = chart("series-chart");
  if (!c || !signal) return;
  const data = await api(`${scopeDevicePath("/api")}/series?signal=${encodeURIComponent(signal)}&hours=6`);
  c.setOption({
    ...BASE,
    xAxis: { type: "time", ...AXIS, axisLabel: { hideOverlap: true } },
    yAxis: { type: "value", scale: true, ...AXIS },
    series: [{ name: signal, type: "line", showSymbol: false, data: data.points.map((p) => [p.ts, p.avg]) }],
  }, true);
}

/* ---- a service provider's enterprises ---- */
function renderProvider(data) {
  const served = data.served;
  const devices = served.reduce((n, e) => n + e.registered, 0);
  const online = served.reduce((n, e) => n + e.online, 0);
  const gateways = served.flatMap((e) => e.gateways);
  const gatewaysOnline = gateways.filter((g) => g.online).length;
  document.getElementById("served-count").textContent = fmtNum(served.length);
  document.getElementById("served-devices").textContent = fmtNum(devices);
  document.getElementById("served-online").textContent = devices ? fmtPct(online / devices) : "–";
  document.getElementById("served-online-sub").textContent = `${t("kpi.online")} ${fmtNum(online)}`;
  document.getElementById("served-gateways").textContent = fmtNum(gateways.length);
  document.getElementById("served-gateways-sub").textContent = `${t("gateway.online")} ${fmtNum(gatewaysOnline)}`;
  document.getElementById("served-none").hidden = served.length > 0;
  document.getElementById("served").innerHTML = served.map((e) => {
    const states = Object.entries(e.states).map(([state, count]) => `${stateBadge(state)} ${fmtNum(count)}`).join(" ");
    const gatewayRows = e.gateways.map((g) => `<tr><td>${esc(g.id)}</td><td><span class="badge state-${g.online ? "running" : "offline"}">` +
      `${esc(t(g.online ? "gateway.online" : "gateway.offline"))}</span></td><td>${fmtTime(g.last_seen_at)}</td><td class="num">${fmtNum(g.devices)}</td></tr>`).join("");
    const deviceRows = e.devices.map((d) => `<tr><td>${esc(d.name || d.id)}</td><td>${esc(kindName(d.machine_kind))}</td><td>${esc(d.line)}</td>` +
      `<td>${stateBadge(d.state)}</td><td>${fmtTime(d.last_seen)}</td></tr>`).join("");
    return `<div class="card wide served-enterprise" data-enterprise="${esc(e.id)}"><h2>${esc(localName(e))}` +
      `<span class="help">${esc(LANG === "en" ? e.district_name_en : e.district_name)} · ${esc(e.segment)}</span></h2>` +
      `<p class="meta">${t("kpi.registered")} ${fmtNum(e.registered)} · ${t("kpi.online")} ${fmtNum(e.online)} ${states}</p>` +
      `<div class="scroll"><table class="table gateway-table"><thead><tr><th>${esc(t("col.gateway"))}</th><th>${esc(t("col.state"))}</th>` +
      `<th>${esc(t("col.last_seen"))}</th><th>${esc(t("kpi.registered"))}</th></tr></thead><tbody>${gatewayRows}</tbody></table>` +
      `<table class="table device-status-table"><thead><tr><th>${esc(t("col.device"))}</th><th>${esc(t("col.kind"))}</th><th>${esc(t("col.line"))}</th>` +
      `<th>${esc(t("col.state"))}</th><th>${esc(t("col.last_seen"))}</th></tr></thead><tbody>${deviceRows}</tbody></table></div></div>`;
  }).join("");
}

/* ---- the fleet console: every gateway of a provider's enterprises ---- */
let fleetData = null;
const FLEET_SORT = {
  problems: (a, b) => b.problems.length - a.problems.length || a.enterprise_id.localeCompare(b.enterprise_id) || a.id.localeCompare(b.id),
  enterprise: (a, b) => a.enterprise_id.localeCompare(b.enterprise_id) || a.id.localeCompare(b.id),
  state: (a, b) => Number(a.online) - Number(b.online) || a.id.localeCompare(b.id),
  buffer: (a, b) => (b.buffer_samples ?? -1) - (a.buffer_samples ?? -1) || a.id.localeCompare(b.id),
};
function fmtAge(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  return seconds < 120 ? `${fmtNum(seconds)} s` : seconds < 7200 ? `${fmtNum(seconds / 60)} min` : `${fmtNum(seconds / 3600, 1)} h`;
}
function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  return n < 1024 ? `${fmtNum(n)} B` : n < 1048576 ? `${fmtNum(n / 1024, 1)} KiB` : `${fmtNum(n / 1048576, 1)} MiB`;
}
function fleetFilters() {
  return Object.fromEntries(["enterprise", "state", "problem", "sort"].map((k) => [k, document.getElementById(`fleet-${k}`).value]));
}
function fleetShown(g, f) {
  if (f.enterprise && g.enterprise_id !== f.enterprise) return false;
  if (f.state && (f.state === "online") !== g.online) return false;
  if (f.problem === "any") return g.problems.length > 0;
  return !f.problem || g.problems.includes(f.problem);
}
function fleetDeviceRow(d) {
  return `<tr class="fleet-device${d.connection !== "connected" || d.error ? " trouble" : ""}" data-device="${esc(d.id)}"><td>${esc(d.name || d.id)}</td>` +
    `<td><span class="badge state-${d.connection === "connected" ? "running" : "offline"}">${esc(t("connection." + d.connection))}</span></td>` +
    `<td>${fmtTime(d.last_good_at)}</td><td class="num">${fmtNum(d.reads_per_s, 1)}</td><td class="device-error">${esc(d.error || "")}</td></tr>`;
}
function fleetCard(g) {
  const problems = g.problems.map((p) => `<span class="badge problem problem-${p}">${esc(t("problem." + p))}</span>`).join(" ") ||
    `<span class="badge state-running">${esc(t("fleet.healthy"))}</span>`;
  const buffer = g.buffer_samples === null ? "–" : `${fmtNum(g.buffer_samples)} ${t("fleet.buffer_samples")} · ${fmtBytes(g.buffer_bytes)}` +
    (g.buffer_fill !== null ? ` (${fmtPct(g.buffer_fill)})` : "") + ` · ${t("fleet.oldest")} ${fmtAge(g.buffer_oldest_age_s)}`;
  return `<div class="card wide fleet-gateway${g.problems.length ? " stands-out" : ""}" data-gateway="${esc(g.enterprise_id)}/${esc(g.id)}">` +
    `<h2>${esc(g.id)} <span class="badge gateway-state state-${g.online ? "running" : "offline"}">${esc(t(g.online ? "gateway.online" : "gateway.offline"))}</span>` +
    `<span class="help">${esc(LANG === "en" ? (g.enterprise_name_en || g.enterprise_name) : (g.enterprise_name || g.enterprise_name_en))}</span></h2>` +
    `<p class="meta"><span class="since">${t("fleet.since")} ${fmtTime(g.since)}</span> · ${t("fleet.version")} ${esc(g.version || "–")} · ` +
    `${t("fleet.buffer")} <span class="buffer">${buffer}</span> · ${t("fleet.dropped")} <span class="dropped">${fmtNum(g.buffer_dropped_samples)}</span></p>` +
    `<p class="meta config">${t("fleet.config")}: ${t("fleet.config.assigned")} <span class="config-assigned">${esc(g.config_assigned ?? "–")}</span> · ` +
    `${t("fleet.config.applied")} <span class="config-applied">${esc(g.config_applied ?? "–")}</span></p>` +
    (g.config_refusal ? `<div class="config-refusal"><p>${esc(t("fleet.config.refused"))} ${esc(g.config_refusal.revision)}</p><ul>` +
      g.config_refusal.messages.map((m) => `<li>${esc(m)}</li>`).join("") + "</ul></div>" : "") +
    `<p class="problems">${problems}</p>` +
    `<div class="scroll"><table class="table fleet-devices"><thead><tr><th>${esc(t("col.device"))}</th><th>${esc(t("fleet.connection"))}</th>` +
    `<th>${esc(t("fleet.last_good"))}</th><th>${esc(t("fleet.reads_per_s"))}</th><th>${esc(t("fleet.last_error"))}</th></tr></thead>` +
    `<tbody>${g.devices.map(fleetDeviceRow).join("")}</tbody></table></div></div>`;
}
function drawFleet() {
  if (!fleetData) return;
  const f = fleetFilters();
  const select = document.getElementById("fleet-enterprise");
  const enterprises = [...new Set(fleetData.gateways.map((g) => g.enterprise_id))].sort();
  for (const id of enterprises) {
    if (![...select.options].some((o) => o.value === id)) select.add(new Option(id, id));
  }
  const shown = fleetData.gateways.filter((g) => fleetShown(g, f)).sort(FLEET_SORT[f.sort]);
  document.getElementById("fleet").innerHTML = shown.map(fleetCard).join("");
  document.getElementById("fleet-none").hidden = shown.length > 0;
  document.getElementById("fleet-count").textContent = `${fmtNum(shown.length)} / ${fmtNum(fleetData.gateways.length)} ${t("fleet.count")}`;
}
function renderFleet(data) { fleetData = data; drawFleet(); }
async function loadDeadLetters() {
  const key = body.dataset.scope.split(":")[1];
  const data = await api(`/api/fleet/${encodeURIComponent(key)}/dead-letters`);
  const table = document.getElementById("dead-letters");
  table.hidden = false;
  table.querySelector("tbody").innerHTML = data.dead_letters.map((d) => `<tr><td>${fmtTime(d.received_at)}</td><td>${esc(d.enterprise_id)}</td>` +
    `<td>${esc(d.gateway_id)}</td><td>${esc(d.reason)}</td><td class="num">${fmtNum(d.samples)}</td><td>${esc(d.detail)}</td></tr>`).join("") ||
    `<tr><td colspan="6">${esc(t("fleet.dead_letters.none"))}</td></tr>`;
}
function wireFleet() {
  if (body.dataset.page !== "fleet") return;
  for (const k of ["enterprise", "state", "problem", "sort"]) document.getElementById(`fleet-${k}`).addEventListener("change", drawFleet);
  document.getElementById("dead-letters-load").addEventListener("click", () => loadDeadLetters().catch((e) => console.error(e)));
}

/* ---- pages ---- */
// Today's output, energy and hours come from the last KPI refresh (about once a minute); say up to
// when. Online, running and alarms are live whatever this says.
function renderThrough(win) {
  const el = document.getElementById("figures-through");
  if (!el || !win) return;
  el.hidden = !(win.includes_now && win.live === false);
  if (el.hidden) return;
  const end = new Date(win.end).toLocaleTimeString(LANG, { hour12: false, hour: "2-digit", minute: "2-digit" });
  el.textContent = `${t("kpi.through")} ${end}`;
  el.title = t("kpi.through_hint");
}

function renderPayload(page, data) {
  renderThrough(data.window);
  if (data.summary) renderTiles(data.summary);
  if (page === "overview") {
    renderSegments(data.segments); renderDistricts(data.districts);
    renderWarnings(data.warnings); renderAlarms(data.alarms);
  }
  if (page === "provider") { renderProvider(data); return; }
  if (page === "fleet") { renderFleet(data); return; }
  // The device list was drawn because the caller could see device data; a payload without it
  // means that access ended (grant withdrawn): reload, and the page comes back without the list.
  if (page === "enterprise" && document.getElementById("device-table") && !data.devices) {
    window.location.reload(); return;
  }
  if (data.enterprises) renderEnterprises(data.enterprises, page);
  if (data.devices) renderDevices(data.devices);
  if (page === "device") {
    renderSignals(data.signals || []);
    renderTimeline(data.intervals || [], data.window.start, data.window.end);
    const badge = document.getElementById("device-state");
    badge.className = `badge state-${data.state}`; badge.textContent = t("state." + data.state);
  }
}

const PAGE_SOURCES = {
  overview: () => "/api/overview",
  segment: (key) => `/api/segments/${encodeURIComponent(key)}`,
  district: (key) => `/api/districts/${encodeURIComponent(key)}`,
  enterprise: (key) => `/api/enterprises/${encodeURIComponent(key)}`,
  device: () => scopeDevicePath("/api"),
  provider: (key) => `/api/providers/${encodeURIComponent(key)}`,
  fleet: (key) => `/api/fleet/${encodeURIComponent(key)}`,
};

async function loadPage(page) {
  const key = body.dataset.scope.split(":")[1];
  renderPayload(page, await api(PAGE_SOURCES[page](key)));
  if (document.getElementById("trend-chart")) {
    const scope = body.dataset.scope || "city";
    renderTrend(await api(`/api/trend?scope=${encodeURIComponent(scope)}&days=30`));
  }
  if (page === "enterprise" && document.getElementById("device-table")) {
    renderDevices((await api(`/api/enterprises/${encodeURIComponent(key)}/devices`)).devices);
  }
  // The first screen has its numbers: browser tests and bench/monitoring.py wait for this.
  body.dataset.filled = "true";
  follow(page);
}

function follow(page) {
  const scope = body.dataset.scope || "city";
  const source = new EventSource(`/api/live?scope=${encodeURIComponent(scope)}`);
  const badge = document.getElementById("live");
  const text = document.getElementById("live-text");
  source.addEventListener("update", (event) => {
    renderPayload(page, JSON.parse(event.data));
    badge.hidden = false; badge.classList.remove("lost");
    text.textContent = `${t("live.connected")} · ${t("live.updated")} ${new Date().toLocaleTimeString(LANG, { hour12: false })}`;
    body.dataset.updates = String(Number(body.dataset.updates || 0) + 1);
  });
  // The server closes the stream when the caller lost access (signed out, token revoked,
  // grant withdrawn): reload, and the server answers with the sign-in or the error page.
  source.addEventListener("closed", (event) => {
    source.close();
    const reason = JSON.parse(event.data);
    window.location.href = reason.code === "unauthorized" ? "/login" : window.location.pathname;
  });
  source.onerror = () => { badge.hidden = false; badge.classList.add("lost"); text.textContent = t("live.lost"); };
}

function wireHeader() {
  document.getElementById("lang-switch").addEventListener("click", (event) => {
    document.cookie = `shulian_lang=${event.target.dataset.next}; path=/; max-age=31536000; samesite=strict`;
    window.location.reload();
  });
  const signout = document.getElementById("signout");
  if (signout) signout.addEventListener("click", async () => {
    await fetch("/api/auth/session", { method: "DELETE", credentials: "same-origin" });
    window.location.href = "/login";
  });
}

function wireLogin() {
  document.getElementById("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = document.getElementById("token").value.trim();
    const response = await fetch("/api/auth/session", { method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json" }, body: JSON.stringify({ token }) });
    if (response.ok) {
      const me = await response.json();
      window.location.href = me.home;
    } else {
      document.getElementById("login-error").hidden = false;
    }
  });
}

function wireGrant() {
  const button = document.getElementById("grant-toggle");
  if (!button) return;
  button.addEventListener("click", async () => {
    const granted = document.getElementById("grant-state").dataset.granted === "true";
    const key = body.dataset.scope.split(":")[1];
    await fetch(`/api/enterprises/${encodeURIComponent(key)}/grants/bureau`, { method: granted ? "DELETE" : "PUT", credentials: "same-origin" });
    window.location.reload();
  });
}

// A page restored from the back-forward cache would show what it showed before sign-out:
// ask the server again instead (pages and data are also sent with Cache-Control: no-store).
window.addEventListener("pageshow", (event) => { if (event.persisted) window.location.reload(); });

document.addEventListener("DOMContentLoaded", () => {
  wireHeader();
  const page = body.dataset.page;
  if (page === "login") { wireLogin(); return; }
  wireGrant();
  wireFleet();
  if (PAGE_SOURCES[page]) loadPage(page).catch((error) => console.error(error));
});
