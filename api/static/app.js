// RTRM dashboard: polls the JSON API every 2 s and redraws what changed.
// Every number shown comes from /v1/...; the watermark in the header is the cut they were
// computed at. Text from the API is inserted with textContent only (never as HTML).
"use strict";

const POLL_MS = 2000;
const state = { cut: null, asset: null, user: null, ladder: null, failures: 0 };

const $ = (id) => document.getElementById(id);
const usd = (v) => (v === null || v === undefined) ? "–" : Math.abs(v) >= 1e9 ? `$${(v / 1e9).toFixed(2)}B`
  : Math.abs(v) >= 1e6 ? `$${(v / 1e6).toFixed(2)}M` : Math.abs(v) >= 1e3 ? `$${(v / 1e3).toFixed(1)}k`
  : `$${v.toFixed(2)}`;
const num = (v, d = 4) => (v === null || v === undefined) ? "–" : Number(v).toLocaleString(undefined, { maximumFractionDigits: d });
const units = (v, decimals) => (v === null || v === undefined) ? "–"
  : (Number(v) / 10 ** decimals).toLocaleString(undefined, { maximumFractionDigits: 2 });
const short = (a) => (a && a.length > 14) ? `${a.slice(0, 8)}…${a.slice(-6)}` : (a || "–");

async function api(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error ? `${body.error.code}: ${body.error.message}` : response.statusText);
  return body;
}

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function rows(tableId, items, fill) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  for (const item of items) fill(body.insertRow(), item);
}

function stats(id, pairs) {
  const box = $(id);
  box.replaceChildren();
  for (const [key, value, cls] of pairs) {
    const div = document.createElement("div");
    div.className = "stat";
    const k = document.createElement("div"); k.className = "k"; k.textContent = key;
    const v = document.createElement("div"); v.className = `v ${cls || ""}`; v.textContent = value;
    div.append(k, v);
    box.append(div);
  }
}

const cutText = (w) => Object.entries(w).map(([c, b]) => `${c}@${b}`).join("  ");

// ------------------------------------------------------------------ chains
function drawStatus(status) {
  rows("chains", status.chains, (row, c) => {
    cell(row, c.chain_id); cell(row, c.name);
    cell(row, num(c.head, 0), "n"); cell(row, num(c.indexed_block, 0), "n");
    cell(row, num(c.lag_blocks, 0), `n ${c.lag_blocks > 5 ? "warn" : "ok"}`);
    cell(row, num(c.events, 0), "n"); cell(row, c.reorgs, "n");
    cell(row, c.paused_reason ? `paused: ${c.paused_reason}` : "ok", c.paused_reason ? "bad" : "ok");
  });
  $("watermark").textContent = `watermark ${cutText(status.snapshot.watermark || status.watermark)}`;
}

// ------------------------------------------------------------------ insurance
async function drawInsurance() {
  const [pool, payouts] = await Promise.all([api("/v1/insurance/pool"), api("/v1/insurance/payouts?limit=8")]);
  const d = pool.decimals;
  const ratio = pool.coverage_ratio;
  const level = pool.alert === "ok" ? "ok" : pool.alert === "warn" ? "warn" : pool.alert ? "bad" : "";
  stats("insurance", [
    ["pool", units(pool.pool_total, d)],
    ["requirement", pool.required === null ? "not sized" : units(pool.required, d)],
    ["coverage", ratio === null ? "–" : `${ratio.toFixed(2)}×`, level],
    ["open deficits", `${pool.deficits.open || 0} (${units(pool.open_deficit_amount, d)})`, pool.deficits.open ? "warn" : ""],
    ["paid", `${pool.paid_claims} (${units(pool.paid_amount, d)})`],
    ["awaiting approval", pool.payouts.approval_required || 0, pool.payouts.approval_required ? "warn" : ""],
  ]);
  rows("payouts", payouts.payouts, (row, p) => {
    cell(row, p.epoch); cell(row, p.chain_id); cell(row, p.tranche);
    cell(row, short(p.recipient), "addr"); cell(row, units(p.amount, payouts.decimals), "n");
    cell(row, p.state, p.state === "confirmed" ? "ok" : p.state === "failed" ? "bad" : "warn");
  });
}

// ------------------------------------------------------------------ exposure + ladder
function drawLadder(asset) {
  const levels = asset.ladder.filter((l) => l.move >= -0.9 && l.move <= 1.0);
  const data = [
    levels.map((l) => Math.round(l.move * 100)),
    levels.map((l) => l.collateral_usd || 0),
    levels.map((l) => l.debt_usd || 0),
  ];
  const box = $("ladder");
  const width = Math.max(320, box.clientWidth);
  const opts = {
    width, height: 300,
    scales: { x: { time: false } },
    axes: [
      { stroke: "#8a96b3", grid: { stroke: "#26304a" }, values: (u, v) => v.map((x) => `${x}%`) },
      { stroke: "#8a96b3", grid: { stroke: "#26304a" }, size: 70, values: (u, v) => v.map(usd) },
    ],
    series: [
      { label: `${asset.asset} move`, value: (u, v) => v === null ? "–" : `${v}%` },
      { label: "liquidatable collateral", stroke: "#f2545b", fill: "rgba(242,84,91,.25)",
        paths: uPlot.paths.bars({ size: [0.8] }), value: (u, v) => usd(v) },
      { label: "their debt", stroke: "#5b8def", width: 2, value: (u, v) => usd(v) },
    ],
  };
  if (state.ladder && state.ladder.asset === asset.asset) {
    state.ladder.plot.setData(data);
  } else {
    if (state.ladder) state.ladder.plot.destroy();
    box.replaceChildren();
    state.ladder = { asset: asset.asset, plot: new uPlot(opts, data, box) };
  }
}

async function drawExposure() {
  const report = await api("/v1/assets/exposure?top=5");
  const select = $("asset");
  const names = report.assets.map((a) => a.asset);
  if (select.options.length !== names.length) {
    select.replaceChildren(...names.map((n) => new Option(n, n)));
  }
  state.asset = names.includes(state.asset) ? state.asset : (names.includes("ETH") ? "ETH" : names[0]);
  select.value = state.asset;
  const asset = report.assets.find((a) => a.asset === state.asset);
  if (!asset) return report;
  stats("exposure", [
    [`${asset.asset} price`, usd(asset.price_usd)],
    ["collateral", usd(asset.total.collateral_usd)],
    ["debt", usd(asset.total.debt_usd)],
    ["net delta", `${num(asset.net_delta_coin, 2)} ${asset.asset}`],
    ["holders (HHI)", `${asset.n_holders} (${num(asset.hhi, 3)})`],
  ]);
  drawLadder(asset);
  return report;
}

// ------------------------------------------------------------------ contagion graph
function svg(tag, attrs, text) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

async function drawContagion(exposure) {
  // Depth: each root's collateral at the venues, so that a fire sale moves prices visibly.
  const depth = (exposure ? exposure.assets : []).filter((a) => a.total.collateral_usd > 0 && a.asset !== "USDC"
    && a.asset !== "USD").map((a) => `${a.asset}=${Math.max(1, a.total.collateral_usd).toExponential(3)}`).join(",");
  const report = await api(`/v1/systemic/contagion${depth ? `?depth=${encodeURIComponent(depth)}` : ""}`);
  const { nodes, edges } = report.network;
  const graph = $("graph");
  graph.replaceChildren();
  graph.append(svg("defs", {}));
  graph.firstChild.innerHTML = '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#5b8def"/></marker>';
  const worst = report.scenarios.reduce((a, s) => (!a || s.bad_debt_usd > a.bad_debt_usd) ? s : a, null);
  const distress = new Map((worst ? worst.contagion.nodes : []).map((n) => [n.protocol, n]));
  const place = new Map();
  nodes.forEach((n, i) => {
    const angle = (2 * Math.PI * i) / Math.max(1, nodes.length) - Math.PI / 2;
    place.set(n.id, [170 * Math.cos(angle), 150 * Math.sin(angle)]);
  });
  const maxEdge = Math.max(1, ...edges.map((e) => e.fire_sale_usd + e.direct_usd));
  for (const e of edges) {
    const [x1, y1] = place.get(e.source) || [0, 0];
    const [x2, y2] = place.get(e.target) || [0, 0];
    const w = 0.5 + 5 * (e.fire_sale_usd + e.direct_usd) / maxEdge;
    const line = svg("line", { x1, y1, x2: x1 + 0.88 * (x2 - x1), y2: y1 + 0.88 * (y2 - y1),
      stroke: "#5b8def", "stroke-opacity": 0.55, "stroke-width": w, "marker-end": "url(#arrow)" });
    line.append(svg("title", {}, `${e.source} → ${e.target}: fire sale ${usd(e.fire_sale_usd)}, direct ${usd(e.direct_usd)}`));
    graph.append(line);
  }
  const maxSize = Math.max(1, ...nodes.map((n) => n.collateral_usd || 0));
  for (const n of nodes) {
    const [x, y] = place.get(n.id);
    const h = (distress.get(n.id) || {}).distress_differential || 0;
    const color = h >= 1 ? "#f2545b" : h > 0.1 ? "#f5b942" : "#3ecf8e";
    const r = 8 + 18 * Math.sqrt((n.collateral_usd || 0) / maxSize);
    const circle = svg("circle", { cx: x, cy: y, r, fill: color, "fill-opacity": 0.85 });
    circle.append(svg("title", {}, `${n.id}: collateral ${usd(n.collateral_usd)}, debt ${usd(n.debt_usd)}, distress ${(100 * h).toFixed(1)}%`));
    graph.append(circle, svg("text", { x, y: y + r + 13, "text-anchor": "middle" }, n.id));
  }
  rows("scenarios", report.scenarios, (row, s) => {
    cell(row, s.scenario); cell(row, usd(s.liquidated_collateral_usd), "n");
    cell(row, usd(s.bad_debt_usd), `n ${s.bad_debt_usd > 0 ? "bad" : ""}`);
    cell(row, num(s.contagion.debtrank_differential, 3), "n");
    cell(row, s.contagion.defaulted_differential, "n");
  });
  $("graph-note").textContent = `Nodes: protocol@chain, sized by collateral, coloured by DebtRank distress in `
    + `${worst ? worst.scenario : "–"}; edges: fire-sale exposure through shared collateral `
    + `(market depth ${depth || "infinite"}).`;
}

// ------------------------------------------------------------------ user lookup
async function drawUser() {
  if (!state.user) return;
  const box = $("user"), error = $("user-error");
  try {
    const r = await api(`/v1/users/${encodeURIComponent(state.user)}/risk`);
    error.hidden = true; box.hidden = false;
    const hf = r.health_factor;
    stats("user-summary", [
      ["equity", usd(r.equity_usd)], ["collateral", usd(r.collateral_usd)], ["debt", usd(r.debt_usd)],
      ["maintenance margin", usd(r.maintenance_margin_usd)],
      ["margin ratio", num(r.margin_ratio, 3), r.margin_ratio >= 1 ? "bad" : r.margin_ratio > 0.8 ? "warn" : "ok"],
      ["health factor", hf === null ? "∞" : num(hf, 3), hf !== null && hf < 1 ? "bad" : hf !== null && hf < 1.1 ? "warn" : "ok"],
      ["VaR 99% 1d", usd(r.tail.var_99_usd)],
      ["watermark", cutText(r.watermark)],
    ]);
    rows("user-greeks", Object.entries(r.greeks), (row, [u, g]) => {
      const d = r.distance_to_liquidation[u];
      cell(row, u); cell(row, usd(g.spot_usd), "n"); cell(row, num(g.delta_coin), "n");
      cell(row, usd(g.delta_usd), "n"); cell(row, usd(g.vega_per_vol_point), "n"); cell(row, usd(g.theta_per_day), "n");
      cell(row, d.down_pct === null ? "–" : `${d.down_pct.toFixed(1)}%`, "n");
      cell(row, d.up_pct === null ? "–" : `+${d.up_pct.toFixed(1)}%`, "n");
    });
    const where = [...Object.entries(r.by_chain).map(([c, b]) => [`chain ${c}`, b]), ...Object.entries(r.by_protocol)]
      .filter(([, b]) => b.collateral_usd || b.debt_usd);
    rows("user-where", where, (row, [name, b]) => {
      cell(row, name); cell(row, usd(b.collateral_usd), "n"); cell(row, usd(b.debt_usd), "n"); cell(row, usd(b.equity_usd), "n");
    });
  } catch (e) {
    box.hidden = true; error.hidden = false; error.textContent = e.message;
  }
}

// ------------------------------------------------------------------ loop
async function refresh(force) {
  try {
    const status = await api("/v1/status");
    drawStatus(status);
    const cut = JSON.stringify(status.snapshot.watermark);
    if (force || cut !== state.cut) {
      state.cut = cut;
      const exposure = await drawExposure();
      await Promise.all([drawInsurance(), drawContagion(exposure), drawUser()]);
    }
    state.failures = 0;
    $("live").className = "live";
  } catch (e) {
    state.failures += 1;
    $("live").className = "live stale";
    $("live").title = `last update failed: ${e.message}`;
  }
}

$("asset").addEventListener("change", (ev) => { state.asset = ev.target.value; refresh(true); });
$("lookup").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.user = $("address").value.trim();
  window.history.replaceState(null, "", `#address=${encodeURIComponent(state.user)}`);
  drawUser();
});
window.addEventListener("resize", () => { if (state.ladder) state.ladder.plot.setSize({ width: $("ladder").clientWidth, height: 300 }); });
// A link such as /#address=0x… opens the page on that user's risk.
const linked = new URLSearchParams(window.location.hash.slice(1)).get("address");
if (linked) { state.user = linked; $("address").value = linked; }
refresh(true);
setInterval(() => refresh(false), POLL_MS);
