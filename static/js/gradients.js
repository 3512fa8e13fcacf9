// Gradients through time: ||dL/dh_k|| (and the LSTM's ||dL/dc_k||) for several models on
// one text, one request per model; and the singular values of each layer's W_hh.
import { api, defaultModels, everyoneToggle, fillPassageMenu, isAbort, latest, modelColours, modelPassages, pageModels, PLOT_CONFIG, PLOT_FONT, renderChars, setStatus, showChar, toInt, writeQuery } from "./common.js";

const $ = (id) => document.getElementById(id);
const els = {
  passage: $("passage"), text: $("text"), position: $("position"), compute: $("compute"), models: $("models"),
  status: $("status"), textView: $("text-view"), charmap: $("charmap"), posLabel: $("pos-label"),
  gradChart: $("grad-chart"), gradStatus: $("grad-status"), gradScale: $("grad-scale"), summary: $("summary"),
  svChart: $("sv-chart"), svStatus: $("sv-status"),
};
const BLOCK_COLOURS = {
  h: "#495057", i: "#1c6dd0", f: "#2f9e44", g: "#e8590c", o: "#7048e8", r: "#d6336c", z: "#0c8599", n: "#f08c00",
};
const BLOCK_LABELS = {
  h: "RNN", i: "input", f: "forget", g: "candidate", o: "output", r: "reset", z: "update", n: "candidate",
};

let models = [];          // from /api/models
const nextSignal = latest();
const drawn = { grad: false, sv: false };

function chosenModels() {
  return [...els.models.querySelectorAll("input:checked")].map((i) => i.value);
}

function fillModelChips(wanted) {
  const chosen = wanted.filter((id) => models.some((m) => m.id === id));
  const initial = chosen.length ? chosen : defaultModels(models);
  els.models.querySelectorAll("label, span").forEach((n) => n.remove());
  const colours = modelColours(models);
  for (const m of models) {
    const label = document.createElement("label");
    label.className = "chip";
    label.innerHTML = `<input type="checkbox" style="margin:0 6px 0 0"><span class="swatch"></span>`;
    label.append(`${m.name}`);
    const box = label.querySelector("input");
    box.value = m.id;
    box.checked = initial.includes(m.id);
    label.querySelector(".swatch").style.background = colours[m.id];
    box.addEventListener("change", () => compute());
    els.models.append(label);
  }
}

// ---- Charts -----------------------------------------------------------------------------

function axisName(kind, i) {
  return i === 0 ? kind : `${kind}${i + 1}`;
}

// Grid lines a panel of ~250 px can hold and stay readable.
const MAX_GRID_LINES = 8;

/** Decades between grid lines on the log axes: 1 unless the values span more than
 * MAX_GRID_LINES decades, the same for every panel so one caption describes them all. */
function decadesPerGridLine(results) {
  let lo = Infinity, hi = -Infinity;
  for (const r of results) {
    for (const layer of r.data.layers) {
      for (const v of [...layer.h_grad_norm, ...(layer.c_grad_norm || [])]) {
        if (v > 0 && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
    }
  }
  if (!(hi > lo)) return 1;
  return Math.max(1, Math.ceil((Math.log10(hi) - Math.log10(lo)) / MAX_GRID_LINES));
}

const SUPERSCRIPT = "⁰¹²³⁴⁵⁶⁷⁸⁹";
const powerOfTen = (k) => (k === 1 ? "10" : `10${[...String(k)].map((d) => SUPERSCRIPT[d]).join("")}`);

function gradFigure(results, chars, position, dtick) {
  const ok = results.filter((r) => r.data);
  const numLayers = Math.max(...ok.map((r) => r.data.layers.length));
  const colours = modelColours(models);
  const traces = [];
  const ks = Array.from({ length: position + 1 }, (_, k) => k);
  const labels = ks.map((k) => showChar(chars[k]));
  for (const r of ok) {
    const name = models.find((m) => m.id === r.id)?.name || r.id;
    const top = r.data.layers.length - 1;
    for (const layer of r.data.layers) {
      const row = numLayers - 1 - layer.layer;   // the top layer is drawn first
      const axes = { xaxis: axisName("x", row), yaxis: axisName("y", row) };
      const common = { type: "scatter", mode: "lines", x: ks, customdata: labels, legendgroup: r.id, ...axes };
      // One legend entry per model and norm, from its top layer, whatever its depth.
      const showlegend = layer.layer === top;
      traces.push({
        ...common, y: layer.h_grad_norm, name: `${name}: ‖∂L/∂h‖`, showlegend, meta: [r.id, layer.layer, "h"],
        line: { color: colours[r.id], width: 2 },
        hovertemplate: `${r.id} layer ${layer.layer}<br>k = %{x} ‘%{customdata}’<br>‖∂L/∂h‖ = %{y:.3g}<extra></extra>`,
      });
      if (layer.c_grad_norm) {
        traces.push({
          ...common, y: layer.c_grad_norm, name: `${name}: ‖∂L/∂c‖`, showlegend, meta: [r.id, layer.layer, "c"],
          line: { color: colours[r.id], width: 2, dash: "dash" },
          hovertemplate: `${r.id} layer ${layer.layer}<br>k = %{x} ‘%{customdata}’<br>‖∂L/∂c‖ = %{y:.3g}<extra></extra>`,
        });
      }
    }
  }
  const layout = {
    font: PLOT_FONT, height: 170 + 250 * numLayers, margin: { l: 70, r: 20, t: 80, b: 50 },
    grid: { rows: numLayers, columns: 1, pattern: "independent", roworder: "top to bottom", ygap: 0.18 },
    legend: { orientation: "h", x: 0, xanchor: "left", yref: "container", y: 0.995, yanchor: "top" },
    hovermode: "closest", annotations: [], shapes: [],
  };
  for (let row = 0; row < numLayers; row++) {
    const l = numLayers - 1 - row;
    const xa = `${axisName("xaxis", row)}`, ya = `${axisName("yaxis", row)}`;
    layout[xa] = { range: [-0.5, position + 0.5], title: row === numLayers - 1 ? { text: "k: the step whose hidden state is perturbed" } : undefined, zeroline: false };
    layout[ya] = { type: "log", dtick, title: { text: `layer ${l}` }, exponentformat: "power" };
    layout.annotations.push({
      xref: `${axisName("x", row)} domain`, yref: `${axisName("y", row)} domain`, x: 0, y: 1.02, xanchor: "left", yanchor: "bottom",
      text: l === numLayers - 1 ? `<b>Layer ${l}</b> (top, feeds the prediction)` : `<b>Layer ${l}</b>`, showarrow: false,
    });
    layout.shapes.push({
      type: "line", xref: axisName("x", row), yref: `${axisName("y", row)} domain`, x0: position, x1: position, y0: 0, y1: 1,
      line: { color: "#8a93a3", width: 1, dash: "dot" },
    });
  }
  return { traces, layout };
}

function drawGradients(results, chars, position) {
  const ok = results.filter((r) => r.data);
  const dtick = decadesPerGridLine(ok);
  els.gradScale.textContent = `Log scale: each grid line down is a factor of ${powerOfTen(dtick)} smaller.`;
  const { traces, layout } = gradFigure(results, chars, position, dtick);
  (drawn.grad ? Plotly.react : Plotly.newPlot)(els.gradChart, traces, layout, PLOT_CONFIG);
  drawn.grad = true;
}

/** [block, values] for each H x H block of a layer's W_hh. */
const blocks = (layer) => layer.singular_values.map((s) => [s.block, s.values]);

function drawSingularValues(results) {
  const ok = results.filter((r) => r.data);
  const numLayers = Math.max(...ok.map((r) => r.data.layers.length));
  const cols = ok.length;
  const traces = [], seen = new Set();
  const layout = {
    font: PLOT_FONT, height: 170 + 230 * numLayers, margin: { l: 60, r: 20, t: 100, b: 50 },
    grid: { rows: numLayers, columns: cols, pattern: "independent", roworder: "top to bottom", xgap: 0.12, ygap: 0.25 },
    legend: { title: { text: "block of W_hh: " }, orientation: "h", x: 0, xanchor: "left", yref: "container", y: 0.995, yanchor: "top" },
    annotations: [], shapes: [], hovermode: "closest",
  };
  ok.forEach((r, c) => {
    for (const layer of r.data.layers) {
      const row = numLayers - 1 - layer.layer;
      const i = row * cols + c;
      const xref = axisName("x", i), yref = axisName("y", i);
      for (const [block, values] of blocks(layer)) {
        traces.push({
          type: "scatter", mode: "lines", xaxis: xref, yaxis: yref,
          x: values.map((_, k) => k + 1), y: values, name: `${block} · ${BLOCK_LABELS[block] || block}`, meta: [r.id, layer.layer, block], legendgroup: block, showlegend: !seen.has(block),
          line: { color: BLOCK_COLOURS[block] || "#495057", width: 2 },
          hovertemplate: `${r.id} layer ${layer.layer}, block ${block}<br>σ<sub>%{x}</sub> = %{y:.3f}<extra></extra>`,
        });
        seen.add(block);
      }
      layout[axisName("xaxis", i)] = { title: row === numLayers - 1 ? { text: "index (largest first)" } : undefined };
      // dtick 1: one tick per power of ten, without the 2s and 5s a short log range gets.
      layout[axisName("yaxis", i)] = { type: "log", dtick: 1, title: c === 0 ? { text: `layer ${layer.layer}: σ` } : undefined, exponentformat: "power" };
      layout.shapes.push({
        type: "line", xref: `${xref} domain`, yref, x0: 0, x1: 1, y0: 1, y1: 1, line: { color: "#1d2330", width: 1.5, dash: "dash" },
      });
      const top = blocks(layer).map(([b, v]) => `${b} ${v[0].toFixed(2)}`).join(", ");
      layout.annotations.push({
        xref: `${xref} domain`, yref: `${yref} domain`, x: 0, y: 1.02, xanchor: "left", yanchor: "bottom", showarrow: false,
        text: `<b>${r.id}</b> layer ${layer.layer} · σ₁: ${top}`, font: { size: 12 },
      });
    }
  });
  (drawn.sv ? Plotly.react : Plotly.newPlot)(els.svChart, traces, layout, PLOT_CONFIG);
  drawn.sv = true;
}

function drawSummary(results, position) {
  const body = els.summary.querySelector("tbody");
  const colours = modelColours(models);
  const fmt = (v) => (v === undefined ? "—" : v === null ? "overflow" : v === 0 ? "0 (underflow)" : v.toExponential(2));
  body.replaceChildren(...results.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.model = r.id;
    if (!r.data) {
      tr.innerHTML = `<td></td><td colspan="4" style="color:var(--error)"></td>`;
      tr.cells[0].textContent = r.id;
      tr.cells[1].textContent = r.error;
      return tr;
    }
    const top = r.data.layers[r.data.layers.length - 1].h_grad_norm;
    const cells = [r.id, r.data.loss.toFixed(3), fmt(top[position]), fmt(position >= 20 ? top[position - 20] : undefined), fmt(top[0])];
    cells.forEach((v) => tr.append(Object.assign(document.createElement("td"), { textContent: v })));
    tr.cells[0].prepend(Object.assign(document.createElement("span"), { className: "swatch" }));
    tr.cells[0].firstChild.style.background = colours[r.id];
    return tr;
  }));
  els.summary.hidden = false;
}

function drawText(chars, position) {
  const spans = renderChars(els.charmap, chars);
  spans.forEach((s, i) => {
    if (i === position) s.classList.add("anchor");
    if (i === position + 1) s.classList.add("target");
    if (i > position + 1) s.style.opacity = "0.35";
  });
  els.posLabel.textContent = position;
  els.textView.hidden = false;
  // Scroll the text box, not the page, to the position.
  const anchor = spans[position];
  if (anchor) els.charmap.scrollTop = anchor.offsetTop - els.charmap.clientHeight / 2;
}

/** One message when every model refused for the same reason, else one per model. */
function errorSummary(failed) {
  const messages = new Set(failed.map((r) => r.error));
  return messages.size === 1 ? [...messages][0] : failed.map((r) => `${r.id}: ${r.error}`).join(" · ");
}

/** The one function that draws everything from the per-model results. */
function update(results, chars, position) {
  const failed = results.filter((r) => !r.data);
  drawText(chars, position);
  drawSummary(results, position);
  if (failed.length === results.length) {
    // The reason is shown once, above; the charts say what would bring them back.
    setStatus(els.gradStatus, "empty", "The curves appear once a model can read the text at this position.");
    setStatus(els.svStatus, "empty", "The spectra appear with the curves.");
    els.gradChart.hidden = els.svChart.hidden = true;
    return;
  }
  setStatus(els.gradStatus, "");
  setStatus(els.svStatus, "");
  els.gradChart.hidden = els.svChart.hidden = false;
  drawGradients(results, chars, position);
  drawSingularValues(results);
}

// ---- Data -------------------------------------------------------------------------------

async function compute() {
  const text = els.text.value;
  const ids = chosenModels();
  const position = els.position.value === "" ? null : toInt(els.position.value, null);
  writeQuery({ text, position: position ?? "", models: ids.join(",") });
  if (text.length < 2 || ids.length === 0) {
    const msg = ids.length === 0 ? "Choose at least one model to compare." : "The text needs at least two characters: one to read, one to predict.";
    setStatus(els.status, "empty", msg);
    setStatus(els.gradStatus, "empty", "The chart appears once there is something to backpropagate.");
    els.gradChart.hidden = els.svChart.hidden = true;
    els.summary.hidden = els.textView.hidden = true;
    return;
  }
  const signal = nextSignal();
  setStatus(els.status, "loading", `Backpropagating through ${ids.length} model${ids.length > 1 ? "s" : ""}…`);
  els.compute.disabled = true;
  const body = position === null ? { text } : { text, position };
  const results = await Promise.all(ids.map(async (id) => {
    try {
      return { id, data: await api(`/api/models/${encodeURIComponent(id)}/gradients`, body, { signal }) };
    } catch (e) {
      if (isAbort(e)) throw e;
      return { id, error: e.message };
    }
  })).catch((e) => (isAbort(e) ? null : Promise.reject(e)));
  els.compute.disabled = false;
  if (!results) return;
  setStatus(els.status, "");
  const first = results.find((r) => r.data);
  const pos = first ? first.data.position : (position ?? text.length - 2);
  if (!first) {
    // Every model refused: show why, and keep the text view so another position can be clicked.
    setStatus(els.status, "error", errorSummary(results));
  }
  update(results, [...text], Math.min(pos, text.length - 2));
}

// ---- Controls ---------------------------------------------------------------------------

els.compute.addEventListener("click", compute);
els.position.addEventListener("change", compute);
els.passage.addEventListener("change", () => {
  const opt = els.passage.selectedOptions[0];
  if (!opt.dataset.text) return;
  els.text.value = opt.dataset.text;
  els.position.value = "";
  compute();
});
els.text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); compute(); }
});
els.charmap.addEventListener("click", (e) => {
  const span = e.target.closest(".ch");
  if (!span || Number(span.dataset.i) < 1) return;
  els.position.value = Number(span.dataset.i) - 1;   // predict the clicked character
  compute();
});

/** Passages of the first chosen model's own corpus (or one it wrote itself), the first of
 * them in the text box when it is empty. */
async function fillPassages() {
  const first = chosenModels()[0];
  const passages = await modelPassages(first);
  if (first !== chosenModels()[0]) return;     // the ticks changed meanwhile: the newer answer wins
  fillPassageMenu(els.passage, passages);
  if (!els.text.value && passages.length) {
    els.text.value = passages[0].text;
    els.passage.value = "0";
  }
}

async function main() {
  const found = await pageModels(els.status, "No models are loaded, so there is nothing to backpropagate through.",
    { onEmpty: () => els.models.querySelectorAll("span").forEach((n) => n.remove()) });
  if (!found) return;
  everyoneToggle(els.models);
  models = found;
  const wanted = (els.models.dataset.initial || "").split(",").filter(Boolean);
  fillModelChips(wanted);
  await fillPassages();
  await compute();
}

main();
