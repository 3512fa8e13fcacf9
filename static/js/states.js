// State space: a text's trajectory through one layer's h (or c), projected on principal
// components of the validation text, coloured per step; a scrubber through time; fixed points
// of the layer's update for one input character, drawn in the same projection.
import {
  api, fillModelSelect, fillPassageMenu, formatNumber, isAbort, latest, modelPassages, pageModels, PLOT_CONFIG, PLOT_FONT, renderChars, setStatus, showChar, toInt, writeQuery,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const els = {
  model: $("model"), layer: $("layer"), quantity: $("quantity"), colour: $("colour"), dims: $("dims"),
  passage: $("passage"), text: $("text"), project: $("project"), status: $("status"), chart: $("chart"),
  chartStatus: $("chart-status"), chartTitle: $("chart-title"), explained: $("explained"), scrub: $("scrub"),
  stepLabel: $("step-label"), chars: $("chars"), legend: $("legend"), fpChar: $("fp-char"), fpFind: $("fp-find"),
  fpClear: $("fp-clear"), fpSummary: $("fp-summary"), fpStatus: $("fp-status"),
};
const CLASS_COLOURS = ["#1c6dd0", "#d6336c", "#f08c00", "#adb5bd", "#2f9e44", "#7048e8"];
const BINARY_COLOURS = ["#ced4da", "#e8590c"];
const KINDS = {
  stable: { symbol: "circle", colour: "#2f9e44", label: "stable ●" },
  saddle: { symbol: "x", colour: "#e8590c", label: "saddle ✕" },
  unstable: { symbol: "diamond", colour: "#c92a2a", label: "unstable ◆" },
};
const CURRENT = 2;      // trace index of the ringed current point

let models = [];
let data = null;        // the last /states answer
let fixed = null;       // the last /fixed-points answer, or null
let step = 0;
let spans = [];
let offered = [];
let drawn = false;
const nextSignal = latest();
const nextFixedSignal = latest();
let currentProjection = null;   // the signal of the newest /states request

const columns = (coords) => [0, 1, 2].slice(0, coords[0]?.length || 0).map((k) => coords.map((c) => c[k]));
const is3d = () => data && data.coords[0].length === 3;

function pointColours(d) {
  if (d.classes) return d.colour.map((v) => CLASS_COLOURS[v % CLASS_COLOURS.length]);
  if (!d.graded) return d.colour.map((v) => BINARY_COLOURS[v ? 1 : 0]);
  return d.colour;
}

function stepText(t) {
  const c = data.text[t];
  return `${t} · after ‘${showChar(c)}’`;
}

/** Every trace: the path, the coloured steps, the current step, then fixed points by kind. */
function figure() {
  const three = is3d();
  const [x, y, z] = columns(data.coords);
  const type = three ? "scatter3d" : "scattergl";
  const xyz = (px, py, pz) => (three ? { x: px, y: py, z: pz } : { x: px, y: py });
  const hover = data.text.split("").map((c, t) => `${t}: ‘${showChar(c)}’ ${data.classes ? data.classes[data.colour[t]]
    : data.colour_by.replace(/_/g, " ") + " " + data.colour[t]}`);
  const graded = data.graded && !data.classes;
  const traces = [
    { type, mode: "lines", ...xyz(x, y, z), line: { color: "rgba(73,80,87,0.35)", width: 1.5 }, hoverinfo: "skip",
      name: "path", showlegend: false },
    { type, mode: "markers", ...xyz(x, y, z), customdata: data.coords.map((_, t) => t), text: hover, name: "steps",
      hovertemplate: "%{text}<extra></extra>", showlegend: false,
      marker: { size: three ? 3 : 6, color: pointColours(data), colorscale: graded ? "Viridis" : undefined,
        showscale: graded, colorbar: graded ? { title: { text: data.colour_by.replace(/_/g, " ") }, thickness: 12 } : undefined,
        line: three ? undefined : { width: 0.5, color: "#fff" } } },
    { type, mode: "markers", ...xyz([x[step]], [y[step]], three ? [z[step]] : undefined), name: "current", showlegend: false,
      hoverinfo: "skip", marker: { size: three ? 8 : 16, color: "rgba(0,0,0,0)", line: { width: 3, color: "#1d2330" },
        symbol: three ? "circle-open" : "circle" } },
  ];
  if (fixed) {
    for (const [kind, style] of Object.entries(KINDS)) {
      const pts = fixed.points.filter((p) => p.kind === kind);
      if (!pts.length) continue;
      const [fx, fy, fz] = columns(pts.map((p) => p.coords));
      traces.push({ type, mode: "markers", ...xyz(fx, fy, fz), name: `${style.label} for ‘${showChar(fixed.char)}’`,
        text: pts.map((p) => `${kind} fixed point for ‘${showChar(fixed.char)}’<br>q = ${formatNumber(p.q, { exponent: 1 })}<br>`
          + `|λ| max ${Math.hypot(...p.eigenvalues[0]).toFixed(3)}, ${p.unstable_directions} unstable direction(s)`),
        hovertemplate: "%{text}<extra></extra>", meta: kind,
        marker: { symbol: three && style.symbol === "x" ? "cross" : style.symbol, size: three ? 10 : 15, color: style.colour,
          line: { width: 1.5, color: "#1d2330" } } });
    }
  }
  const pc = (k) => `PC${k + 1} (${(data.explained[k] * 100).toFixed(1)}%)`;
  const layout = {
    font: PLOT_FONT, height: 520, margin: { l: 60, r: 20, t: 20, b: 50 }, hovermode: "closest", uirevision: "keep",
    legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
  };
  if (three) layout.scene = { xaxis: { title: { text: pc(0) } }, yaxis: { title: { text: pc(1) } }, zaxis: { title: { text: pc(2) } } };
  else Object.assign(layout, { xaxis: { title: { text: pc(0) }, zeroline: false }, yaxis: { title: { text: pc(1) }, zeroline: false } });
  return { traces, layout };
}

function drawLegend() {
  els.legend.replaceChildren();
  if (!data.classes && data.graded) return;
  const names = data.classes || ["not " + data.colour_by.replace(/_/g, " "), data.colour_by.replace(/_/g, " ")];
  const colours = data.classes ? CLASS_COLOURS : BINARY_COLOURS;
  names.forEach((n, k) => {
    const s = document.createElement("span");
    s.className = "key";
    s.innerHTML = `<i style="background:${colours[k % colours.length]}"></i>`;
    s.append(n);
    els.legend.append(s);
  });
}

/** Draw the chart, the text and the scrubber from the current /states answer. */
function update() {
  const { traces, layout } = figure();
  els.chart.hidden = false;
  (drawn ? Plotly.react : Plotly.newPlot)(els.chart, traces, layout, PLOT_CONFIG);
  if (!drawn) {
    els.chart.on("plotly_click", (ev) => {
      const p = ev.points && ev.points.find((q) => q.curveNumber === 1);
      if (p) setStep(p.customdata ?? p.pointNumber);
    });
    drawn = true;
  }
  els.chart.dataset.points = String(data.coords.length);
  els.chart.dataset.fixed = fixed ? String(fixed.points.length) : "";
  drawLegend();
}

/** Move to step t: the ring on the chart, the highlighted character, the slider, the URL. */
function setStep(t, { write = true } = {}) {
  if (!data) return;
  step = Math.max(0, Math.min(data.coords.length - 1, t));
  const [x, y, z] = data.coords[step];
  const update3 = is3d() ? { x: [[x]], y: [[y]], z: [[z]] } : { x: [[x]], y: [[y]] };
  Plotly.restyle(els.chart, update3, [CURRENT]);
  spans.forEach((s) => s.classList.remove("current"));
  const cur = spans[step];
  if (cur) {
    cur.classList.add("current");
    cur.scrollIntoView({ block: "nearest" });
  }
  els.scrub.value = String(step);
  els.stepLabel.textContent = stepText(step);
  els.chart.dataset.t = String(step);
  if (write) writeState();
}

function writeState() {
  writeQuery({ model: els.model.value, layer: els.layer.value, quantity: els.quantity.value, colour: els.colour.value,
    dims: els.dims.value === "3" ? "3" : "", text: els.text.value, t: step || "", char: els.fpChar.value ? heldChar() : "" });
}

async function project({ keepStep = false } = {}) {
  const model = els.model.value, text = els.text.value;
  if (!text) {
    setStatus(els.chartStatus, "empty", "Pick a passage or paste some text for the model to read.");
    els.chart.hidden = true;
    return;
  }
  const body = { text, layer: toInt(els.layer.value, 0), quantity: els.quantity.value, colour_by: els.colour.value,
    components: els.dims.value === "3" ? 3 : 2 };
  const signal = currentProjection = nextSignal();
  setStatus(els.status, "loading", `Reading ${text.length.toLocaleString()} characters with ${model}…`);
  els.project.disabled = true;
  fixedPointsReady(false, { loading: true });
  try {
    const answer = await api(`/api/models/${encodeURIComponent(model)}/states`, body,
      { signal, status: els.status, view: els.chart.closest(".card") });
    setStatus(els.status, "");
    setStatus(els.chartStatus, "");
    if (fixed && (fixed.layer !== body.layer || fixed.model !== model || fixed.quantity !== body.quantity
      || fixed.components !== body.components)) fixed = null;
    data = answer;
    const name = models.find((m) => m.id === model)?.name || model;
    els.chartTitle.textContent = `Layer ${data.layer} ${data.quantity} of ${name}`;
    const fit = data.fitted_on === "validation" ? `fitted on ${data.fit_chars.toLocaleString()} validation characters`
      + (data.corpus ? ` of ${data.corpus}` : "") : "fitted on this text (the model's corpus is not on this server)";
    els.explained.textContent = `Variance explained: ${data.explained.map((e) => `${(e * 100).toFixed(1)}%`).join(", ")} · ${fit}`;
    spans = renderChars(els.chars, [...data.text]);
    els.scrub.max = String(data.coords.length - 1);
    update();
    setStep(keepStep ? step : toInt(els.chart.dataset.t, 0), { write: false });
    writeState();
    if (fixed) drawFixedSummary();
  } catch (e) {
    if (isAbort(e)) return;
    setStatus(els.status, "error", e);
  } finally {
    els.project.disabled = false;
    if (signal === currentProjection) fixedPointsReady(Boolean(data));
  }
}

/** The search for fixed points starts from the projection's states and is drawn into it, so
 * its button acts only once one is drawn and while no other is being read. */
function fixedPointsReady(ready, { loading = false } = {}) {
  els.fpFind.disabled = !ready;
  els.fpFind.textContent = loading ? "Loading…" : "Find fixed points";
  els.fpFind.title = ready ? "" : loading ? "Waiting for the projection" : "Project a text first";
}

// A space is shown as ␣ in the box, so that the box does not look empty.
const heldChar = () => (els.fpChar.value === "␣" || !els.fpChar.value ? " " : els.fpChar.value);

function drawFixedSummary() {
  if (!fixed) { els.fpSummary.textContent = ""; return; }
  const counts = Object.keys(KINDS).map((k) => [k, fixed.points.filter((p) => p.kind === k).length]).filter(([, n]) => n);
  els.fpSummary.textContent = fixed.points.length
    ? `${fixed.points.length} fixed point(s) for ‘${showChar(fixed.char)}’: ${counts.map(([k, n]) => `${n} ${k}`).join(", ")}`
      + ` · search in ${fixed.state} from ${fixed.starts} starts, ${fixed.seconds.toFixed(1)} s`
    : `No fixed point for ‘${showChar(fixed.char)}’ within q < ${fixed.tolerance}: the slowest state found still `
      + `moves by ${Math.sqrt(2 * (fixed.slowest_q ?? 0)).toFixed(3)} per step (${fixed.state}, ${fixed.seconds.toFixed(1)} s).`;
}

async function findFixed() {
  if (!data || els.project.disabled) return;     // no projection yet, or a new one on its way
  const model = els.model.value;
  const char = heldChar();
  const body = { layer: data.layer, char, quantity: data.quantity, components: data.coords[0].length, starts: 32 };
  if (data.fitted_on === "text") body.text = data.text;
  const signal = nextFixedSignal();
  setStatus(els.fpStatus, "loading", `Searching for fixed points of layer ${data.layer} with ‘${showChar(char)}’ held…`);
  els.fpFind.disabled = true;
  try {
    const answer = await api(`/api/models/${encodeURIComponent(model)}/fixed-points`, body, { signal, status: els.fpStatus });
    fixed = { ...answer, model, quantity: body.quantity, components: body.components };
    setStatus(els.fpStatus, "");
    update();
    setStep(step, { write: false });
    drawFixedSummary();
    writeState();
  } catch (e) {
    if (isAbort(e)) return;
    setStatus(els.fpStatus, "error", e);
  } finally {
    if (!els.project.disabled) els.fpFind.disabled = false;
  }
}

function fillLayers() {
  const m = models.find((x) => x.id === els.model.value);
  const wanted = els.layer.dataset.initial || els.layer.value;
  els.layer.dataset.initial = "";                 // the link's layer counts once
  els.layer.replaceChildren(...Array.from({ length: m?.num_layers || 1 }, (_, l) => new Option(String(l), String(l))));
  els.layer.value = toInt(wanted, 0) < (m?.num_layers || 1) ? String(toInt(wanted, 0)) : "0";
  const hasC = m?.cell === "lstm";
  els.quantity.querySelector('option[value="c"]').disabled = !hasC;
  if (!hasC) els.quantity.value = "h";
}

async function fillPassages() {
  const model = els.model.value;
  const passages = await modelPassages(model);
  if (model !== els.model.value) return;
  fillPassageMenu(els.passage, passages);
  if (!els.text.value || offered.includes(els.text.value)) els.text.value = passages[0]?.text || els.text.value;
  offered = passages.map((p) => p.text);
}

els.model.addEventListener("change", async () => { fixed = null; drawFixedSummary(); fillLayers(); await fillPassages(); project(); });
for (const el of [els.layer, els.quantity, els.colour, els.dims]) el.addEventListener("change", () => project({ keepStep: true }));
els.project.addEventListener("click", () => project());
els.passage.addEventListener("change", () => {
  const opt = els.passage.selectedOptions[0];
  if (!opt.dataset.text) return;
  els.text.value = opt.dataset.text;
  els.chart.dataset.t = "0";
  project();
});
els.text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); project(); }
});
els.scrub.addEventListener("input", () => setStep(toInt(els.scrub.value, 0)));
els.chars.addEventListener("click", (e) => {
  const ch = e.target.closest(".ch");
  if (ch) setStep(toInt(ch.dataset.i, 0));
});
document.addEventListener("keydown", (e) => {
  if (!data || e.target.closest("input:not([type=range]), textarea, select")) return;
  if (e.key !== "ArrowLeft" && e.key !== "ArrowRight") return;
  if (e.target === els.scrub) return;           // the slider moves itself and fires "input"
  e.preventDefault();
  setStep(step + (e.key === "ArrowRight" ? 1 : -1));
});
els.fpFind.addEventListener("click", findFixed);
els.fpChar.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); findFixed(); } });
// A typed space would leave the box looking empty: show it as ␣ (heldChar reads it back).
els.fpChar.addEventListener("input", () => { if (els.fpChar.value === " ") els.fpChar.value = "␣"; });
els.fpClear.addEventListener("click", () => { fixed = null; drawFixedSummary(); if (data) { update(); setStep(step, { write: false }); } });

async function main() {
  const found = await pageModels(els.status, "No models are loaded.", { menu: els.model, emptyStatus: els.chartStatus });
  if (!found) return;
  models = found;
  if (els.fpChar.value === " ") els.fpChar.value = "␣";
  fillModelSelect(els.model, models, els.model.dataset.initial);
  fillLayers();
  for (const el of [els.quantity, els.colour, els.dims]) {
    const v = el.dataset.initial;
    if (v && [...el.options].some((o) => o.value === v && !o.disabled)) el.value = v;
  }
  await fillPassages();
  await project();
  if (data && els.fpChar.value) await findFixed();
}

main();
