// Neuron explorer: text coloured by one neuron, and a heatmap of every neuron of the layer.
// One trace request per (model, text, layer, quantity); switching neurons redraws from it.
import {
  api, colourAt, cssGradient, decodeQuantity, fillModelSelect, inkOn, isAbort, isTanhQuantity, latest,
  PLOT_CONFIG, PLOT_FONT, plotlyScale, renderChars, rgb, scaleFor, setStatus, showChar, toInt, writeQuery,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const els = {
  model: $("model"), layer: $("layer"), quantity: $("quantity"), neuron: $("neuron"),
  prev: $("prev"), next: $("next"), readout: $("readout"), help: $("quantity-help"),
  passage: $("passage"), text: $("text"), read: $("read"), legend: $("legend"),
  charmapHead: $("charmap-head"), colouredBy: $("coloured-by"), range: $("range"), rangeHint: $("range-hint"),
  status: $("status"), charmap: $("charmap"), tooltip: $("tooltip"), stats: $("text-stats"),
  variable: $("variable-neurons"), heatmap: $("heatmap"), heatmapTitle: $("heatmap-title"),
  heatmapStatus: $("heatmap-status"),
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
  quantity: els.quantity.dataset.initial, neuron: toInt(els.neuron.value, 0),
  // "unit": the quantity's own range, ±1 or 0..1, clamped (c can exceed it);
  // "fit": the text's range, per neuron for the text and per layer for the heatmap.
  range: els.range.dataset.initial === "fit" ? "fit" : "unit",
};
let info = null;          // GET /api/models/{id}
let trace = null;         // {key, chars, loss, predictions} for the text on screen
let values = null;        // decoded (T, H) of the chosen layer and quantity
let spans = [];
const cache = new Map();  // "model|layer|quantity|text" -> decoded values
const nextSignal = latest();

// ---- Drawing ---------------------------------------------------------------------------

/** [min, max] without spreading into Math.min, which has an argument limit. */
function extent(values) {
  let lo = Infinity, hi = -Infinity;
  for (const v of values) { if (v < lo) lo = v; if (v > hi) hi = v; }
  return [lo, hi];
}

/**
 * [lo, hi] of some values, symmetric about 0 for tanh quantities so white stays 0.
 * `robust` takes the 1st and 99th percentiles instead, from at most ~100k samples, so a
 * few extreme units do not wash out a whole layer.
 */
function spanOf(all, robust = false) {
  let lo, hi;
  if (robust) {
    const step = Math.max(1, Math.floor(all.length / 100_000));
    const sample = Float32Array.from({ length: Math.floor(all.length / step) }, (_, i) => all[i * step]).sort();
    lo = sample[Math.floor(0.01 * (sample.length - 1))];
    hi = sample[Math.ceil(0.99 * (sample.length - 1))];
  } else {
    [lo, hi] = extent(all);
  }
  if (isTanhQuantity(state.quantity)) {
    const m = Math.max(Math.abs(lo), Math.abs(hi)) || 1;
    return [-m, m];
  }
  return hi > lo ? [lo, hi] : [lo, lo + 1];
}

const unitRange = () => (isTanhQuantity(state.quantity) ? [-1, 1] : [0, 1]);
const neuronRange = () => (state.range === "fit" ? spanOf(values.column(state.neuron)) : unitRange());
const layerRange = () => (state.range === "fit" ? spanOf(values.values, true) : unitRange());

/** Map [lo, hi] onto the scale's own domain, so colourAt's stops apply. */
function rescale([lo, hi]) {
  const [a, b] = unitRange();
  return (v) => a + ((v - lo) / (hi - lo)) * (b - a);
}

function colourText() {
  const stops = scaleFor(state.quantity);
  const f = rescale(neuronRange());
  for (let t = 0; t < spans.length; t++) {
    const c = colourAt(stops, f(values.at(t, state.neuron)));
    spans[t].style.backgroundColor = rgb(c);
    spans[t].style.color = inkOn(c);
  }
}

const fmt = (v) => String(Number(v.toPrecision(3))).replace("-", "−");

function drawLegend() {
  const [lo, hi] = neuronRange();
  const ticks = [lo, (lo + hi) / 2, hi].map((v, i) => (i === 2 && v > 0 && isTanhQuantity(state.quantity) ? "+" : "") + fmt(v));
  els.legend.innerHTML = `<div class="legend-block"><div class="bar"></div>
    <div class="ticks">${ticks.map((t) => `<span>${t}</span>`).join("")}</div></div>`;
  els.legend.querySelector(".bar").style.background = cssGradient(scaleFor(state.quantity));
  for (const b of els.range.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b.value === state.range));
  els.range.querySelector('[value="unit"]').textContent = isTanhQuantity(state.quantity) ? "−1 to +1" : "0 to 1";
  // Say so when clamping hides most of the neuron's variation (c often runs far past ±1).
  const [nlo, nhi] = extent(values.column(state.neuron));
  const [ulo, uhi] = unitRange();
  const clamped = state.range === "unit" && (nlo < ulo - 0.5 || nhi > uhi + 0.5);
  els.rangeHint.textContent = clamped
    ? `${state.quantity}[${state.neuron}] runs from ${fmt(nlo)} to ${fmt(nhi)} here, so the colours clamp.` : "";
}

function heatmapData() {
  // Rows are neurons: z is (H, T), the transpose of the trace's (T, H).
  const { T, H } = values;
  const z = Array.from({ length: H }, (_, j) => values.column(j));
  const [zmin, zmax] = layerRange();
  return [{
    type: "heatmap", z, zmin, zmax, zauto: false,
    x: Array.from({ length: T }, (_, t) => t), y: Array.from({ length: H }, (_, j) => j),
    colorscale: plotlyScale(scaleFor(state.quantity)),
    colorbar: { title: { text: state.quantity, side: "right" }, thickness: 12, len: 0.9 },
    hovertemplate: "neuron %{y}<br>character %{x}<br>value %{z:.3f}<extra></extra>",
  }];
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

let heatmapDrawn = false;
function drawHeatmap() {
  setStatus(els.heatmapStatus, "");
  els.heatmap.hidden = false;
  const fn = heatmapDrawn ? Plotly.react : Plotly.newPlot;
  fn(els.heatmap, heatmapData(), heatmapLayout(), PLOT_CONFIG);
  if (!heatmapDrawn) {
    els.heatmap.on("plotly_click", (ev) => {
      const p = ev.points && ev.points[0];
      if (p) selectNeuron(Math.round(p.y));
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

function drawStats() {
  const T = trace.chars.length;
  const rows = [["Characters", T.toLocaleString()]];
  if (trace.loss.length) {
    const mean = trace.loss.reduce((a, b) => a + b, 0) / trace.loss.length;
    rows.push(["Mean loss", `${mean.toFixed(3)} nats/char`], ["", `${(mean / Math.LN2).toFixed(3)} bits/char`]);
    const worst = trace.loss.indexOf(extent(trace.loss)[1]);
    rows.push(["Biggest surprise", `“${showChar(trace.chars[worst + 1])}” at ${worst + 1} (${trace.loss[worst].toFixed(2)})`]);
  }
  if (info) rows.push(["Uniform guess", `${Math.log(info.vocab_size).toFixed(3)} nats/char`]);
  els.stats.replaceChildren(...rows.flatMap(([k, v]) => [
    Object.assign(document.createElement("dt"), { textContent: k }),
    Object.assign(document.createElement("dd"), { textContent: v }),
  ]));
}

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
  saveQuery();
}

function saveQuery() {
  writeQuery({
    model: state.model, layer: state.layer, quantity: state.quantity, neuron: state.neuron,
    range: state.range === "fit" ? "fit" : "", text: els.text.value,
  });
}

function selectNeuron(j) {
  if (!values) return;
  const H = values.H;
  state.neuron = ((j % H) + H) % H;   // wrap around at either end
  update({ heatmap: false });
}

// ---- Tooltip -----------------------------------------------------------------------------

function showTooltip(span) {
  const t = Number(span.dataset.i);
  const tip = els.tooltip;
  const next = trace.chars[t + 1];
  const v = values.at(t, state.neuron);
  const preds = trace.predictions;
  let html = `<div class="tt-row"><span>read <span class="tt-char"></span> at ${t}</span><span>${state.quantity}[${state.neuron}] = <b>${v.toFixed(3)}</b></span></div>`;
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

// ---- Data -------------------------------------------------------------------------------

function fillLayerAndQuantity() {
  els.layer.replaceChildren(...Array.from({ length: info.num_layers }, (_, l) => {
    const where = info.num_layers === 1 ? "" : l === 0 ? " (reads the characters)" : l === info.num_layers - 1 ? " (feeds the prediction)" : "";
    return new Option(`${l}${where}`, l);
  }));
  if (!(Number.isInteger(state.layer) && state.layer >= 0 && state.layer < info.num_layers)) state.layer = info.num_layers - 1;
  els.layer.value = state.layer;
  els.quantity.replaceChildren(...info.quantities.map((q) => new Option(`${q} · ${QUANTITY_NAMES[q] || q}`, q)));
  if (!info.quantities.includes(state.quantity)) state.quantity = info.quantities.includes("c") ? "c" : "h";
  els.quantity.value = state.quantity;
  els.layer.disabled = els.quantity.disabled = false;
  els.help.textContent = QUANTITY_HELP[state.quantity] || "";
}

/** Fetch (or reuse) the trace for the current model, text, layer and quantity, then update. */
async function load({ dropUnknown = false } = {}) {
  const text = els.text.value;
  if (!text) {
    els.charmap.hidden = els.charmapHead.hidden = els.heatmap.hidden = true;
    setStatus(els.status, "empty", "Nothing to read yet: pick a passage above or paste some text.");
    setStatus(els.heatmapStatus, "empty", "The heatmap appears once the model has read the text.");
    return;
  }
  const key = `${state.model}|${state.layer}|${state.quantity}|${text}`;
  const sameText = trace && trace.key === `${state.model}|${text}`;
  if (cache.has(key) && sameText) {
    values = cache.get(key);
    state.neuron = Math.min(state.neuron, values.H - 1);
    drawVariableNeurons();
    update();
    return;
  }
  const signal = nextSignal();
  setStatus(els.status, "loading", `Reading ${text.length.toLocaleString()} characters with ${state.model}…`);
  els.read.disabled = true;
  try {
    const body = { text, layers: [state.layer], quantities: [state.quantity], top_k: 5, encoding: "int8" };
    if (dropUnknown) body.drop_unknown = true;
    const data = await api(`/api/models/${encodeURIComponent(state.model)}/trace`, body, { signal });
    const layer = data.layers.find((l) => l.layer === state.layer) || data.layers[0];
    values = decodeQuantity(layer.quantities[state.quantity]);
    // With drop_unknown the model read a shorter text: that one goes in the box and the link.
    if (data.text !== text) els.text.value = data.text;
    cache.set(`${state.model}|${state.layer}|${state.quantity}|${data.text}`, values);
    if (!sameText || data.text !== text) {
      trace = { key: `${state.model}|${data.text}`, chars: data.chars, loss: data.loss, predictions: data.predictions };
      spans = renderChars(els.charmap, data.chars);
      drawStats();
    }
    state.neuron = Math.max(0, Math.min(state.neuron, values.H - 1));
    setStatus(els.status, "");
    els.charmap.hidden = false;
    drawVariableNeurons();
    update();
  } catch (e) {
    if (isAbort(e)) return;
    const unknown = e.status === 422 && /vocabulary/.test(e.message);
    setStatus(els.status, "error", e.message, {
      html: unknown ? `<button type="button" class="secondary" id="drop">Drop those characters and read the rest</button>` : "",
    });
    document.getElementById("drop")?.addEventListener("click", () => load({ dropUnknown: true }));
    els.charmap.hidden = els.charmapHead.hidden = true;
    els.heatmap.hidden = true;
    els.heatmapTitle.textContent = "All neurons";
    setStatus(els.heatmapStatus, "empty", "The heatmap appears once the model has read the text.");
    trace = null;
    saveQuery();
  } finally {
    els.read.disabled = false;
  }
}

async function loadModel() {
  const signal = nextSignal();
  try {
    info = await api(`/api/models/${encodeURIComponent(state.model)}`, undefined, { signal });
  } catch (e) {
    if (!isAbort(e)) setStatus(els.status, "error", e.message);
    return;
  }
  fillLayerAndQuantity();
  trace = null;
  await load();
}

// ---- Controls ---------------------------------------------------------------------------

els.model.addEventListener("change", () => { state.model = els.model.value; loadModel(); });
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
  update();
});
els.prev.addEventListener("click", () => selectNeuron(state.neuron - 1));
els.next.addEventListener("click", () => selectNeuron(state.neuron + 1));
els.read.addEventListener("click", () => { els.passage.value = ""; load(); });
els.passage.addEventListener("change", () => {
  const opt = els.passage.selectedOptions[0];
  if (!opt.dataset.text) return;
  els.text.value = opt.dataset.text;
  load();
});
els.text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); load(); }
});

const STEP_KEYS = { ArrowLeft: -1, ArrowUp: -1, ArrowRight: 1, ArrowDown: 1 };
document.addEventListener("keydown", (e) => {
  if (!(e.key in STEP_KEYS) || e.altKey || e.ctrlKey || e.metaKey) return;
  if (e.target.closest("input, textarea, select, [contenteditable]")) return;
  e.preventDefault();
  selectNeuron(state.neuron + STEP_KEYS[e.key]);
});

async function main() {
  if (!els.text.value) els.text.value = els.passage.options[1]?.dataset.text || "";
  let models;
  try {
    models = await api("/api/models");
  } catch (e) {
    setStatus(els.status, "error", e.message);
    return;
  }
  if (models.length === 0) {
    els.model.replaceChildren(new Option("no models", ""));
    setStatus(els.status, "empty", "No models are loaded, so there is nothing to look inside yet.",
      { html: `<p><a href="/">See how to add one →</a></p>` });
    return;
  }
  state.model = fillModelSelect(els.model, models, state.model);
  await loadModel();
}

main();
