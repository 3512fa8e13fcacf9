// Neuron explorer: text coloured by one neuron, and a heatmap of every neuron of the layer.
// One trace request per (model, text, layer, quantity); switching neurons redraws from it.
import {
  api, colourAt, cssGradient, decodeQuantity, fillModelSelect, formatNumber, fillPassageMenu, inkOn, isAbort, isTanhQuantity, latest, pageModels, PLOT_CONFIG, PLOT_FONT, plotlyReady, plotlyScale, queryParams, renderChars, rgb, scaleFor, setStatus, showChar, toInt, writeQuery,
} from "./common.js";
import { initSelect } from "./select.js";
import { initGroups } from "./groups.js";

const $ = (id) => document.getElementById(id);
const els = {
  model: $("model"), layer: $("layer"), quantity: $("quantity"), neuron: $("neuron"),
  prev: $("prev"), next: $("next"), readout: $("readout"), help: $("quantity-help"),
  passage: $("passage"), text: $("text"), read: $("read"), legend: $("legend"),
  charmapHead: $("charmap-head"), colouredBy: $("coloured-by"), range: $("range"), rangeHint: $("range-hint"),
  status: $("status"), charmap: $("charmap"), tooltip: $("tooltip"), stats: $("text-stats"),
  variable: $("variable-neurons"), heatmap: $("heatmap"), heatmapTitle: $("heatmap-title"),
  heatmapStatus: $("heatmap-status"), heatmapScale: $("heatmap-scale"), droppedNote: $("dropped-note"),
  checkpointField: $("checkpoint-field"), checkpoint: $("checkpoint"), checkpointLabel: $("checkpoint-label"),
};

const QUANTITY_HELP = {
  h: "h — the hidden state, what the layer passes up and on to the next step (tanh, −1 to 1).",
  c: "c — the LSTM's cell state, its long-term memory: c = f·c_prev + i·g. It can go past ±1.",
  i: "i — the input gate: how much of the candidate g is written into c (0 to 1).",
  f: "f — the forget gate: how much of the previous c is kept (1 = remember everything).",
  g: "g — the candidate values the LSTM may write into c (tanh, −1 to 1).",
  o: "o — the output gate: how much of tanh(c) is shown as h (0 to 1).",
  r: "r — the GRU's reset gate: how much of h_prev feeds the candidate n (0 to 1).",
  z: "z — the GRU's update gate: h = (1 − z)·n + z·h_prev, so z near 1 keeps the old state.",
  n: "n — the GRU's candidate state (tanh, −1 to 1).",
};

const QUANTITY_NAMES = {
  h: "hidden state", c: "cell state", i: "input gate", f: "forget gate", g: "candidate", o: "output gate",
  r: "reset gate", z: "update gate", n: "candidate",
};

const state = {
  model: els.model.dataset.initial, layer: toInt(els.layer.dataset.initial, null),
  quantity: els.quantity.dataset.initial,
  // null until a link or the reader names one: then the unit that varies most is shown.
  neuron: toInt(els.neuron.value, null),
  // "auto": the quantity's own range (±1 or 0..1) unless the neuron runs past it (c can),
  // then the neuron's own scale; "unit": always the quantity's range, clamped; "fit": always
  // the neuron's own scale. A neuron's own scale is its 1st-99th percentiles over the text.
  range: ["unit", "fit"].includes(els.range.dataset.initial) ? els.range.dataset.initial : "auto",
  // Read the text without the characters the model does not know (marked where they were).
  drop: queryParams().get("drop") === "1",
  // A run's model can be read at one of its kept snapshots (run-7@1800): the step, or null
  // for the run's model itself (its latest checkpoint, best weights).
  at: toInt(queryParams().get("at"), null),
};
let snapshots = [];       // GET /api/runs/{id}/snapshots when the model is a run's
let neuronChosen = state.neuron !== null;
let info = null;          // GET /api/models/{id}
let passages = [];        // GET /api/models/{id}/passages: texts from the model's own corpus
let corpusOnServer = null;  // that corpus's name, null when the server does not have it
let trace = null;         // {key, chars, loss, predictions} for the text on screen
let values = null;        // decoded (T, H) of the chosen layer and quantity
let scales = null;        // per neuron [lo, hi] for `values` under state.range, made on demand
let spans = [];
let models = [];          // GET /api/models
const details = new Map();  // model id -> promise of GET /api/models/{id}, for vocabularies
const cache = new Map();  // "model|layer|quantity|drop|text" -> decoded values
const nextSignal = latest();

/** The trace load() asks for: one model, one text, one layer's one quantity. */
function traceRequest(model, text, layer, quantity, drop) {
  // float16, not int8: int8 has one scale for the whole array, and a layer whose cell
  // state reaches ±400 left a unit that moves within ±2 two shades (the python model's
  // quote cell, c[221] of layer 1). Each unit is drawn on its own scale, so it needs its
  // own precision; float16 keeps three digits of every value at twice int8's bytes.
  const body = { text, layers: [layer], quantities: [quantity], top_k: 5, encoding: "float16" };
  if (drop) body.drop_unknown = true;
  return { url: `/api/models/${encodeURIComponent(model)}/trace`, body, key: JSON.stringify([model, body]) };
}

// The first trace, asked for as the script starts when the server says what the page will
// read (#first-read, for a link without text): the server computes it while plotly.js runs,
// instead of after three requests that each wait for the browser's main thread. load() takes
// the answer when it asks for the same trace, and asks anew otherwise.
let early = null;
let firstRead = JSON.parse(document.getElementById("first-read")?.textContent || "null");
if (firstRead && !els.text.value) {
  const asking = traceRequest(firstRead.model, firstRead.text, firstRead.layer, firstRead.quantity, false);
  early = { key: asking.key, answer: api(asking.url, asking.body) };
  early.answer.catch(() => {});                // a failure is load()'s to report, if it takes it
}
plotlyReady().catch(() => {});                 // now that the first read is asked for (templates: "lazy")

/** The model the page reads with: the chosen one, or its snapshot at the checkpoint chosen. */
const modelId = () => (state.at !== null ? `${state.model}@${state.at}` : state.model);

// ---- Scales -------------------------------------------------------------------------------

/** [min, max] without spreading into Math.min, which has an argument limit. */
function extent(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return [lo, hi];
}

const unitRange = () => (isTanhQuantity(state.quantity) ? [-1, 1] : [0, 1]);

/**
 * A neuron's own scale: its 1st and 99th percentiles over the text, so a few spikes do not
 * wash out the rest; symmetric about 0 for tanh quantities, so white stays 0 and the sign
 * keeps its colour.
 */
function ownScale(column) {
  const sorted = Float32Array.from(column).sort();
  const lo = sorted[Math.floor(0.01 * (sorted.length - 1))];
  const hi = sorted[Math.ceil(0.99 * (sorted.length - 1))];
  if (isTanhQuantity(state.quantity)) {
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    return [-m, m];
  }
  return hi > lo ? [lo, hi] : [lo, lo + 1];
}

/** Whether a neuron runs past its quantity's range: c can, by far; tanh and sigmoids cannot. */
function runsPast(column) {
  const [lo, hi] = extent(column), [a, b] = unitRange();
  return lo < a - 1e-3 || hi > b + 1e-3;
}

/** [lo, hi] that neuron j is coloured over, under the chosen range. */
function scaleOf(j) {
  if (state.range === "unit") return unitRange();
  if (!scales) scales = new Array(values.H);
  if (!scales[j]) {
    const column = values.column(j);
    scales[j] = state.range === "fit" || runsPast(column) ? ownScale(column) : unitRange();
  }
  return scales[j];
}

const onUnitScale = ([lo, hi]) => { const [a, b] = unitRange(); return lo === a && hi === b; };

/** Map [lo, hi] onto the scale's own domain, so colourAt's stops apply. */
function rescale([lo, hi]) {
  const [a, b] = unitRange();
  return (v) => a + ((v - lo) / (hi - lo)) * (b - a);
}

// ---- Drawing ---------------------------------------------------------------------------

function colourText() {
  const stops = scaleFor(state.quantity);
  const f = rescale(scaleOf(state.neuron));
  for (let t = 0; t < spans.length; t++) {
    const c = colourAt(stops, f(values.at(t, state.neuron)));
    spans[t].style.backgroundColor = rgb(c);
    spans[t].style.color = inkOn(c);
  }
}

const fmt = (v) => formatNumber(Number(v.toPrecision(3)));

function drawLegend() {
  const [lo, hi] = scaleOf(state.neuron);
  const ticks = [lo, (lo + hi) / 2, hi].map((v, i) => (i === 2 && v > 0 && isTanhQuantity(state.quantity) ? "+" : "") + fmt(v));
  els.legend.innerHTML = `<div class="legend-block"><div class="bar"></div>
    <div class="ticks">${ticks.map((t) => `<span>${t}</span>`).join("")}</div></div>`;
  els.legend.querySelector(".bar").style.background = cssGradient(scaleFor(state.quantity));
  for (const b of els.range.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.value === state.range));
  els.range.querySelector('[value="unit"]').textContent = isTanhQuantity(state.quantity) ? "−1 to +1" : "0 to 1";
  // Say which scale is in use when it is not the quantity's own, and when clamping hides
  // most of the neuron's variation (c often runs far past ±1).
  const [nlo, nhi] = extent(values.column(state.neuron));
  const name = `${state.quantity}[${state.neuron}]`;
  const past = runsPast(values.column(state.neuron));
  els.rangeHint.textContent = state.range === "unit"
    ? (nlo < lo - 0.5 || nhi > hi + 0.5 ? `${name} runs from ${fmt(nlo)} to ${fmt(nhi)} here, so the colours clamp.` : "")
    : past ? `${name} runs from ${fmt(nlo)} to ${fmt(nhi)} here, past ${isTanhQuantity(state.quantity) ? "±1" : "0 to 1"}: `
      + "coloured on its own 1st–99th percentile scale."
      : state.range === "fit" ? "Coloured on this neuron’s 1st–99th percentile scale." : "";
}

function heatmapData() {
  // Rows are neurons: z is (H, T), the transpose of the trace's (T, H). A row on its own
  // scale is mapped onto the quantity's range, so one colour bar serves every row; the
  // hover then reads the true values from customdata.
  const { T, H } = values;
  const z = new Array(H);
  let own = 0;
  for (let j = 0; j < H; j++) {
    const column = values.column(j), scale = scaleOf(j);
    if (onUnitScale(scale)) { z[j] = column; continue; }
    const f = rescale(scale);
    z[j] = column.map(f);
    own++;
  }
  const [zmin, zmax] = unitRange();
  const trace = {
    type: "heatmap", z, zmin, zmax, zauto: false,
    x: Array.from({ length: T }, (_, t) => t), y: Array.from({ length: H }, (_, j) => j),
    colorscale: plotlyScale(scaleFor(state.quantity)),
    colorbar: { title: { text: own ? `${state.quantity} (rows on their own scale: ±their range)` : state.quantity, side: "right" },
      thickness: 12, len: 0.9 },
    hovertemplate: "neuron %{y}<br>character %{x}<br>value %{z:.3f}<extra></extra>",
  };
  if (own) {
    trace.customdata = Array.from({ length: H }, (_, j) => values.column(j));
    trace.hovertemplate = "neuron %{y}<br>character %{x}<br>value %{customdata:.3f}<extra></extra>";
  }
  const range = isTanhQuantity(state.quantity) ? "±1" : "0 to 1";
  els.heatmapScale.textContent = state.range === "fit"
    ? "Each row is drawn on its own 1st–99th percentile scale; hover for the values."
    : own ? `${own} of ${H} rows run past ${range} and are each drawn on their own 1st–99th percentile scale; `
      + "hover for the values." : "";
  return [trace];
}

function heatmapLayout() {
  const { T, H } = values;
  const short = T <= 90;
  return {
    font: PLOT_FONT, margin: { l: 58, r: 20, t: 10, b: short ? 40 : 50 },
    // Rows tall enough to click for small layers; a 256-unit layer still fits on screen.
    height: (short ? 50 : 60) + Math.min(520, Math.max(160, H * (H <= 32 ? 18 : H <= 96 ? 5 : 2))),
    xaxis: short
      ? { tickvals: trace.chars.map((_, t) => t), ticktext: trace.chars.map(showChar), tickfont: { family: "DejaVu Sans Mono, monospace", size: 11 }, tickangle: 0 }
      : { title: { text: "character position in the text" } },
    yaxis: { title: { text: "neuron" }, autorange: "reversed" },
    // The selected neuron's row, outlined.
    shapes: [{
      type: "rect", xref: "paper", x0: 0, x1: 1, y0: state.neuron - 0.5, y1: state.neuron + 0.5,
      line: { color: "#1d2330", width: 2 },
    }],
    uirevision: `${state.model}|${state.layer}|${T}`,
  };
}

/**
 * The row under a click, from the click's own position. Plotly's click event carries the
 * last *hovered* point, and hovering is throttled to one per 50 ms, so a click soon after
 * hovering another row would otherwise select that row.
 */
function rowAt(event) {
  const fl = els.heatmap._fullLayout;
  if (!event || !fl?.yaxis) return null;
  const box = els.heatmap.getBoundingClientRect();
  const j = Math.round(fl.yaxis.p2l(event.clientY - box.top - fl._size.t));
  return Number.isInteger(j) && j >= 0 && j < values.H ? j : null;
}

let heatmapDrawn = false;
function drawHeatmap() {
  setStatus(els.heatmapStatus, "");
  els.heatmap.hidden = false;
  const fn = heatmapDrawn ? Plotly.react : Plotly.newPlot;
  fn(els.heatmap, heatmapData(), heatmapLayout(), PLOT_CONFIG);
  if (!heatmapDrawn) {
    els.heatmap.on("plotly_click", (ev) => {
      const j = rowAt(ev.event) ?? (ev.points?.[0] ? Math.round(ev.points[0].y) : null);
      if (j !== null) selectNeuron(j);
    });
    heatmapDrawn = true;
  }
}

// A relayout redraws the whole heatmap (~0.3 s for 128 x 10,000): while arrow keys are
// held, recolour the text at once and move the marker only when they pause.
let markerTimer = null;
function moveHeatmapMarker() {
  clearTimeout(markerTimer);
  markerTimer = setTimeout(() => Plotly.relayout(els.heatmap, {
    "shapes[0].y0": state.neuron - 0.5, "shapes[0].y1": state.neuron + 0.5,
  }), 120);
}

const statRows = (rows) => rows.flatMap(([k, v]) => [
  Object.assign(document.createElement("dt"), { textContent: k }),
  Object.assign(document.createElement("dd"), { textContent: v }),
]);

function drawStats() {
  const T = trace.chars.length;
  const rows = [["Characters", T.toLocaleString()]];
  if (trace.dropped.length) rows.push(["Dropped", `${trace.dropped.length} (${summariseChars(trace.dropped)})`]);
  if (trace.loss.length) {
    const mean = trace.loss.reduce((a, b) => a + b, 0) / trace.loss.length;
    rows.push(["Mean loss", `${mean.toFixed(3)} nats/char`], ["", `${(mean / Math.LN2).toFixed(3)} bits/char`]);
    const worst = trace.loss.indexOf(extent(trace.loss)[1]);
    rows.push(["Biggest surprise", `“${showChar(trace.chars[worst + 1])}” at ${worst + 1} (${trace.loss[worst].toFixed(2)})`]);
  }
  if (info) rows.push(["Uniform guess", `${Math.log(info.vocab_size).toFixed(3)} nats/char`]);
  els.stats.replaceChildren(...statRows(rows));
}

/** After a failed read nothing on the sidebar describes the text any more: say why instead. */
function clearSidebar(why) {
  els.stats.replaceChildren(...statRows([["Characters", "—"], ["Not read", why]]));
  els.variable.replaceChildren(Object.assign(document.createElement("span"), { className: "muted small", textContent: "—" }));
}

/** The units whose value varies most over the text, most first; the top eight become chips. */
function drawVariableNeurons() {
  const { T, H } = values;
  const spread = [];
  for (let j = 0; j < H; j++) {
    let s = 0, s2 = 0;
    for (let t = 0; t < T; t++) { const v = values.at(t, j); s += v; s2 += v * v; }
    spread.push([s2 / T - (s / T) ** 2, j]);
  }
  spread.sort((a, b) => b[0] - a[0]);
  els.variable.replaceChildren(...spread.slice(0, 8).map(([, j]) => {
    const b = Object.assign(document.createElement("button"), { type: "button", className: "chip", textContent: `#${j}` });
    b.dataset.neuron = j;
    b.setAttribute("aria-pressed", String(j === state.neuron));
    b.addEventListener("click", () => selectNeuron(j));
    return b;
  }));
  return spread.map(([, j]) => j);
}

/** The one function that brings everything on screen in line with `state` and the data. */
function update({ heatmap = true } = {}) {
  els.neuron.value = state.neuron;
  els.neuron.max = values.H - 1;
  els.readout.innerHTML = `neuron <b>${state.neuron}</b> of ${values.H} · layer ${state.layer} · ${state.quantity}`;
  els.colouredBy.innerHTML = `Coloured by <b>${state.quantity}[${state.neuron}]</b> of layer ${state.layer}. Hover a character for the model’s guesses.`;
  els.charmapHead.hidden = false;
  colourText();
  drawLegend();
  for (const chip of els.variable.querySelectorAll(".chip")) {
    chip.setAttribute("aria-pressed", String(Number(chip.dataset.neuron) === state.neuron));
  }
  if (heatmap) { clearTimeout(markerTimer); drawHeatmap(); } else moveHeatmapMarker();
  els.heatmapTitle.textContent = `All ${values.H} neurons of layer ${state.layer}, quantity ${state.quantity}`;
  groups.redrawn();
  saveQuery();
}

function saveQuery() {
  writeQuery({
    model: state.model, at: state.at ?? "", layer: state.layer, quantity: state.quantity, neuron: state.neuron ?? "",
    range: state.range === "auto" ? "" : state.range, drop: state.drop ? 1 : "", text: els.text.value,
    ...groups.query(),
  });
}

function selectNeuron(j) {
  if (!values) return;
  const H = values.H;
  state.neuron = ((j % H) + H) % H;   // wrap around at either end
  neuronChosen = true;
  update({ heatmap: false });
}

// ---- Tooltip -----------------------------------------------------------------------------

function showTooltip(span) {
  const t = Number(span.dataset.i);
  const tip = els.tooltip;
  const next = trace.chars[t + 1];
  const v = values.at(t, state.neuron);
  const preds = trace.predictions;
  let html = `<div class="tt-row"><span>read <span class="tt-char"></span> at ${t}</span><span>${state.quantity}[${state.neuron}] = <b>${formatNumber(v, { digits: 3 })}</b></span></div>`;
  if (next !== undefined) {
    const loss = trace.loss[t];
    html += `<div class="tt-sub">next is <span class="tt-char tt-next"></span>: p = ${Math.exp(-loss).toFixed(3)}, loss <b>${loss.toFixed(2)}</b> nats</div>`;
  } else {
    html += `<div class="tt-sub">the last character: nothing to predict</div>`;
  }
  html += `<div class="tt-head">Top 5 guesses for the next character</div><table><tbody></tbody></table>`;
  tip.innerHTML = html;
  tip.querySelector(".tt-char").textContent = showChar(trace.chars[t]);
  if (next !== undefined) tip.querySelector(".tt-next").textContent = showChar(next);
  const body = tip.querySelector("tbody");
  preds.chars[t].forEach((c, k) => {
    const p = preds.probs[t][k];
    const tr = document.createElement("tr");
    if (c === next) tr.className = "hit";
    tr.innerHTML = `<td class="c"></td><td><div class="pbar" style="width:${Math.max(2, p * 100)}%"></div></td><td class="p">${p.toFixed(3)}</td>`;
    tr.querySelector(".c").textContent = showChar(c);
    body.append(tr);
  });
  tip.hidden = false;
  const r = span.getBoundingClientRect();
  const w = tip.offsetWidth, h = tip.offsetHeight;
  const left = Math.min(document.documentElement.clientWidth - w - 8, Math.max(8, r.left + r.width / 2 - w / 2));
  let top = r.bottom + 8;
  if (top + h > window.innerHeight - 8) top = r.top - h - 8;
  // The tooltip is positioned in the page, so it stays beside its character on scroll.
  tip.style.left = `${left + window.scrollX}px`;
  tip.style.top = `${top + window.scrollY}px`;
}

els.charmap.addEventListener("mouseover", (e) => {
  const span = e.target.closest(".ch");
  if (span && trace) showTooltip(span);
});
els.charmap.addEventListener("mouseleave", () => { els.tooltip.hidden = true; });

// ---- Unknown characters ----------------------------------------------------------------------

/** "‘/’ ×3, ‘€’": each distinct character once, with how often it occurs. */
function summariseChars(chars) {
  const counts = new Map();
  for (const c of chars) counts.set(c, (counts.get(c) || 0) + 1);
  return [...counts].map(([c, n]) => `‘${showChar(c)}’${n > 1 ? ` ×${n}` : ""}`).join(", ");
}

function detail(id) {
  if (!details.has(id)) details.set(id, api(`/api/models/${encodeURIComponent(id)}`).catch(() => null));
  return details.get(id);
}

/** The loaded models whose vocabulary holds every character of `text`. */
async function modelsThatRead(text) {
  const distinct = [...new Set(text)];
  const found = await Promise.all(models.map(async (m) => {
    const d = await detail(m.id);
    return d && distinct.every((c) => d.vocab.includes(c)) ? m : null;
  }));
  return found.filter(Boolean);
}

/** The error for characters the model does not know: which, the models that know them all, and dropping. */
async function showUnknown(text, unknown) {
  const missing = [...text].filter((c) => unknown.includes(c));
  const why = `${state.model} does not know ${missing.length === 1 ? "one character" : `${missing.length} characters`} `
    + `of this text: ${summariseChars(missing)}.`;
  setStatus(els.status, "error", why);
  clearSidebar(`${state.model} does not know ${summariseChars(missing)}`);
  const offers = document.createElement("div");
  offers.className = "offers";
  els.status.append(offers);
  const readers = (await modelsThatRead(text)).filter((m) => m.id !== state.model);
  if (els.status.dataset.state !== "error" || !els.status.contains(offers)) return;   // a newer load took over
  const line = document.createElement("p");
  if (readers.length) {
    line.append("Models that know every character of it: ");
    for (const m of readers) {
      const b = Object.assign(document.createElement("button"), { type: "button", className: "secondary",
        textContent: `Read it with ${m.name}` });
      b.dataset.model = m.id;
      b.addEventListener("click", () => { els.model.value = m.id; switchModel(); });
      line.append(b, " ");
    }
  } else {
    line.append("No loaded model knows all of them.");
  }
  const drop = Object.assign(document.createElement("button"), { type: "button", className: "secondary", id: "drop",
    textContent: "Drop those characters and read the rest" });
  drop.addEventListener("click", () => { state.drop = true; load(); });
  const dropLine = document.createElement("p");
  dropLine.append(drop, " (they are struck through where they were)");
  offers.append(line, dropLine);
}

/** Per kept position t, the characters removed just before it; the last entry, those after the end. */
function removedBefore(text, dropped) {
  const gone = new Set(dropped);
  const before = [""];
  for (const c of text) {
    if (gone.has(c)) before[before.length - 1] += c;
    else before.push("");
  }
  return before;
}

function drawDroppedNote(removed) {
  const all = removed.join("");
  els.droppedNote.hidden = !all;
  els.droppedNote.textContent = all ? `${state.model} read this text without ${[...all].length} characters it does not `
    + `know: ${summariseChars([...all])}, struck through where they were.` : "";
}

// ---- Data -------------------------------------------------------------------------------

function fillLayerAndQuantity() {
  els.layer.replaceChildren(...Array.from({ length: info.num_layers }, (_, l) => {
    const where = info.num_layers === 1 ? "" : l === 0 ? " (reads the characters)" : l === info.num_layers - 1 ? " (feeds the prediction)" : "";
    return new Option(`${l}${where}`, l);
  }));
  if (!(Number.isInteger(state.layer) && state.layer >= 0 && state.layer < info.num_layers)) state.layer = info.num_layers - 1;
  els.layer.value = state.layer;
  els.quantity.replaceChildren(...info.quantities.map((q) => new Option(`${q} · ${QUANTITY_NAMES[q] || q}`, q)));
  // h of the top layer shows structure on any text; c is unbounded and noisy to start from.
  if (!info.quantities.includes(state.quantity)) state.quantity = info.quantities.includes("h") ? "h" : info.quantities[0];
  els.quantity.value = state.quantity;
  els.layer.disabled = els.quantity.disabled = false;
  els.help.textContent = QUANTITY_HELP[state.quantity] || "";
}

function fillPassages() {
  fillPassageMenu(els.passage, passages);
}

/** Fetch (or reuse) the trace for the current model, text, layer and quantity, then update. */
async function load() {
  const text = els.text.value;
  scales = null;
  if (!text) {
    els.charmap.hidden = els.charmapHead.hidden = els.heatmap.hidden = true;
    els.droppedNote.hidden = true;
    setStatus(els.status, "empty", "Nothing to read yet: pick a passage above or paste some text.");
    setStatus(els.heatmapStatus, "empty", "The heatmap appears once the model has read the text.");
    return;
  }
  const key = `${modelId()}|${state.drop}|${text}`;
  const sameText = trace && trace.key === key;
  const cached = cache.get(`${modelId()}|${state.layer}|${state.quantity}|${key}`);
  if (cached && sameText) {
    values = cached;
    show(drawVariableNeurons());
    return;
  }
  const signal = nextSignal();
  setStatus(els.status, "loading", `Reading ${text.length.toLocaleString()} characters with ${modelId()}…`);
  els.read.disabled = true;
  try {
    const asking = traceRequest(modelId(), text, state.layer, state.quantity, state.drop);
    const answer = early?.key === asking.key ? early.answer : api(asking.url, asking.body, { signal, status: els.status });
    early = null;
    const data = await answer;
    if (signal.aborted) return;                  // superseded while the first read was answered
    await plotlyReady();
    const layer = data.layers.find((l) => l.layer === state.layer) || data.layers[0];
    values = decodeQuantity(layer.quantities[state.quantity]);
    cache.set(`${modelId()}|${state.layer}|${state.quantity}|${key}`, values);
    if (!sameText) {
      // With drop_unknown the model read a shorter text; the box keeps what was typed and
      // the text on screen shows what was removed, where.
      const removed = data.dropped.length ? removedBefore(text, data.dropped) : null;
      trace = { key, chars: data.chars, loss: data.loss, predictions: data.predictions,
        dropped: removed ? [...removed.join("")] : [] };
      spans = renderChars(els.charmap, data.chars, removed);
      drawDroppedNote(removed || []);
      drawStats();
    }
    setStatus(els.status, "");
    els.charmap.hidden = false;
    show(drawVariableNeurons());
  } catch (e) {
    if (isAbort(e)) return;
    trace = null;
    els.charmap.hidden = els.charmapHead.hidden = true;
    els.heatmap.hidden = true;
    els.droppedNote.hidden = true;
    els.heatmapTitle.textContent = "All neurons";
    setStatus(els.heatmapStatus, "empty", "The heatmap appears once the model has read the text.");
    const unknown = e.status === 422 && e.detail?.[0]?.type === "unknown_characters" ? e.detail[0].ctx?.chars : null;
    if (unknown) {
      await showUnknown(text, unknown);
    } else {
      setStatus(els.status, "error", e);
      clearSidebar(e.message);
    }
    saveQuery();
  } finally {
    els.read.disabled = false;
  }
}

/** Show the data just read: the neuron the reader chose, else the one that varies most. */
function show(ranked) {
  state.neuron = neuronChosen && state.neuron !== null ? Math.max(0, Math.min(state.neuron, values.H - 1)) : ranked[0];
  update();
}

async function loadModel() {
  const signal = nextSignal();
  let previous = passages;
  // The first model's detail and passages came with the page (#first-read), once.
  const given = firstRead?.model === state.model ? firstRead : null;
  firstRead = null;
  try {
    [info, { passages, corpus: corpusOnServer }] = await Promise.all([
      given?.detail ?? api(`/api/models/${encodeURIComponent(state.model)}`, undefined, { signal }),
      given?.passages ?? api(`/api/models/${encodeURIComponent(state.model)}/passages`, undefined, { signal }),
    ]);
  } catch (e) {
    if (!isAbort(e)) { setStatus(els.status, "error", e.message); clearSidebar(e.message); }
    return;
  }
  details.set(state.model, Promise.resolve(info));
  if (!(await loadSnapshots(signal))) return;
  fillLayerAndQuantity();
  fillPassages();
  // Open on the model's own text: when the box is empty or holds another model's passage.
  const text = els.text.value;
  if (!text || previous.some((p) => p.text === text)) {
    els.text.value = passages[0]?.text || "";
    els.passage.value = passages.length ? "0" : "";
  }
  trace = null;
  await load();
}

function switchModel() {
  state.model = els.model.value;
  state.drop = false;
  state.at = null;
  loadModel();
}

// ---- A run's checkpoints ----------------------------------------------------------------

/** The slider's positions: each kept snapshot's step, then the run's own model (null). */
const checkpointSteps = () => [...snapshots.map((s) => s.step), null];

function drawCheckpoint() {
  const steps = checkpointSteps();
  els.checkpoint.max = String(steps.length - 1);
  els.checkpoint.value = String(Math.max(0, steps.indexOf(state.at)));
  els.checkpointLabel.textContent = state.at === null ? "latest (best weights)" : `step ${state.at.toLocaleString()}`;
}

/** For a run's model, its kept snapshots and the slider over them; hidden for other models.
 * False when a newer request took over. */
async function loadSnapshots(signal) {
  const run = /^run-(\d+)$/.exec(state.model);
  snapshots = [];
  if (run) {
    try {
      snapshots = await api(`/api/runs/${run[1]}/snapshots`, undefined, { signal });
    } catch (e) { if (isAbort(e)) return false; }
  }
  if (!snapshots.some((s) => s.step === state.at)) state.at = null;     // a step since thinned away
  els.checkpointField.hidden = !snapshots.length;
  if (snapshots.length) drawCheckpoint();
  return true;
}

// ---- Controls ---------------------------------------------------------------------------

els.model.addEventListener("change", switchModel);
els.checkpoint.addEventListener("input", () => {
  state.at = checkpointSteps()[Number(els.checkpoint.value)] ?? null;
  drawCheckpoint();
  neuronChosen = state.neuron !== null;    // the same unit at every step
  load();
});
els.layer.addEventListener("change", () => { state.layer = Number(els.layer.value); load(); });
els.quantity.addEventListener("change", () => {
  state.quantity = els.quantity.value;
  els.help.textContent = QUANTITY_HELP[state.quantity] || "";
  load();
});
els.neuron.addEventListener("change", () => selectNeuron(toInt(els.neuron.value, state.neuron)));
els.range.addEventListener("click", (e) => {
  const b = e.target.closest("button");
  if (!b || !values || b.value === state.range) return;
  state.range = b.value;
  scales = null;
  update();
});
els.prev.addEventListener("click", () => selectNeuron(state.neuron - 1));
els.next.addEventListener("click", () => selectNeuron(state.neuron + 1));
els.read.addEventListener("click", () => { els.passage.value = ""; state.drop = false; load(); });
els.passage.addEventListener("change", () => {
  const opt = els.passage.selectedOptions[0];
  if (!opt.dataset.text) return;
  els.text.value = opt.dataset.text;
  state.drop = false;
  load();
});
els.text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); state.drop = false; load(); }
});

const STEP_KEYS = { ArrowLeft: -1, ArrowUp: -1, ArrowRight: 1, ArrowDown: 1 };
document.addEventListener("keydown", (e) => {
  if (!(e.key in STEP_KEYS) || e.altKey || e.ctrlKey || e.metaKey) return;
  if (e.target.closest("input, textarea, select, [contenteditable]")) return;
  e.preventDefault();
  selectNeuron(state.neuron + STEP_KEYS[e.key]);
});

async function main() {
  const found = await pageModels(els.status, "No models are loaded, so there is nothing to look inside yet.",
    { menu: els.model });
  if (!found) return;
  models = found;
  state.model = fillModelSelect(els.model, models, state.model);
  await loadModel();
}

/** Show one neuron (from the select or groups panel), on `text` when one is given. */
function viewNeuron(layer, quantity, neuron, text = null) {
  Object.assign(state, { layer, quantity, neuron });
  neuronChosen = true;
  els.layer.value = layer;
  els.quantity.value = quantity;
  if (text !== null) {
    state.drop = false;
    els.text.value = text;
    els.passage.value = "";
  }
  load();
}

initSelect({
  charmap: els.charmap, model: modelId, text: () => trace?.chars.join("") ?? null,
  corpus: () => corpusOnServer, view: viewNeuron,
  open: (text, layer, quantity, neuron) => viewNeuron(layer, quantity, neuron, text),
});
const groups = initGroups({
  charmap: els.charmap, colouredBy: els.colouredBy, legend: els.legend, rangeHint: els.rangeHint, model: modelId,
  layer: () => state.layer, quantity: () => state.quantity, text: () => trace?.chars.join("") ?? null,
  corpus: () => corpusOnServer, save: saveQuery,
  view: viewNeuron,
});
main();
