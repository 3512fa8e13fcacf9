// Gate saturation: per gate a scatter of left- (< 0.1) vs right-saturated (> 0.9) fractions,
// one dot per unit coloured by layer (Karpathy, Johnson & Fei-Fei 2015, figure 3).
import { api, clearView, fillModelSelect, fillPassageMenu, isAbort, latest, matchPassage, modelPassages, pageModels, PLOT_CONFIG, PLOT_FONT, setStatus, writeQuery } from "./common.js";

const $ = (id) => document.getElementById(id);
const els = {
  model: $("model"), passage: $("passage"), text: $("text"), measure: $("measure"), status: $("status"),
  chart: $("chart"), chartStatus: $("chart-status"), chartTitle: $("chart-title"), summary: $("summary"),
};
// The scatter's card: dimmed after a failed request, under a line naming what it still shows.
const card = els.chart.closest(".card");
const LAYER_COLOURS = ["#1c6dd0", "#e8590c", "#2f9e44", "#7048e8", "#d6336c", "#0c8599"];
const GATE_NAMES = {
  i: "input gate i", f: "forget gate f", g: "candidate g (tanh)", o: "output gate o",
  r: "reset gate r", z: "update gate z", n: "candidate n (tanh)",
};

let models = [];
let drawn = false;
let drawnColumns = 0;  // panels a row in the scatter drawn
let current = null;   // {model, text, data}
let offered = [];     // texts the passage menu and the default offer for the model shown
const nextSignal = latest();

// A panel narrower than this is hard to read (four side by side on a 420 px phone were 58 px
// wide, their titles run together): below it the panels wrap onto rows of square panels.
const MIN_PANEL_PX = 160;
const MARGIN = { l: 60, r: 20, t: 40, b: 90 };
const GAP_PX = { x: 56, y: 100 };    // between wrapped panels: y tick labels; x axis title and the next gate's name

/** How many panels a row holds at `width`: all of them while each gets MIN_PANEL_PX, else the
 * most that fit with rows as even as can be (four wrap 2 x 2, not 3 + 1), at least one. */
function panelColumns(count, width) {
  const fits = (c) => (width - MARGIN.l - MARGIN.r - (c - 1) * GAP_PX.x) / c >= MIN_PANEL_PX;
  const even = (c) => Math.ceil(count / Math.ceil(count / c)) === c;
  for (let c = count; c > 1; c--) if (fits(c) && even(c)) return c;
  return 1;
}

/** Where each panel sits: one row from a Plotly grid (the wide layout), or, wrapped, square
 * panels placed by hand, with the figure as tall as its rows need. */
function panelLayout(count, width) {
  const columns = panelColumns(count, width);
  if (columns === count) {
    return { columns, height: 440, margin: MARGIN, legendY: 1.14,
      grid: { rows: 1, columns: count, pattern: "independent", xgap: 0.1 }, domains: null };
  }
  const rows = Math.ceil(count / columns);
  const plotWidth = width - MARGIN.l - MARGIN.r;
  const cell = (plotWidth - (columns - 1) * GAP_PX.x) / columns;
  const plotHeight = rows * cell + (rows - 1) * GAP_PX.y;
  const domains = Array.from({ length: count }, (_, k) => {
    const left = (k % columns) * (cell + GAP_PX.x), top = Math.floor(k / columns) * (cell + GAP_PX.y);
    return { x: [left / plotWidth, (left + cell) / plotWidth], y: [1 - (top + cell) / plotHeight, 1 - top / plotHeight] };
  });
  const margin = { ...MARGIN, t: 70, b: 70 };
  return { columns, height: plotHeight + margin.t + margin.b, margin, legendY: 1 + 32 / plotHeight, grid: undefined, domains };
}

function figure(data, width) {
  const gates = data.layers[0].gates.map((g) => g.gate);
  const traces = [];
  const panels = panelLayout(gates.length, width);
  const layout = {
    font: PLOT_FONT, height: panels.height, margin: panels.margin, grid: panels.grid,
    legend: { orientation: "h", x: 1, xanchor: "right", y: panels.legendY, yanchor: "bottom" },
    hovermode: "closest", annotations: [], shapes: [],
  };
  gates.forEach((gate, c) => {
    const xa = c === 0 ? "x" : `x${c + 1}`, ya = c === 0 ? "y" : `y${c + 1}`;
    for (const layer of data.layers) {
      const g = layer.gates.find((x) => x.gate === gate);
      const units = g.left.map((_, j) => j);
      traces.push({
        type: "scatter", mode: "markers", xaxis: xa, yaxis: ya, x: g.left, y: g.right, customdata: units,
        name: `layer ${layer.layer}`, legendgroup: `layer ${layer.layer}`, showlegend: c === 0,
        marker: { color: LAYER_COLOURS[layer.layer % LAYER_COLOURS.length], size: 7, opacity: 0.7, line: { width: 0.5, color: "#fff" } },
        meta: [gate, layer.layer],
        hovertemplate: `layer ${layer.layer}, ${gate}[%{customdata}]<br>shut %{x:.0%} · open %{y:.0%} of steps<extra></extra>`,
      });
    }
    const axis = { range: [-0.04, 1.04], tickvals: [0, 0.25, 0.5, 0.75, 1], ticktext: ["0", "", "50%", "", "100%"], zeroline: false };
    const domain = panels.domains?.[c];
    layout[c === 0 ? "xaxis" : `xaxis${c + 1}`] = { ...axis, title: { text: "fraction shut (< 0.1)" }, anchor: ya, domain: domain?.x };
    layout[c === 0 ? "yaxis" : `yaxis${c + 1}`] = { ...axis, scaleanchor: xa, anchor: xa, domain: domain?.y,
      title: c % panels.columns === 0 ? { text: "fraction open (> 0.9)" } : undefined };
    // No unit can be above x + y = 1: a step is shut or open, never both.
    layout.shapes.push({ type: "line", xref: xa, yref: ya, x0: 0, y0: 1, x1: 1, y1: 0, line: { color: "#adb5bd", width: 1, dash: "dot" } });
    layout.annotations.push({
      xref: `${xa} domain`, yref: `${ya} domain`, x: 0.5, y: 1.03, xanchor: "center", yanchor: "bottom", showarrow: false,
      text: `<b>${GATE_NAMES[gate] || gate}</b>`,
    });
  });
  return { traces, layout, columns: panels.columns };
}

function drawSummary(data) {
  const body = els.summary.querySelector("tbody");
  const rows = [];
  for (const layer of data.layers) {
    for (const g of layer.gates) {
      const H = g.left.length;
      const mean = (a) => a.reduce((s, v) => s + v, 0) / H;
      const open = g.right.filter((v) => v > 0.5).length;
      const never = g.left.filter((v, j) => v + g.right[j] < 0.05).length;
      const tr = document.createElement("tr");
      [layer.layer, g.gate, `${(mean(g.left) * 100).toFixed(1)}%`, `${(mean(g.right) * 100).toFixed(1)}%`,
        `${open} of ${H}`, `${never} of ${H}`].forEach((v) => tr.append(Object.assign(document.createElement("td"), { textContent: v })));
      rows.push(tr);
    }
  }
  body.replaceChildren(...rows);
  els.summary.hidden = false;
}

/** Draw the scatter and table from one /gates answer. */
function update(data) {
  els.chart.hidden = false;
  const { traces, layout, columns } = figure(data, els.chart.clientWidth);
  drawnColumns = columns;
  (drawn ? Plotly.react : Plotly.newPlot)(els.chart, traces, layout, PLOT_CONFIG);
  if (!drawn) {
    els.chart.on("plotly_click", (ev) => {
      const p = ev.points && ev.points[0];
      if (!p || !current) return;
      const [gate, layer] = p.data.meta;
      const q = new URLSearchParams({ model: current.model, layer, quantity: gate, neuron: p.customdata, text: current.text });
      window.location.href = `/explore?${q}`;
    });
    drawn = true;
  }
  const name = models.find((m) => m.id === current.model)?.name || current.model;
  els.chartTitle.textContent = `Saturation per gate — ${name}, ${current.text.length.toLocaleString()} characters`;
  drawSummary(data);
}

/** In place of the scatter, a message; the heading no longer names the model and text of the
 * scatter taken away (it read "GRU, 419 characters" above "the RNN has no gates"). */
function clearChart(kind, message, html) {
  setStatus(els.chartStatus, kind, message, { html });
  els.chart.hidden = true;
  els.summary.hidden = true;
  els.chartTitle.textContent = "Saturation per gate";
  current = null;
  clearView(card);
}

async function measure() {
  const model = els.model.value, text = els.text.value;
  const m = models.find((x) => x.id === model);
  if (m && m.cell === "rnn") {
    const others = models.filter((x) => x.cell !== "rnn");
    const links = others.map((x) => `<a href="/gates?model=${encodeURIComponent(x.id)}">${x.id}</a>`).join(", ");
    setStatus(els.status, "");
    clearChart("empty", `${m.name} is a vanilla RNN: it has no gates, so there is nothing to saturate.`,
      others.length ? `<p>Try a gated model: ${links}.</p>` : "");
    writeQuery({ model, text });
    return;
  }
  if (!text) {
    setStatus(els.status, "");
    clearChart("empty", "Pick a passage or paste some text for the model to read.");
    writeQuery({ model, text });
    return;
  }
  const signal = nextSignal();
  setStatus(els.status, "loading", `Reading ${text.length.toLocaleString()} characters with ${model}…`);
  els.measure.disabled = true;
  try {
    // The scatter kept, dimmed, when the request fails; the address follows the scatter drawn.
    const data = await api(`/api/models/${encodeURIComponent(model)}/gates`, { text },
      { signal, status: els.status, view: card });
    setStatus(els.status, "");
    if (!data.layers.length || !data.layers[0].gates.length) {
      clearChart("empty", "This model reports no gates.");
      writeQuery({ model, text });
      return;
    }
    setStatus(els.chartStatus, "");
    current = { model, text, data };
    update(data);
    writeQuery({ model, text });
  } catch (e) {
    if (isAbort(e)) return;
    setStatus(els.status, "error", e);
    if (!current) clearChart("empty", "The scatter appears once the model has read the text.");
  } finally {
    els.measure.disabled = false;
  }
}

/** The passages of the model's own corpus (GET /api/models/{id}/passages) in the menu, and
 * first all of them, one after another, which the text box gets when it is empty or holds
 * another model's: longer text gives steadier fractions. The menu names what the box holds. */
async function fillPassages() {
  const model = els.model.value;
  const passages = await modelPassages(model);
  if (model !== els.model.value) return;       // another model was chosen meanwhile: its answer wins
  fillPassageMenu(els.passage, passages);
  const all = passages.map((p) => p.text).join("\n");
  if (passages.length > 1) {
    const together = new Option(`All ${passages.length} passages, one after another`, "all");
    together.dataset.text = all;
    els.passage.options[0].after(together);
  }
  if (!els.text.value || offered.includes(els.text.value)) els.text.value = all;
  offered = [all, ...passages.map((p) => p.text)];
  matchPassage(els.passage, els.text.value);
}

// The panels wrap by the chart's width: redrawn when a resize changes how many fit a row, or
// (wrapped) at every width, since the square panels' height follows it.
let resizeQueued = false;
window.addEventListener("resize", () => {
  if (resizeQueued) return;
  resizeQueued = true;
  requestAnimationFrame(() => {
    resizeQueued = false;
    if (!current || els.chart.hidden) return;
    const count = current.data.layers[0].gates.length;
    if (drawnColumns < count || panelColumns(count, els.chart.clientWidth) !== drawnColumns) update(current.data);
  });
});

els.model.addEventListener("change", async () => { await fillPassages(); measure(); });
els.measure.addEventListener("click", measure);
els.passage.addEventListener("change", () => {
  const opt = els.passage.selectedOptions[0];
  if (!opt.dataset.text) return;
  els.text.value = opt.dataset.text;
  measure();
});
els.text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); measure(); }
});
els.text.addEventListener("input", () => matchPassage(els.passage, els.text.value));

async function main() {
  const found = await pageModels(els.status, "No models are loaded, so there are no gates to measure.", {
    menu: els.model, emptyStatus: els.chartStatus, onEmpty: () => { els.chart.hidden = els.summary.hidden = true; } });
  if (!found) return;
  models = found;
  // Prefer a gated model when the link names none.
  const wanted = els.model.dataset.initial || (models.find((m) => m.cell === "lstm") || models.find((m) => m.cell !== "rnn") || models[0]).id;
  fillModelSelect(els.model, models, wanted);
  await fillPassages();
  await measure();
}

main();
