// The fleet page re-reads /api/fleet and redraws the station table and the rollouts (no framework, no build step).
"use strict";
const refreshMs = Number(document.body.dataset.refreshMs) || 2000;

function cell(text, key) {
  const td = document.createElement("td");
  td.dataset.k = key;
  td.textContent = text === null || text === undefined ? "" : String(text);
  return td;
}

function drawStations(doc) {
  const body = document.querySelector("#stations tbody");
  const rows = doc.stations.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.station = r.station;
    tr.className = r.state;
    doc.columns.forEach((c) => tr.appendChild(cell(r[c], c)));
    return tr;
  });
  body.replaceChildren(...rows);
  document.getElementById("count").textContent = `${doc.stations.length} stations`;
}

function drawRollouts(doc) {
  const box = document.getElementById("rollouts");
  const parts = Object.keys(doc.rollouts).sort();
  if (!parts.length) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "no rollout yet";
    box.replaceChildren(p);
    return;
  }
  box.replaceChildren(...parts.map((part) => {
    const ro = doc.rollouts[part];
    const div = document.createElement("div");
    div.className = "rollout";
    div.dataset.part = part;
    const h = document.createElement("h3");
    h.textContent = `${part}: v${ro.from} \u2192 v${ro.to} `;
    const st = document.createElement("span");
    st.className = "state";
    st.dataset.k = "state";
    st.textContent = ro.state;
    h.appendChild(st);
    const why = document.createElement("p");
    why.className = "muted";
    why.dataset.k = "reason";
    why.textContent = ro.reason || "";
    const table = document.createElement("table");
    const tb = document.createElement("tbody");
    (ro.groups || []).forEach((g) => {
      const tr = document.createElement("tr");
      tr.dataset.group = g.name;
      [g.name, g.state, `${(g.stations || []).length} station(s)`, g.reason || ""].forEach((t, i) =>
        tr.appendChild(cell(t, ["name", "state", "stations", "reason"][i])));
      tb.appendChild(tr);
    });
    table.appendChild(tb);
    div.append(h, why, table);
    return div;
  }));
}

async function refresh() {
  try {
    const r = await fetch("api/fleet", { cache: "no-store" });
    if (r.ok) {
      const doc = await r.json();
      drawStations(doc);
      drawRollouts(doc);
    }
  } catch (e) {
    // the page keeps its last state while the server is away
  }
  setTimeout(refresh, refreshMs);
}
setTimeout(refresh, refreshMs);
