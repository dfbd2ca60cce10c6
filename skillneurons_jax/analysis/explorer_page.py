"""The neuron explorer's HTML, CSS and JavaScript (analysis.explorer fills in __TITLE__ and __DATA__).

Plain DOM and <canvas>, no library, no network: the page works opened from the file system. Elements that tests
read carry ids and data-* attributes (#task, #map, #layer-input, #neuron-input, #go, #details, rows
[data-task] with cells [data-field] whose data-value holds the full-precision number).
"""

PAGE_TEMPLATE = r"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#222;background:#fafafa}
header{padding:10px 16px;background:#263238;color:#fff}
header h1{font-size:18px;margin:0 0 4px 0}
header p{margin:0;font-size:13px;color:#cfd8dc}
.controls{display:flex;flex-wrap:wrap;gap:14px;align-items:center;padding:10px 16px;background:#eceff1}
.controls label{font-size:13px}
.controls input{width:64px}
main{display:flex;flex-wrap:wrap;gap:16px;padding:12px 16px}
#left{flex:0 1 auto;max-width:1080px}
#right{flex:1 1 420px;min-width:360px}
#map{border:1px solid #90a4ae;cursor:crosshair;background:#fff}
#hover{font-size:12px;height:16px;color:#455a64}
.legend{display:flex;align-items:center;gap:6px;font-size:12px;margin:4px 0}
#legend-bar{width:200px;height:10px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}
th,td{border:1px solid #cfd8dc;padding:3px 6px;text-align:right}
th{background:#eceff1}
td.text{text-align:left;max-width:560px}
td.name{text-align:left}
tr.current{background:#fff8e1}
.panel{background:#fff;border:1px solid #cfd8dc;padding:8px 12px;margin-bottom:12px}
.panel h2{font-size:16px;margin:2px 0 6px 0}
.panel h3{font-size:14px;margin:10px 0 4px 0}
.note{font-size:12px;color:#546e7a}
.problems{color:#b71c1c;font-size:12px}
#toplist a{cursor:pointer;color:#1565c0;margin-right:8px;font-size:12px}
.hist{border:1px solid #eceff1}
.set p,#details p{font-size:13px}
</style></head>
<body>
<header><h1>__TITLE__</h1>
<p>Pred (eq. 5: mean over prompt seeds of the best prompt token's max(acc, 1 &minus; acc)) of every feed-forward
neuron, per task. Click a neuron, or give its layer and index.</p></header>
<div class="controls">
 <label>model <select id="model"></select></label>
 <label>task <select id="task"></select></label>
 <label>layer <input id="layer-input" type="number" min="0" value="0"></label>
 <label>neuron <input id="neuron-input" type="number" min="0" value="0"></label>
 <button id="go">show neuron</button>
 <span id="status" class="note"></span>
</div>
<main>
<div id="left">
 <div class="legend"><span id="legend-min"></span><canvas id="legend-bar" width="200" height="10"></canvas>
  <span id="legend-max"></span><span class="note">Pred of the selected task (colour scale: its min to max)</span></div>
 <canvas id="map"></canvas>
 <div id="hover"></div>
 <div class="panel"><h2>Top neurons of this task</h2><div id="toplist"></div></div>
 <div id="problems" class="problems"></div>
</div>
<div id="right"><div id="details" class="panel"><p class="note">Select a neuron.</p></div></div>
</main>
<script type="application/json" id="data">__DATA__</script>
<script>
"use strict";
const DATA = JSON.parse(document.getElementById("data").textContent);
const COLS = 256, GAP = 4, LEFT = 34;
const state = {model: null, task: null, layer: null, neuron: null};
const cache = {};

function decode(b64) {
  const bin = atob(b64), bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}
function fmt(v, d) { return (v === null || v === undefined || Number.isNaN(v)) ? "\u2013" : v.toFixed(d); }
function pct(v) { return (v === null || v === undefined) ? "\u2013" : (100 * v).toFixed(1) + " %"; }

// Pred, global rank and rank within the layer of every neuron of a task (ties: lower index first).
function taskInfo(model, task) {
  const key = model + "/" + task.name;
  if (cache[key]) return cache[key];
  const m = DATA.models[model], L = m.layers, N = m.neurons;
  const pred = decode(task.pred);
  const order = Array.from(pred.keys()).sort((a, b) => (pred[b] - pred[a]) || (a - b));
  const rank = new Int32Array(L * N);
  order.forEach((idx, r) => { rank[idx] = r; });
  const layerRank = new Int32Array(L * N);
  for (let l = 0; l < L; l++) {
    const ids = Array.from({length: N}, (_, n) => l * N + n).sort((a, b) => (pred[b] - pred[a]) || (a - b));
    ids.forEach((idx, r) => { layerRank[idx] = r; });
  }
  let lo = Infinity, hi = -Infinity;
  for (const v of pred) { if (v < lo) lo = v; if (v > hi) hi = v; }
  cache[key] = {pred, rank, layerRank, order, lo, hi};
  return cache[key];
}
function viridis(t) {
  const stops = [[68,1,84],[59,82,139],[33,145,140],[94,201,98],[253,231,37]];
  t = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(t)), f = t - i;
  return stops[i].map((c, k) => Math.round(c + f * (stops[i + 1][k] - c)));
}
function modelData() { return DATA.models[state.model]; }
function currentTask() { return modelData().tasks.find(t => t.name === state.task); }
function geometry() {
  const m = modelData(), cols = Math.min(COLS, m.neurons), rows = Math.ceil(m.neurons / cols);
  const cell = Math.max(4, Math.min(16, Math.floor(1024 / cols)));     // 4 px for 256 columns, bigger for small models
  return {cols, rows, cell, layerH: rows * cell + GAP, width: LEFT + cols * cell,
          height: m.layers * (rows * cell + GAP)};
}
// The canvas position (x, y; CSS pixels) of a neuron's cell, and back.
function cellOf(layer, neuron) {
  const g = geometry();
  return {x: LEFT + (neuron % g.cols) * g.cell, y: layer * g.layerH + Math.floor(neuron / g.cols) * g.cell};
}
function neuronAt(x, y) {
  const g = geometry(), m = modelData();
  if (x < LEFT) return null;
  const layer = Math.floor(y / g.layerH), inner = y - layer * g.layerH;
  if (layer < 0 || layer >= m.layers || inner >= g.rows * g.cell) return null;
  const neuron = Math.floor(inner / g.cell) * g.cols + Math.floor((x - LEFT) / g.cell);
  return neuron < m.neurons ? {layer, neuron} : null;
}

function drawMap() {
  const m = modelData(), g = geometry(), info = taskInfo(state.model, currentTask());
  const canvas = document.getElementById("map");
  canvas.width = g.width; canvas.height = g.height;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(g.width, g.height);
  const span = (info.hi - info.lo) || 1;
  for (let l = 0; l < m.layers; l++) for (let n = 0; n < m.neurons; n++) {
    const c = viridis((info.pred[l * m.neurons + n] - info.lo) / span), p = cellOf(l, n);
    for (let dy = 0; dy < g.cell; dy++) for (let dx = 0; dx < g.cell; dx++) {
      const o = 4 * ((p.y + dy) * g.width + p.x + dx);
      img.data[o] = c[0]; img.data[o + 1] = c[1]; img.data[o + 2] = c[2]; img.data[o + 3] = 255;
    }
  }
  ctx.putImageData(img, 0, 0);
  ctx.fillStyle = "#263238"; ctx.font = "11px sans-serif";
  for (let l = 0; l < m.layers; l++) ctx.fillText("L" + l, 2, l * g.layerH + 11);
  if (state.layer !== null) {
    const p = cellOf(state.layer, state.neuron);
    ctx.strokeStyle = "#e53935"; ctx.lineWidth = 2; ctx.strokeRect(p.x - 2, p.y - 2, g.cell + 4, g.cell + 4);
  }
  document.getElementById("legend-min").textContent = fmt(info.lo, 3);
  document.getElementById("legend-max").textContent = fmt(info.hi, 3);
  const bar = document.getElementById("legend-bar").getContext("2d");
  for (let x = 0; x < 200; x++) { const c = viridis(x / 199); bar.fillStyle = `rgb(${c})`; bar.fillRect(x, 0, 1, 10); }
}
function drawTopList() {
  const m = modelData(), info = taskInfo(state.model, currentTask()), box = document.getElementById("toplist");
  box.textContent = "";
  info.order.slice(0, 20).forEach((idx, r) => {
    const l = Math.floor(idx / m.neurons), n = idx % m.neurons;
    const a = el("a", {"data-layer": l, "data-neuron": n}, `#${r + 1} L${l} N${n} (${fmt(info.pred[idx], 3)})`);
    a.addEventListener("click", () => select(l, n));
    box.appendChild(a);
  });
}

function cell(text, field, value, cls) {
  const td = el("td", cls ? {class: cls} : {}, text);
  if (field) { td.setAttribute("data-field", field); td.setAttribute("data-value", String(value)); }
  return td;
}
function table(headers) {
  const t = el("table"), tr = el("tr");
  headers.forEach(h => tr.appendChild(el("th", {}, h)));
  t.appendChild(tr);
  return t;
}
function predTable(l, n) {
  const m = modelData(), idx = l * m.neurons + n;
  const t = table(["task", "type", "Pred", "rank", "rank in layer", "top % of layer"]);
  t.id = "pred-table";
  for (const task of m.tasks) {
    const info = taskInfo(state.model, task);
    const tr = el("tr", {"data-task": task.name});
    if (task.name === state.task) tr.className = "current";
    tr.appendChild(cell(task.name, null, null, "name"));
    tr.appendChild(cell(task.type + (task.clean ? ` (of ${task.clean})` : "")));
    tr.appendChild(cell(fmt(info.pred[idx], 4), "pred", info.pred[idx]));
    tr.appendChild(cell(`${info.rank[idx] + 1} of ${m.layers * m.neurons}`, "rank", info.rank[idx] + 1));
    tr.appendChild(cell(`${info.layerRank[idx] + 1} of ${m.neurons}`, "layer-rank", info.layerRank[idx] + 1));
    tr.appendChild(cell(fmt(100 * (info.layerRank[idx] + 1) / m.neurons, 2), "layer-percent",
                        100 * (info.layerRank[idx] + 1) / m.neurons));
    t.appendChild(tr);
  }
  return t;
}
function suppressionTable(l, n) {
  const m = modelData(), idx = l * m.neurons + n, box = el("div");
  const rows = [];
  for (const s of m.suppression) {
    const task = m.tasks.find(t => t.name === s.source);
    if (!task) continue;
    const info = taskInfo(state.model, task);
    const rank = s.scope === "layer" ? info.layerRank[idx] : info.rank[idx];
    s.ks.forEach((k, i) => { if (k > 0 && rank < s.counts[i]) rows.push([s, i]); });
  }
  if (!rows.length) {
    box.appendChild(el("p", {class: "note"}, "Not among the suppressed skill neurons at any level of the " +
                       m.suppression.length + " suppression result(s)."));
    return box;
  }
  const t = table(["source", "target", "split", "k %", "scope", "skill acc.", "random acc.", "random \u2212 skill"]);
  t.id = "suppression-table";
  for (const [s, i] of rows) {
    const tr = el("tr", {"data-source": s.source, "data-target": s.target, "data-split": s.split,
                         "data-k": s.ks[i]});
    [s.source, s.target, s.split].forEach(v => tr.appendChild(cell(v, null, null, "name")));
    tr.appendChild(cell(String(s.ks[i]), "k", s.ks[i]));
    tr.appendChild(cell(s.scope));
    tr.appendChild(cell(pct(s.skill[i]), "skill", s.skill[i]));
    tr.appendChild(cell(pct(s.random[i]), "random", s.random[i]));
    tr.appendChild(cell(fmt(100 * (s.random[i] - s.skill[i]), 1) + " pts", "difference", s.random[i] - s.skill[i]));
    tr.title = `${s.file}: means over ${s.seeds} seed(s), random over ${s.draws} draw(s)`;
    t.appendChild(tr);
  }
  box.appendChild(t);
  box.appendChild(el("p", {class: "note"}, "Rows where this neuron was among the suppressed skill neurons " +
    "(selected by the source task's Pred; accuracies are means over seeds)."));
  return box;
}
function pruningTable(l, n) {
  const m = modelData(), idx = l * m.neurons + n, box = el("div");
  const rows = (m.pruning || []).filter(p => m.tasks.find(t => t.name === p.task));
  if (!rows.length) return null;
  const t = table(["task", "keep %", "this neuron", "unpruned acc.", "pruned acc.", "random kept acc."]);
  t.id = "pruning-table";
  for (const p of rows) {
    const info = taskInfo(state.model, m.tasks.find(x => x.name === p.task));
    const pruned = p.layers.includes(l), kept = !pruned || info.layerRank[idx] < p.kept[l];
    const status = !pruned ? "kept (layer not pruned)" : (kept ? "kept" : "removed");
    const tr = el("tr", {"data-task": p.task});
    tr.appendChild(cell(p.task, null, null, "name"));
    tr.appendChild(cell(String(p.keep_percent), "keep", p.keep_percent));
    tr.appendChild(cell(status, "status", status));
    tr.appendChild(cell(pct(p.unpruned), "unpruned", p.unpruned));
    tr.appendChild(cell(pct(p.pruned), "pruned", p.pruned));
    tr.appendChild(cell(pct(p.random), "random", p.random));
    tr.title = `${p.file}: means over ${p.seeds} seed(s), random over ${p.draws} draw(s)`;
    t.appendChild(tr);
  }
  box.appendChild(t);
  box.appendChild(el("p", {class: "note"}, "Pruning keeps the top neurons by the task's Pred in each pruned " +
    "layer and folds the removed ones' mean activations into the output bias."));
  return box;
}
function drawHistogram(canvas, h) {
  const W = canvas.width, H = canvas.height, ctx = canvas.getContext("2d"), B = h.counts[0].length;
  const max = Math.max(1, ...h.counts[0], ...h.counts[1]), lo = h.edges[0], hi = h.edges[B];
  const x = v => 30 + (W - 40) * (v - lo) / ((hi - lo) || 1), bw = (W - 40) / B;
  ctx.clearRect(0, 0, W, H); ctx.font = "10px sans-serif";
  const colours = ["rgba(30,136,229,0.55)", "rgba(244,81,30,0.55)"];
  for (let y = 0; y < 2; y++) for (let b = 0; b < B; b++) {
    const hgt = (H - 28) * h.counts[y][b] / max;
    ctx.fillStyle = colours[y]; ctx.fillRect(30 + b * bw, H - 16 - hgt, bw - 1, hgt);
  }
  ctx.fillStyle = "#263238";
  ctx.fillText(lo.toPrecision(3), 30, H - 4); ctx.fillText(hi.toPrecision(3), W - 40, H - 4);
  ctx.fillText(String(max), 2, 12);
  return x;
}
function recordSection(l, n) {
  const m = modelData(), box = el("div");
  const here = state.task && (m.tasks.find(t => t.name === state.task) || {}).clean || state.task;
  const recs = m.records.map(r => [r, r.neurons.findIndex(p => p[0] === l && p[1] === n)]).filter(x => x[1] >= 0);
  recs.sort((a, b) => (b[0].clean === here) - (a[0].clean === here));
  if (!recs.length) {
    box.appendChild(el("p", {class: "note", id: "not-recorded"}, "No activations recorded for this neuron: the " +
      "explorer stage records the top neurons of each task (click one in the list on the left)."));
    return box;
  }
  for (const [rec, k] of recs) {
    const sec = el("div", {class: "record", "data-record": rec.clean});
    sec.appendChild(el("h3", {}, `With ${rec.prompt_task}'s prompt (seed ${rec.seed}), prompt token j* = ` +
                       `${rec.token[k]}`));
    sec.lastChild.setAttribute("data-token", rec.token[k]);
    for (const [name, set] of Object.entries(rec.sets)) {
      const nd = set.neurons[k];
      const div = el("div", {class: "set", "data-set": name});
      div.appendChild(el("p", {}, `${name} dev (${set.n_dev} texts; labels 0/1: ${set.label_counts.join(" / ")}): ` +
        `eq. 3 threshold (TRAIN baseline) `));
      const p = div.lastChild;
      p.appendChild(el("b", {"data-field": "threshold", "data-value": String(nd.threshold)}, fmt(nd.threshold, 4)));
      p.appendChild(document.createTextNode(", eq. 3 accuracy at j* "));
      p.appendChild(el("b", {"data-field": "acc", "data-value": String(nd.acc)}, fmt(nd.acc, 4)));
      p.appendChild(document.createTextNode(`; above the threshold: label 0 ${pct(nd.hist.above[0])}, ` +
                                            `label 1 ${pct(nd.hist.above[1])}`));
      const canvas = el("canvas", {class: "hist", width: 460, height: 120});
      div.appendChild(canvas);
      const x = drawHistogram(canvas, nd.hist), ctx = canvas.getContext("2d");
      ctx.strokeStyle = "#000"; ctx.setLineDash([4, 3]); ctx.beginPath();
      ctx.moveTo(x(nd.threshold), 4); ctx.lineTo(x(nd.threshold), 104); ctx.stroke();
      div.appendChild(el("p", {class: "note"}, "blue: label 0, orange: label 1, dashed: the threshold"));
      for (const [what, list] of [["highest", nd.top], ["lowest", nd.bottom]]) {
        const t = table([`${what} activation`, "label", "text"]);
        t.className = "examples-" + what;
        for (const e of list) {
          const tr = el("tr", {"data-row": e.row});
          tr.appendChild(cell(fmt(e.act, 4), "act", e.act));
          tr.appendChild(cell(String(e.label), "label", e.label));
          tr.appendChild(cell(e.text, null, null, "text"));
          t.appendChild(tr);
        }
        div.appendChild(t);
      }
      sec.appendChild(div);
    }
    box.appendChild(sec);
  }
  return box;
}
function showDetails() {
  const d = document.getElementById("details"), l = state.layer, n = state.neuron;
  d.textContent = "";
  d.setAttribute("data-layer", l); d.setAttribute("data-neuron", n);
  d.appendChild(el("h2", {id: "neuron-title"}, `${state.model}: layer ${l}, neuron ${n}`));
  d.appendChild(el("h3", {}, "Predictivity per task"));
  d.appendChild(predTable(l, n));
  d.appendChild(el("h3", {}, "Activation on dev by label"));
  d.appendChild(recordSection(l, n));
  d.appendChild(el("h3", {}, "Suppression"));
  d.appendChild(suppressionTable(l, n));
  const pruning = pruningTable(l, n);
  if (pruning) { d.appendChild(el("h3", {}, "Pruning")); d.appendChild(pruning); }
}
function select(l, n) {
  const m = modelData();
  if (!(l >= 0 && l < m.layers && n >= 0 && n < m.neurons)) {
    document.getElementById("status").textContent = `no neuron (${l}, ${n}): layers 0-${m.layers - 1}, ` +
      `neurons 0-${m.neurons - 1}`;
    return;
  }
  document.getElementById("status").textContent = "";
  state.layer = l; state.neuron = n;
  document.getElementById("layer-input").value = l; document.getElementById("neuron-input").value = n;
  drawMap(); showDetails();
}
function fillTasks() {
  const sel = document.getElementById("task"); sel.textContent = "";
  for (const t of modelData().tasks) sel.appendChild(el("option", {value: t.name}, t.name));
  state.task = modelData().tasks[0].name; sel.value = state.task;
}
function init() {
  const models = Object.keys(DATA.models), msel = document.getElementById("model");
  const probs = document.getElementById("problems");
  (DATA.problems || []).forEach(p => probs.appendChild(el("div", {}, p)));
  if (!models.length) { document.getElementById("details").textContent = "No predictivity results found."; return; }
  models.forEach(m => msel.appendChild(el("option", {value: m}, m)));
  state.model = models[0]; fillTasks();
  msel.addEventListener("change", () => { state.model = msel.value; state.layer = state.neuron = null; fillTasks();
    drawMap(); drawTopList(); });
  document.getElementById("task").addEventListener("change", e => { state.task = e.target.value; drawMap();
    drawTopList(); if (state.layer !== null) showDetails(); });
  const canvas = document.getElementById("map");
  canvas.addEventListener("click", e => { const r = canvas.getBoundingClientRect();
    const hit = neuronAt(e.clientX - r.left - canvas.clientLeft, e.clientY - r.top - canvas.clientTop); if (hit) select(hit.layer, hit.neuron); });
  canvas.addEventListener("mousemove", e => { const r = canvas.getBoundingClientRect();
    const hit = neuronAt(e.clientX - r.left - canvas.clientLeft, e.clientY - r.top - canvas.clientTop), info = taskInfo(state.model, currentTask());
    document.getElementById("hover").textContent = hit ? `layer ${hit.layer}, neuron ${hit.neuron}: Pred ` +
      fmt(info.pred[hit.layer * modelData().neurons + hit.neuron], 4) : ""; });
  document.getElementById("go").addEventListener("click", () => select(
    parseInt(document.getElementById("layer-input").value, 10),
    parseInt(document.getElementById("neuron-input").value, 10)));
  drawMap(); drawTopList();
  document.body.setAttribute("data-ready", "1");
}
init();
</script></body></html>
"""
