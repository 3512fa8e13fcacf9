// Gradients through time: ||dL/dh_k|| (and the LSTM's ||dL/dc_k||) for several models on
// one text, one request per model; and the singular values of each layer's W_hh.
import { api, defaultModels, everyoneToggle, fillPassageMenu, formatNumber, isAbort, latest, logAxis, matchPassage, modelColours, modelPassages, pageModels, PLOT_CONFIG, PLOT_FONT, queryParams, renderChars, setStatus, showChar, superscript, toInt, writeQuery } from "./common.js";

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
// Per model, the characters of the text on screen it does not know (from its refusal, [] once it
// has read the text); kept for that one text.
const unknownChars = { text: null, byModel: new Map() };
// The text whose unknown characters the reader chose to leave out (drop=1 in the link): each
// model then reads it without its own, and a new text asks again.
let dropFor = null;

/** The legend above a chart wraps to as many rows as its entries need (four models' take
 * three): once drawn, the top margin grows to hold it, so it never covers the first panel. */
function roomForLegend(chart, layout) {
  const legend = chart.querySelector(".legend");
  const needed = legend ? Math.ceil(legend.getBBox().height) + 28 : 0;
  if (needed > layout.margin.t) {
    Plotly.relayout(chart, { "margin.t": needed, height: layout.height + needed - layout.margin.t });
  }
}

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

const powerOfTen = (k) => (k === 1 ? "10" : `10${superscript(k)}`);

/** What the log axes' grid lines mean, from their dticks: one per panel, each from its own
 * range (a short range is labelled between the powers of ten and has no dtick). */
function scaleCaption(dticks) {
  const kinds = new Set(dticks);
  const [k] = kinds;
  if (kinds.size === 1 && Number.isInteger(k)) {
    return `Log scale: each labelled grid line down is a factor of ${powerOfTen(k)} smaller; `
      + (k === 1 ? "the faint lines between mark 2, 3 … 9 times a power of ten." : "the faint lines mark every power of ten.");
  }
  return "Log scale: equal distances up are equal factors; each panel is labelled to fit its own range.";
}

function gradFigure(results, chars, position) {
  const ok = results.filter((r) => r.data);
  const numLayers = Math.max(...ok.map((r) => r.data.layers.length));
  const colours = modelColours(models);
  const traces = [];
  const ks = Array.from({ length: position + 1 }, (_, k) => k);
  const panelValues = Array.from({ length: numLayers }, () => []);
  for (const r of ok) {
    const name = models.find((m) => m.id === r.id)?.name || r.id;
    const top = r.data.layers.length - 1;
    // A model that read the text without some characters: its steps at their places in the text.
    const xs = r.xs ?? ks;
    const labels = xs.map((k) => showChar(chars[k]));
    for (const layer of r.data.layers) {
      const row = numLayers - 1 - layer.layer;   // the top layer is drawn first
      panelValues[row].push(...layer.h_grad_norm, ...(layer.c_grad_norm || []));
      const axes = { xaxis: axisName("x", row), yaxis: axisName("y", row) };
      const common = { type: "scatter", mode: "lines", x: xs, customdata: labels, legendgroup: r.id, ...axes };
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
    layout[ya] = { ...logAxis(panelValues[row]), title: { text: `layer ${l}` } };
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
  const { traces, layout } = gradFigure(results, chars, position);
  els.gradScale.textContent = scaleCaption(Object.keys(layout).filter((k) => /^yaxis\d*$/.test(k)).map((k) => layout[k].dtick));
  (drawn.grad ? Plotly.react : Plotly.newPlot)(els.gradChart, traces, layout, PLOT_CONFIG).then(() => roomForLegend(els.gradChart, layout));
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
      // The dashed σ = 1 is on the axis too.
      const values = [1, ...blocks(layer).flatMap(([, v]) => v)];
      layout[axisName("yaxis", i)] = { ...logAxis(values), title: c === 0 ? { text: `layer ${layer.layer}: σ` } : undefined };
      layout.shapes.push({
        type: "line", xref: `${xref} domain`, yref, x0: 0, x1: 1, y0: 1, y1: 1, line: { color: "#1d2330", width: 1.5, dash: "dash" },
      });
      const top = blocks(layer).map(([b, v]) => `${b} ${v[0].toFixed(cols > 2 ? 1 : 2)}`).join(", ");
      // Three or more panels a row are too narrow for the title and σ₁ on one line.
      layout.annotations.push({
        xref: `${xref} domain`, yref: `${yref} domain`, x: 0, y: 1.02, xanchor: "left", yanchor: "bottom", showarrow: false,
        text: `<b>${r.id}</b> layer ${layer.layer}${cols > 2 ? "<br>" : " · "}σ₁: ${top}`, font: { size: 12 },
        align: "left",
      });
    }
  });
  (drawn.sv ? Plotly.react : Plotly.newPlot)(els.svChart, traces, layout, PLOT_CONFIG).then(() => roomForLegend(els.svChart, layout));
  drawn.sv = true;
}

function drawSummary(results) {
  const body = els.summary.querySelector("tbody");
  const colours = modelColours(models);
  const fmt = (v) => (v === undefined ? "—" : v === null ? "overflow" : v === 0 ? "0 (underflow)" : formatNumber(v, { exponent: 2 }));
  body.replaceChildren(...results.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.model = r.id;
    if (!r.data) {
      tr.innerHTML = `<td></td><td colspan="4" style="color:var(--error)"></td>`;
      tr.cells[0].textContent = r.id;
      tr.cells[1].textContent = r.error ?? `does not know ${charList(r.unknown)}: they are not in its vocabulary.`;
      return tr;
    }
    // At the model's own steps: one that read the text without some characters took fewer.
    const top = r.data.layers[r.data.layers.length - 1].h_grad_norm, at = r.data.position;
    const cells = [r.id, r.data.loss.toFixed(3), fmt(top[at]), fmt(at >= 20 ? top[at - 20] : undefined), fmt(top[0])];
    cells.forEach((v) => tr.append(Object.assign(document.createElement("td"), { textContent: v })));
    tr.cells[0].prepend(Object.assign(document.createElement("span"), { className: "swatch" }));
    tr.cells[0].firstChild.style.background = colours[r.id];
    if (r.without) {
      tr.cells[0].append(Object.assign(document.createElement("div"), { className: "muted small",
        textContent: `read without ${charList(r.without)}` }));
    }
    return tr;
  }));
  els.summary.hidden = false;
}

/** The characters of `results`' models that read the text without some: char -> their ids. */
function leftOut(results) {
  const out = new Map();
  for (const r of results) for (const c of r.without ?? []) out.set(c, [...(out.get(c) ?? []), r.id]);
  return out;
}

function drawText(chars, position, results) {
  const spans = renderChars(els.charmap, chars);
  const gone = leftOut(results);
  spans.forEach((s, i) => {
    if (i === position) s.classList.add("anchor");
    if (i === position + 1) s.classList.add("target");
    if (i > position + 1) s.style.opacity = "0.35";
    if (gone.has(chars[i])) {
      s.style.textDecoration = "line-through";
      s.title = `${listIds(gone.get(chars[i]))} read the text without it`;
    }
  });
  els.posLabel.textContent = position;
  els.textView.hidden = false;
  // Scroll the text box, not the page, to the position.
  const anchor = spans[position];
  if (anchor) els.charmap.scrollTop = anchor.offsetTop - els.charmap.clientHeight / 2;
}

/** ‘(’, ‘)’ and ‘1’: distinct characters as labels show them. */
function charList(chars) {
  return listIds(chars.map((c) => `‘${showChar(c)}’`));
}

/** "a", "a and b", "a, b and c". */
const listIds = (names) => (names.length < 2 ? names.join("") : `${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`);

/** The models that do not know some characters of the text, grouped by which: "lstm and gru do
 * not know ‘(’ and ‘1’". */
function unknownSummary(lacking) {
  const byChars = new Map();
  for (const r of lacking) {
    const key = r.unknown.join("");
    byChars.set(key, [...(byChars.get(key) ?? []), r]);
  }
  return [...byChars.values()].map((rs) => `${listIds(rs.map((r) => r.id))} ${rs.length > 1 ? "do" : "does"} not know `
    + `${charList(rs[0].unknown)}`).join("; ") + ": a model knows only the characters of the text it was trained on.";
}

/** One message when every model refused for the same reason, else one per model. */
function errorSummary(failed) {
  const lacking = failed.filter((r) => r.unknown && !r.error), other = failed.filter((r) => r.error);
  const messages = new Set(other.map((r) => r.error));
  const rest = messages.size === 1 && !lacking.length ? [...messages][0] : other.map((r) => `${r.id}: ${r.error}`).join(" · ");
  return [lacking.length ? unknownSummary(lacking) : "", rest].filter(Boolean).join(" · ");
}

/** The status above the text: why models refused, with one button to leave out the characters
 * they do not know; or, having left them out, which prediction is explained when it moved. */
function drawStatus(results, note) {
  const lacking = results.filter((r) => r.unknown && !r.error && !r.data);
  const failed = results.filter((r) => !r.data);
  if (lacking.length) {
    const everyone = failed.length === results.length;
    const message = everyone ? errorSummary(failed) : unknownSummary(lacking);
    setStatus(els.status, everyone ? "error" : "empty", message, {
      html: `<p><button type="button" class="secondary" id="drop">Leave those characters out and backpropagate</button>
        Each model then reads the text without the characters it does not know (struck through below).</p>` });
    document.getElementById("drop").addEventListener("click", () => { dropFor = els.text.value; compute(); });
  } else if (failed.length === results.length) {
    setStatus(els.status, "error", errorSummary(failed));
  } else {
    setStatus(els.status, note ? "empty" : "", note);
  }
}

/** The one function that draws everything from the per-model results. */
function update(results, chars, position) {
  const failed = results.filter((r) => !r.data);
  drawText(chars, position, results);
  drawSummary(results);
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

/** The model's answer, or why it refused: `unknown` lists the characters it does not know. */
async function ask(id, body, signal) {
  try {
    return { id, data: await api(`/api/models/${encodeURIComponent(id)}/gradients`, body, { signal, status: els.status }) };
  } catch (e) {
    if (isAbort(e)) throw e;
    const unknown = e.status === 422 && e.detail?.[0]?.type === "unknown_characters" ? e.detail[0].ctx?.chars : null;
    return unknown ? { id, unknown } : { id, error: e.message };
  }
}

/** Model `id` reading `chars` without the characters in `unknown`, differentiating the loss of
 * the same character, chars[position + 1], as the others: the position among the characters it
 * keeps is the last of them at or before `position`. Its steps keep their places in the text (xs). */
async function askWithout(id, chars, unknown, position, signal) {
  if (!(position >= 0 && position <= chars.length - 2)) {
    return { id, unknown, error: `position must be between 0 and ${chars.length - 2} (len(text) - 2).` };
  }
  const gone = new Set(unknown);
  const target = chars[position + 1];
  if (gone.has(target)) {
    return { id, unknown, error: `cannot predict ‘${showChar(target)}’: it is not in its vocabulary. Click a character it knows.` };
  }
  const xs = [];
  chars.forEach((c, i) => { if (i <= position && !gone.has(c)) xs.push(i); });
  if (!xs.length) return { id, unknown, error: `knows none of the characters before ‘${showChar(target)}’.` };
  const r = await ask(id, { text: chars.join(""), position: xs.length - 1, drop_unknown: true }, signal);
  return r.data ? { ...r, xs, without: unknown } : r;
}

/** The last position whose next character every model in `lacking` knows, else `last`. */
function lastKnownToAll(chars, lacking, last) {
  const gone = new Set(lacking.flatMap((id) => unknownChars.byModel.get(id)));
  for (let p = last; p >= 0; p--) if (!gone.has(chars[p + 1])) return p;
  return last;
}

async function compute() {
  const text = els.text.value;
  const ids = chosenModels();
  const position = els.position.value === "" ? null : toInt(els.position.value, null);
  const dropping = dropFor === text;
  writeQuery({ text, position: position ?? "", models: ids.join(","), drop: dropping ? 1 : "" });
  if (text.length < 2 || ids.length === 0) {
    const msg = ids.length === 0 ? "Choose at least one model to compare." : "The text needs at least two characters: one to read, one to predict.";
    setStatus(els.status, "empty", msg);
    setStatus(els.gradStatus, "empty", "The chart appears once there is something to backpropagate.");
    els.gradChart.hidden = els.svChart.hidden = true;
    els.summary.hidden = els.textView.hidden = true;
    return;
  }
  if (unknownChars.text !== text) Object.assign(unknownChars, { text, byModel: new Map() });
  const known = unknownChars.byModel;
  const chars = [...text], last = chars.length - 2;
  let p = position ?? last, note = "";
  const signal = nextSignal();
  setStatus(els.status, "loading", `Backpropagating through ${ids.length} model${ids.length > 1 ? "s" : ""}…`);
  els.compute.disabled = true;
  let results;
  try {
    // The text as typed, to every model not already known to lack some of its characters.
    const body = position === null ? { text } : { text, position };
    results = await Promise.all(ids.map((id) => (dropping && known.get(id)?.length ? null : ask(id, body, signal))));
    for (const r of results) if (r?.data || r?.unknown) known.set(r.id, r.unknown ?? []);
    const lacking = ids.filter((id) => known.get(id)?.length);
    if (dropping && lacking.length) {
      if (position === null) {
        // "last": the last character every model can predict, so all explain the same one.
        p = lastKnownToAll(chars, lacking, last);
        if (p !== last) {
          note = `The last character, ‘${showChar(chars[last + 1])}’, is not in the vocabulary of `
            + `${listIds(lacking.filter((id) => known.get(id).includes(chars[last + 1])))}: the prediction explained is `
            + `the last one every model knows, ‘${showChar(chars[p + 1])}’ after step ${p}.`;
        }
      }
      results = await Promise.all(ids.map((id, k) => {
        if (lacking.includes(id)) return askWithout(id, chars, known.get(id), p, signal);
        const r = results[k];
        return r.data && r.data.position !== p ? ask(id, { text, position: p }, signal) : r;
      }));
    }
  } catch (e) {
    if (isAbort(e)) return;
    throw e;
  } finally {
    els.compute.disabled = false;
  }
  drawStatus(results, note);
  update(results, chars, Math.max(0, Math.min(p, last)));
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
els.text.addEventListener("input", () => matchPassage(els.passage, els.text.value));
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
  if (!els.text.value && passages.length) els.text.value = passages[0].text;
  matchPassage(els.passage, els.text.value);
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
  if (queryParams().get("drop") === "1") dropFor = els.text.value;
  await compute();
}

main();
