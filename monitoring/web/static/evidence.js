/* The evidence page's baseline form: POST the entry as JSON, then reload to show it in force. */
"use strict";

function baselineEntry(form) {
  const data = new FormData(form);
  const entry = { method: data.get("method") };
  for (const [name, value] of data.entries()) {
    if (name === "method" || value === "") continue;
    entry[name] = ["source", "note", "diagnosed_on"].includes(name) ? value : Number(value);
  }
  if (entry.method === "measured") {  // a measured baseline takes only its number of days
    for (const name of Object.keys(entry)) if (!["method", "measured_days", "note"].includes(name)) delete entry[name];
  } else {
    delete entry.measured_days;
  }
  return entry;
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("baseline-form");
  if (!form) return;
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch(`/api/enterprises/${encodeURIComponent(form.dataset.enterprise)}/baselines`, {
      method: "POST", credentials: "same-origin",
      headers: { "content-type": "application/json" }, body: JSON.stringify(baselineEntry(form)) });
    if (response.ok) { window.location.reload(); return; }
    const error = document.getElementById("baseline-error");
    const i18n = JSON.parse(document.getElementById("i18n").textContent);
    const body = await response.json().catch(() => ({}));
    error.textContent = `${i18n["evidence.enter.failed"]} ${body.message || response.status}`;
    error.hidden = false;
  });
});
