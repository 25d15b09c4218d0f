// The flyslice console: one document over server-sent events, redrawn on every change.
// No framework and no build step: the page is small and must work offline on an edge site.
"use strict";

// Build DOM from data with textContent only: names come from manifests and must never be HTML.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("data-")) el.setAttribute(k, String(v));
    else el[k] = v;
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const TIERS = ["cloud", "fog", "gateway"];
const fmtMs = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(2).replace(/\.?0+$/, "")} ms`);
const cpu = (m) => (m >= 1000 ? `${(m / 1000).toFixed(m % 1000 ? 2 : 0)}` : `${m}m`);
const mem = (b) => (b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(1)}Gi` : `${Math.round(b / 2 ** 20)}Mi`);

function bar(used, cap) {
  const pct = cap ? Math.min(100, (100 * used) / cap) : 0;
  const span = h("span");
  span.style.width = `${pct}%`;
  return h("div", { class: pct > 80 ? "bar hot" : "bar", title: `${pct.toFixed(0)} %` }, span);
}

function chip(inst, sliceKey) {
  const flavor = String(inst.flavor || "").toLowerCase();
  const label = inst.attachment ? `${inst.role}@${inst.attachment}` : inst.role;
  return h(
    "span",
    {
      class: `nf ${flavor}`,
      "data-instance": inst.instance,
      "data-flavor": flavor,
      "data-state": inst.state,
      "data-slice": sliceKey,
      title: `${sliceKey} ${inst.package} as ${flavor.toUpperCase()}: ${inst.state}`,
    },
    label,
  );
}

function drawTopology(doc) {
  const status = doc.status;
  const byNode = {};
  for (const s of status.slices) {
    for (const inst of s.instances || []) {
      (byNode[inst.node] = byNode[inst.node] || []).push(chip(inst, `${s.namespace}/${s.name}`));
    }
  }
  const live = Object.fromEntries((status.nodes || []).map((n) => [n.name, n]));
  const nodes = doc.topology.nodes || [];
  const tiers = [...TIERS, ...new Set(nodes.map((n) => n.tier).filter((t) => !TIERS.includes(t)))];
  const out = [];
  for (const tier of tiers) {
    const here = nodes.filter((n) => n.tier === tier);
    if (!here.length) continue;
    out.push(
      h("div", { class: "tier", "data-tier": tier },
        h("div", { class: "tier-name" }, tier),
        h("div", { class: "tier-nodes" },
          here.map((n) => {
            const obs = live[n.name] || {};
            const age = obs.heartbeatAgeS;
            return h("div", { class: age !== null && age > 30 ? "node stale" : "node", "data-node": n.name },
              h("b", {}, n.name),
              n.cpu ? [
                h("div", { class: "usage" }, `CPU ${cpu(n.cpu.usedMillis)} / ${cpu(n.cpu.capacityMillis)}`),
                bar(n.cpu.usedMillis, n.cpu.capacityMillis),
                h("div", { class: "usage" }, `memory ${mem(n.memory.usedBytes)} / ${mem(n.memory.capacityBytes)}`),
                bar(n.memory.usedBytes, n.memory.capacityBytes),
              ] : null,
              h("div", { class: "usage" },
                age === null || age === undefined ? "no heartbeat yet" : `heartbeat ${age.toFixed(1)} s ago`),
              h("div", { class: "nfs" }, byNode[n.name] || []));
          }))));
  }
  document.getElementById("tiers").replaceChildren(...out);
  document.getElementById("links").replaceChildren(
    ...(doc.topology.links || []).map((l) =>
      h("li", { "data-link": `${l.a}-${l.b}` },
        `${l.a} ↔ ${l.b}: ${fmtMs(l.latencyMs)}`, l.bandwidthMbps ? ` · ${l.bandwidthMbps} Mbit/s` : "")));
}

function drawSlices(doc) {
  const services = doc.topology.services || {};
  const cards = doc.status.slices.map((s) => {
    const key = `${s.namespace}/${s.name}`;
    const where = {};
    for (const i of s.instances || []) (where[i.role] = where[i.role] || []).push(`${i.node} ${String(i.flavor).toUpperCase()}`);
    const svc = services[`${s.namespace}/${s.networkService}`];
    const over = s.predictedLatencyMs !== null && s.budgetMs !== null && s.predictedLatencyMs > s.budgetMs;
    return h("div", { class: "slice", "data-slice": key },
      h("div", {}, h("b", {}, key), " ", h("span", { class: "phase", "data-phase": s.phase }, s.phase),
        s.networkService ? h("span", { class: "muted" }, ` service ${s.networkService}`) : null),
      h("div", { class: "latency" },
        "latency predicted ", h("span", { class: over ? "predicted reason" : "predicted" }, fmtMs(s.predictedLatencyMs)),
        ", observed ", h("span", { class: "observed" }, fmtMs(s.observedLatencyMs)),
        ", budget ", h("span", { class: "budget" }, fmtMs(s.budgetMs))),
      (s.paths || []).length ? h("ul", { class: "graph" }, s.paths.map((p) =>
        h("li", { "data-path": p.name }, `${p.name}: ${fmtMs(p.predictedLatencyMs)} of ${fmtMs(p.budgetMs)}`))) : null,
      (s.conditions || []).length ? h("div", { class: "conds" }, s.conditions.map((c) =>
        h("span", { "data-status": c.status, title: c.message || "" }, `${c.type}=${c.status}`))) : null,
      svc ? h("ul", { class: "graph", "aria-label": "service graph" }, svc.edges.map(([a, b]) =>
        h("li", {}, `${a} (${(where[a] || ["–"]).join(", ")}) → ${b} (${(where[b] || ["–"]).join(", ")})`))) : null,
      (s.reasons || []).map((r) => h("div", { class: "reason" }, r)));
  });
  document.getElementById("slices").replaceChildren(...(cards.length ? cards : [h("p", { class: "muted" }, "no slices")]));
}

function drawRole(status) {
  // The operator's standby replica holds no state: say so, and who leads, instead of an empty page.
  const el = document.getElementById("role");
  const standby = status.role === "standby";
  el.hidden = !standby;
  el.textContent = standby ? status.message : "";
  document.body.dataset.role = status.role || "";
}

function draw(doc) {
  const src = doc.status.source || {};
  drawRole(doc.status);
  document.getElementById("source").textContent =
    src.url ? `${src.url} @ ${src.lastAppliedRevision || "–"}${src.lastError ? ` (error: ${src.lastError})` : ""}` : "";
  drawTopology(doc);
  drawSlices(doc);
  document.getElementById("events").replaceChildren(
    ...[...(doc.status.events || [])].reverse().map((e) => h("li", {}, e)));
  document.body.dataset.passes = String(doc.status.passes ?? "");
}

function setLive(state) {
  const el = document.getElementById("live");
  el.dataset.state = state;
  el.textContent = state;
}

function connect() {
  // EventSource reconnects by itself after a restart of `flyslice up`; the pill says so meanwhile.
  const events = new EventSource("events");
  events.addEventListener("state", (e) => { setLive("live"); draw(JSON.parse(e.data)); });
  events.onerror = () => setLive(events.readyState === EventSource.CLOSED ? "offline" : "reconnecting");
}

fetch("state").then((r) => r.json()).then(draw).catch(() => setLive("offline"));
connect();
