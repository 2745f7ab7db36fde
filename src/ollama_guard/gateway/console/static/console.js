// ollama-guard console: confirmations, copy buttons and the live audit tail. No inline scripts (CSP).
"use strict";

document.addEventListener("submit", (event) => {
  const form = event.target.closest("form[data-confirm]");
  if (form && !window.confirm(form.dataset.confirm)) event.preventDefault();
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const text = document.getElementById(button.dataset.copy)?.textContent ?? "";
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(document.getElementById(button.dataset.copy));
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
});

function cell(text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text;
  return td;
}

function auditRow(r) {
  const tr = document.createElement("tr");
  tr.dataset.test = "audit-row";
  tr.className = `d-${r.decision} fresh`;
  const badge = document.createElement("span");
  badge.className = `badge ${r.decision}`;
  badge.textContent = r.decision;
  const decision = document.createElement("td");
  decision.appendChild(badge);
  if (r.count > 1) {
    const times = document.createElement("span");
    times.className = "muted small";
    times.textContent = ` ×${r.count}`;
    decision.appendChild(times);
  }
  tr.append(
    cell(String(r.seq), "mono"), cell(r.time.replace("T", " ").slice(0, 19), "mono small"), decision,
    cell(String(r.status), "num"), cell(r.key_name || "–"), cell(r.client, "mono"),
    cell(`${r.method} ${r.path}`, "mono"), cell(r.model || ""), cell(r.reason, "small"),
    cell(String(r.tokens), "num"), cell(Number(r.latency_ms).toFixed(1), "num"),
  );
  return tr;
}

function followAudit() {
  const table = document.getElementById("audit-table");
  const toggle = document.getElementById("live");
  const status = document.getElementById("live-status");
  if (!table || !toggle) return;
  let source = null;
  const shown = new Set();  // row ids shown live: a chunk cut off mid-way is sent again on reconnect
  const start = () => {
    const url = new URL(table.dataset.stream, window.location.href);
    url.searchParams.set("after", table.dataset.after || "");
    source = new EventSource(url);
    source.addEventListener("open", () => { status.textContent = "following"; });
    source.addEventListener("error", () => { status.textContent = "reconnecting…"; });
    source.addEventListener("audit", (event) => {
      const row = JSON.parse(event.data);
      if (event.lastEventId) table.dataset.after = event.lastEventId;
      if (shown.has(row.seq)) return;
      shown.add(row.seq);
      if (shown.size > 5000) shown.delete(shown.values().next().value);
      const body = table.tBodies[0];
      body.querySelector("tr.empty")?.remove();
      body.insertBefore(auditRow(row), body.firstChild);
      while (body.rows.length > 500) body.deleteRow(-1);
    });
  };
  const stop = () => { source?.close(); source = null; status.textContent = ""; };
  toggle.addEventListener("change", () => (toggle.checked ? start() : stop()));
  if (toggle.checked) start();
}

document.addEventListener("DOMContentLoaded", followAudit);
