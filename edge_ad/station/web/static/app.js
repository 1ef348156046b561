// edge_ad station page: polls the JSON API, draws the score plot as SVG, posts changes with the token.
// Plain browser JavaScript, no build step.
"use strict";

const STATUS_MS = 1000, SCORES_MS = 2000, ALARMS_MS = 2000, PARTS_MS = 5000, RESULTS_MS = 1000, MIN_PLOT_S = 30;
const $ = (sel) => document.querySelector(sel);
const SVG = "http://www.w3.org/2000/svg";

function fmt(v, digits = 4) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (typeof v !== "number") return String(v);
  return Math.abs(v) >= 1000 ? v.toFixed(0) : Number(v.toPrecision(digits)).toString();
}

function duration(s) {
  s = Math.floor(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
}

function clock(t) {
  return t ? new Date(t * 1000).toLocaleTimeString() : "–";
}

async function getJSON(url) {
  const r = await fetch(url, { cache: "no-store" });
  if (r.status === 401) { window.location = "/login"; throw new Error("log in"); }
  if (!r.ok) throw new Error(`${url}: ${r.status}`);
  return r.json();
}

function every(ms, fn) {
  const run = async () => {
    try { await fn(); } catch (e) { console.warn(e); }
    setTimeout(run, ms);
  };
  run();
}

// ------------------------------------------------------------------------------------------ status
let changesOff = "";
let runningVersion = "";  // the version this page shows as running: every change names it (the server checks it)
let currentVersion = null;  // the version the parts table shows as `current`

async function refreshStatus() {
  const s = await getJSON("/api/status");
  const shown = {
    ...s,
    fps: fmt(s.fps, 3), threshold: fmt(s.threshold), uptime_s: duration(s.uptime_s),
    latency_ms_p50: fmt(s.latency_ms_p50, 3), latency_ms_p99: fmt(s.latency_ms_p99, 3),
    readiness: s.readiness ? (s.readiness.ready === null ? "not judged" : s.readiness.ready ? "ready" : "NOT ready")
                             + (s.readiness.reason ? `: ${s.readiness.reason}` : "")
                           : "not stated by the bundle",
    state: s.state + (s.fault ? `: ${s.fault}` : ""),
  };
  document.querySelectorAll("[data-k]").forEach((el) => {
    const v = shown[el.dataset.k];
    el.textContent = v === null || v === undefined || v === "" ? "–" : v;
  });
  $("#hdr-version").textContent = s.version || "–";
  runningVersion = s.version || "";
  const badge = $("#verdict");
  badge.textContent = s.verdict === "anomaly" ? "ANOMALY" : s.verdict === "ok" ? "OK" : "waiting";
  badge.className = "badge " + (s.verdict || "idle");
  const health = $("#health");
  health.textContent = s.healthy ? "frames flowing" : "no frames";
  health.className = s.healthy ? "ok" : "bad";
  $("#plot-minutes").textContent = fmt(s.plot_minutes, 3);
  if (s.changes_off !== changesOff) {
    changesOff = s.changes_off;
    $("#changes-off").textContent = changesOff ? `Changes are off: ${changesOff}.` : "";
    document.querySelectorAll("#change input, #change button, .rollback").forEach((el) => { el.disabled = !!changesOff; });
  }
}

// ------------------------------------------------------------------------------------------ score plot
function svgEl(name, attrs, text) {
  const el = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

async function refreshScores() {
  const d = await getJSON("/api/scores");
  const svg = $("#plot");
  const W = 1000, H = 200, PAD = 4;
  const top = Math.max(2 * d.threshold, ...d.points.map((p) => p[1]), 1e-9) * 1.05;
  // a station that started a minute ago fills the plot with that minute, not a sliver at the right edge
  const span = d.points.length ? Math.max(Math.min(d.span_s, d.now - d.points[0][0]), MIN_PLOT_S) : d.span_s;
  const x = (t) => ((t - (d.now - span)) / span) * W;
  const y = (v) => H - PAD - (v / top) * (H - 2 * PAD);
  svg.replaceChildren();
  svg.appendChild(svgEl("rect", { x: 0, y: y(top), width: W, height: y(d.threshold) - y(top), class: "over" }));
  if (d.points.length) {
    const pts = d.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    svg.appendChild(svgEl("polyline", { points: pts, class: "scores" }));
    // scores at or over the threshold as short red ticks, all in one path (cheap to draw, even for hundreds)
    const hits = d.points.filter((p) => p[1] >= d.threshold)
      .map((p) => `M${x(p[0]).toFixed(1)},${(y(p[1]) - 4).toFixed(1)}v8`).join("");
    if (hits) svg.appendChild(svgEl("path", { d: hits, class: "hit" }));
  }
  svg.appendChild(svgEl("line", { x1: 0, x2: W, y1: y(d.threshold), y2: y(d.threshold), class: "thr" }));
  svg.appendChild(svgEl("text", { x: W - 6, y: y(d.threshold) - 5, class: "label end" }, `threshold ${fmt(d.threshold)}`));
  svg.appendChild(svgEl("text", { x: 6, y: 16, class: "label" }, fmt(top, 3)));
  svg.appendChild(svgEl("text", { x: 6, y: H - 8, class: "label" }, span >= 120 ? `−${fmt(span / 60, 2)} min` : `−${Math.round(span)} s`));
  svg.appendChild(svgEl("text", { x: W - 6, y: H - 8, class: "label end" }, "now"));
}

// ------------------------------------------------------------------------------------------ triggered parts
let resultsKey = "";

async function refreshResults() {
  const d = await getJSON("/api/results");
  $("#parts-panel").hidden = d.mode !== "triggered";
  if (d.mode !== "triggered") return;
  $("#parts-ok").textContent = d.ok;
  $("#parts-nok").textContent = d.nok;
  $("#parts-error").textContent = d.error;
  $("#parts-p50").textContent = fmt(d.latency_ms_p50, 3);
  $("#parts-p99").textContent = fmt(d.latency_ms_p99, 3);
  const key = d.rows.map((r) => r.seq).join(",");
  if (key === resultsKey) return;
  resultsKey = key;
  const body = $("#results tbody");
  body.replaceChildren();
  if (!d.rows.length) {
    cell(body.insertRow(), "no parts yet").colSpan = 8;
    return;
  }
  for (const r of d.rows) {
    const row = body.insertRow();
    cell(row, clock(r.time));
    cell(row, r.part_id);
    cell(row, r.verdict.toUpperCase(), r.verdict === "ok" ? "ok" : "bad");
    cell(row, fmt(r.score));
    cell(row, r.regions);
    cell(row, r.source);
    cell(row, fmt(r.latency_ms, 3));
    cell(row, r.reason || (r.evidence ? r.evidence.split("/").pop() : ""));
  }
}

// ------------------------------------------------------------------------------------------ alarms
let alarmKey = "";

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function refreshAlarms() {
  const d = await getJSON("/api/alarms");
  $("#alarm-total").textContent = d.total;
  const key = d.rows.map((r) => r.id || r.time).join(",");
  if (key === alarmKey) return;
  alarmKey = key;
  const body = $("#alarms tbody");
  body.replaceChildren();
  if (!d.rows.length) {
    cell(body.insertRow(), "no alarms yet").colSpan = 7;
    return;
  }
  for (const r of d.rows) {
    const row = body.insertRow();
    row.className = "alarm";
    const thumb = row.insertCell();
    if (r.id) {
      row.dataset.id = r.id;
      const a = document.createElement("a");
      a.href = `/alarm/${encodeURIComponent(r.id)}`;
      const img = document.createElement("img");
      img.className = "thumb";
      img.alt = "evidence";
      img.src = `/evidence/${encodeURIComponent(r.id)}/thumb.jpg`;
      a.appendChild(img);
      thumb.appendChild(a);
      row.addEventListener("click", () => { window.location = a.href; });
    } else {
      thumb.textContent = "no evidence";
    }
    cell(row, r.time_iso ? r.time_iso.replace("T", " ").slice(0, 23) : clock(r.time));
    cell(row, fmt(r.score), "bad");
    cell(row, fmt(r.threshold));
    cell(row, r.boxes);
    cell(row, r.frame ?? "–");
    cell(row, r.model || "–");
  }
}

// ------------------------------------------------------------------------------------------ parts
let partsKey = "";

function metricsText(m) {
  const bits = [];
  if (m.val_false_alarm_rate !== undefined) bits.push(`false alarms ${(100 * m.val_false_alarm_rate).toFixed(1)} %`);
  if (m.image_auroc !== undefined) bits.push(`AUROC ${(100 * m.image_auroc).toFixed(1)}`);
  if (m.f1 !== undefined) bits.push(`F1 ${m.f1.toFixed(3)}`);
  return bits.join(", ") || "–";
}

async function refreshParts() {
  const d = await getJSON("/api/parts");
  const key = JSON.stringify(d);
  if (key === partsKey) return;
  partsKey = key;
  currentVersion = d.current;
  const body = $("#parts tbody");
  body.replaceChildren();
  if (!d.versioned || !d.versions.length) {
    cell(body.insertRow(), d.versioned ? `no versions of part ${d.part} yet` : d.changes_off, "muted").colSpan = 5;
    return;
  }
  for (const v of d.versions) {
    const row = body.insertRow();
    row.dataset.version = v.version;
    if (v.current) row.className = "current";
    cell(row, `v${v.version}${v.current ? " (current)" : ""}`);
    cell(row, (v.created || "").replace("T", " ").slice(5, 16));  // MM-DD HH:MM
    const c = v.threshold_change;
    cell(row, fmt(v.threshold) + (c ? ` (was ${fmt(c.old)}, ${c.who.split(" (")[0]})` : ""));
    cell(row, metricsText(v.metrics));
    const act = row.insertCell();
    if (!v.current) {
      const b = document.createElement("button");
      b.className = "rollback";
      b.textContent = `switch to v${v.version}`;
      b.disabled = !!d.changes_off;
      b.addEventListener("click", () => change("/api/rollback", { version: v.version, current: currentVersion }));
      act.appendChild(b);
    }
  }
}

// ------------------------------------------------------------------------------------------ changes
async function change(url, body) {
  const msg = $("#message");
  const token = $("#token").value;
  const who = $("#who").value.trim();
  if (!token || !who) {
    msg.textContent = "Enter your name and the token first.";
    msg.className = "bad";
    return;
  }
  sessionStorage.setItem("edge_ad_who", who);
  const send = (extra) => fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json", "X-Edge-Ad-Token": token },
    body: JSON.stringify({ ...body, who, running: runningVersion, ...extra }),
  });
  let r = await send({});
  let d = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  if (r.status === 409 && d.confirm_needed && window.confirm(`${d.error}.\n\nSet it anyway?`)) {
    r = await send({ confirm: true });
    d = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
  }
  msg.className = r.ok ? "ok" : "bad";
  msg.textContent = r.ok ? `Done: ${d.version} is current; the station is reloading it.` : `Refused: ${d.error}`;
  partsKey = "";
  refreshParts();
}

$("#change").addEventListener("submit", (e) => {
  e.preventDefault();
  change("/api/threshold", { threshold: Number($("#new-threshold").value) });
});
$("#who").value = sessionStorage.getItem("edge_ad_who") || "";

// The MJPEG stream never finishes loading: start it after the page's load event, reopen it when it breaks
// (the station restarting).
const live = $("#live");
live.addEventListener("error", () => {
  setTimeout(() => { live.src = `${live.dataset.src}?t=${Date.now()}`; }, 2000);
});
window.addEventListener("load", () => { live.src = live.dataset.src; });

every(STATUS_MS, refreshStatus);
every(SCORES_MS, refreshScores);
every(ALARMS_MS, refreshAlarms);
every(RESULTS_MS, refreshResults);
every(PARTS_MS, refreshParts);
