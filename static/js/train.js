// Train: upload a corpus, read its preflight, start a run with defaults chosen from it,
// and watch it learn through /api/runs/{id}/events; past runs below.
import { bytes, request } from "./changes.js";
import { formatCount, logAxis, PLOT_CONFIG, PLOT_FONT, queryParams, setStatus, showChar, writeQuery } from "./common.js";

const $ = (id) => document.getElementById(id);
const els = {
  file: $("file"), dropzone: $("dropzone"), corpusSelect: $("corpus-select"), uploadStatus: $("upload-status"),
  preflight: $("preflight"), corpusStats: $("corpus-stats"), recommend: $("recommend"), vocab: $("vocab"),
  vocabCount: $("vocab-count"), configCard: $("config-card"), form: $("run-form"), estimate: $("estimate"),
  start: $("start"), startStatus: $("start-status"), runCard: $("run-card"), runName: $("run-name"),
  runStatus: $("run-status"), runOwner: $("run-owner"), runConfig: $("run-config"), cancel: $("cancel"), resume: $("resume"),
  exploreLink: $("explore-link"), sampleLink: $("sample-link"), progress: $("progress"), doneBanner: $("done-banner"),
  runMessage: $("run-message"), runStats: $("run-stats"), lossChart: $("loss-chart"), gradChart: $("grad-chart"),
  conceptsChart: $("concepts-chart"), conceptsStatus: $("concepts-status"), conceptsFormed: $("concepts-formed"),
  conceptsSkipped: $("concepts-skipped"),
  samples: $("samples"), gttChart: $("gtt-chart"), gttStatus: $("gtt-status"), gttLayer: $("gtt-layer"), gttNote: $("gtt-note"), runsTable: $("runs-table"),
  runsStatus: $("runs-status"), runsEveryone: $("runs-everyone"), capacity: $("training-capacity"), runWhere: $("run-where"), attempts: $("attempts"),
};
const FIELDS = ["cell", "hidden_size", "num_layers", "seq_length", "batch_size", "learning_rate", "dropout", "max_steps"];
const ACTIVE = new Set(["queued", "running"]);
const COLOURS = { train: "#9db4f0", trainLine: "#3557d4", val: "#e8590c", grad: "#5b6577", clip: "#d6336c" };

let corpus = null;        // the corpus whose preflight is shown
let run = null;           // the run shown in step 3
let events = null;        // its EventSource while it trains
let lastStep = 0;         // the last step drawn
let pending = [];         // steps received but not yet drawn
let drawQueued = false;
let runPoll = null;
let lastCheckpoint = null;
let gradSpan = null;      // {lo, hi}: the gradient norms drawn and the clipping threshold, for its log axis
let attemptsOf = null;    // {id, list}: the shown run's attempts (its status events carry none)
let capacity = null;      // GET /api/training, as of the runs table's last refresh
let runs = [];            // GET /api/runs, likewise
let runsTimer = null;     // the table's next refresh, while some run is queued or running
let runsCall = 0;         // the latest loadRuns call; an older one's answer is dropped
// The table refreshes itself this often while a run is queued or running: it is how the page
// shows runs it does not follow with events (a class's or a sweep's, two or more at once).
const RUNS_REFRESH_MS = 2000;
const LOST_SHOWN = 3;        // lost nodes named in the training line; the rest are counted

// ---- Formatting ---------------------------------------------------------------------------

function duration(s) {
  if (s == null || !Number.isFinite(s)) return "—";
  if (s < 9.95) return `${s.toFixed(1)} s`;
  s = Math.round(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, "0")} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor(s / 60) % 60).padStart(2, "0")} min`;
}

/** The neuron explorer on a run's model, at its top layer (the one that feeds the prediction). */
const exploreHref = (r) => `/explore?model=${encodeURIComponent(r.model_id)}&layer=${r.config.num_layers - 1}`;

const loss = (x) => (x == null ? "—" : x.toFixed(3));
const when = (t) => (t ? new Date(t * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" }) : "—");

function stat(value, label, title = "") {
  const div = document.createElement("div");
  div.className = "stat";
  div.innerHTML = "<b></b><span></span>";
  div.querySelector("b").textContent = value;
  div.querySelector("span").textContent = label;
  if (title) div.title = title;
  return div;
}

// ---- Step 1: the corpus ------------------------------------------------------------------------

async function upload(file) {
  const max = Number(els.file.dataset.maxBytes);
  if (file.size > max) {
    setStatus(els.uploadStatus, "error", `${file.name} is ${bytes(file.size)}; this server takes up to ${bytes(max)}.`);
    return;
  }
  setStatus(els.uploadStatus, "loading", `Reading ${file.name} (${bytes(file.size)}) and timing a training step…`);
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const c = await request("/api/corpora", { method: "POST", form, ownFields: ["file"] });
    // The same text twice is one corpus: say so rather than quietly keeping a copy.
    setStatus(els.uploadStatus, c.duplicate ? "empty" : "",
      c.duplicate ? `You uploaded this text before, as “${c.name}”: that corpus is selected again.` : "");
    showCorpus(c);
    loadCorpora(c.id);
  } catch (e) {
    setStatus(els.uploadStatus, "error", e);
  }
}

async function loadCorpora(selected) {
  try {
    const list = await request("/api/corpora");
    const options = list.map((c) => new Option(`${c.name} — ${formatCount(c.chars)} chars`, c.id));
    els.corpusSelect.replaceChildren(new Option(list.length ? "Choose…" : "No earlier uploads", ""), ...options);
    els.corpusSelect.disabled = list.length === 0;
    els.corpusSelect.value = selected ?? "";
  } catch { /* the list is a convenience; the drop zone still works */ }
}

function showCorpus(c) {
  corpus = c;
  const p = c.preflight, r = p.recommended, e = p.estimate;
  els.corpusStats.replaceChildren(
    stat(bytes(c.bytes), "file size"),
    stat(formatCount(p.chars), "characters", `${p.chars.toLocaleString()} characters, ${p.lines.toLocaleString()} lines`),
    stat(String(p.vocab_size), "distinct"),
    stat(`${formatCount(p.train_chars)} / ${formatCount(p.val_chars)}`, "train / validation"),
  );
  const cell = { lstm: "LSTM", gru: "GRU", rnn: "RNN" }[r.cell];
  els.recommend.innerHTML = `<p><b>Suggested: ${cell} ${r.num_layers} × ${r.hidden_size}</b>, about
    ${formatCount(r.parameters)} parameters for ${formatCount(p.train_chars)} training characters
    (<span class="ppc"></span>). char-rnn's rule of thumb: parameters of the order of the characters —
    far fewer underfits, far more memorises.</p>
    <p>A step of ${r.batch_size} × ${r.seq_length} characters took ${(e.seconds_per_step * 1000).toFixed(0)} ms here, so an
    epoch (${e.steps_per_epoch.toLocaleString()} steps) takes about <b>${duration(e.seconds_per_epoch)}</b> and
    ${r.max_steps.toLocaleString()} steps about <b>${duration(e.seconds_total)}</b>.</p>`;
  els.recommend.querySelector(".ppc").textContent = `${r.params_per_char.toFixed(2)} per character`;
  drawVocab(p.vocab, p.chars);
  els.preflight.hidden = false;
  els.corpusSelect.value = String(c.id);
  fillForm(r);
  els.configCard.hidden = false;
}

function drawVocab(vocab, total) {
  const top = vocab[0]?.count || 1;
  const shown = vocab.slice(0, 120);
  els.vocab.replaceChildren(...shown.map(({ char, count }) => {
    const span = document.createElement("span");
    span.className = "v";
    // Shade by log frequency, so rare characters stay visible.
    span.style.setProperty("--a", (0.06 + 0.5 * Math.log1p(count) / Math.log1p(top)).toFixed(3));
    span.title = `${JSON.stringify(char)}: ${count.toLocaleString()} (${((count / total) * 100).toFixed(2)}%)`;
    span.innerHTML = "<b></b><i></i>";
    span.querySelector("b").textContent = showChar(char);
    span.querySelector("i").textContent = formatCount(count);
    return span;
  }));
  if (vocab.length > shown.length) {
    els.vocab.append(Object.assign(document.createElement("span"), {
      className: "muted small", textContent: `and ${vocab.length - shown.length} rarer`,
    }));
  }
  els.vocabCount.textContent = `(${vocab.length})`;
}

// ---- Step 2: the form ------------------------------------------------------------------------

function fillForm(r) {
  for (const k of FIELDS) els.form.elements[k].value = r[k];
  els.form.elements.name.value = "";
  formChanged();
}

/** The name the server will give the run, and the time it will take. */
function formChanged() {
  const f = els.form.elements;
  f.name.placeholder = `${f.cell.value.toUpperCase()} ${f.num_layers.value}x${f.hidden_size.value} on ${corpus.name}`;
  scheduleEstimate();
}

function formBody() {
  const f = els.form.elements;
  const body = { corpus_id: corpus.id, cell: f.cell.value };
  for (const k of ["hidden_size", "num_layers", "seq_length", "batch_size", "max_steps"]) body[k] = Number.parseInt(f[k].value, 10);
  for (const k of ["learning_rate", "dropout"]) body[k] = Number.parseFloat(f[k].value);
  if (f.name.value.trim()) body.name = f.name.value.trim();
  return body;
}

let estimateTimer = null;
function scheduleEstimate() {
  clearTimeout(estimateTimer);
  estimateTimer = setTimeout(estimate, 350);
}

async function estimate() {
  if (!corpus) return;
  const b = formBody();
  if (FIELDS.slice(1).some((k) => !Number.isFinite(b[k]))) { els.estimate.textContent = ""; return; }
  const q = new URLSearchParams({ cell: b.cell, hidden_size: b.hidden_size, num_layers: b.num_layers,
    batch_size: b.batch_size, seq_length: b.seq_length, max_steps: b.max_steps });
  els.estimate.textContent = "Timing a step of this size…";
  try {
    const e = await request(`/api/corpora/${corpus.id}/estimate?${q}`);
    els.estimate.innerHTML = `<b>${formatCount(e.parameters)}</b> parameters ·
      ${(e.seconds_per_step * 1000).toFixed(0)} ms a step · an epoch ≈ ${duration(e.seconds_per_epoch)} ·
      these ${e.max_steps.toLocaleString()} steps ≈ <b>${duration(e.seconds_total)}</b>
      (${(e.max_steps / e.steps_per_epoch).toFixed(1)} epochs)`;
  } catch (err) {
    els.estimate.textContent = err.message;
  }
}

async function start() {
  els.start.disabled = true;
  setStatus(els.startStatus, "");
  try {
    const created = await request("/api/runs", { method: "POST", json: formBody() });
    await showRun(created.id);
    loadRuns();
    els.runCard.scrollIntoView({ behavior: "smooth", block: "start" });
  } catch (e) {
    setStatus(els.startStatus, "error", e);
  } finally {
    els.start.disabled = false;
  }
}

// ---- Step 3: a run ----------------------------------------------------------------------------------

/** Ticks at whole steps on an axis spanning `span` steps. Over a short span Plotly spaces its
 * ticks 0.2 or 0.5 apart (a one-checkpoint run's heatmap column spans 59.5 to 60.5); it draws
 * at most 10, so from 20 steps on its own spacing is 2 or more. Below that: 1, 2 or 5 apart,
 * whichever draws at most six. Only for charts drawn whole (an extended one's span grows). */
function wholeStepTicks(span) {
  if (span >= 20) return {};
  return { tickmode: "linear", tick0: 0, dtick: [1, 2, 5].find((d) => span / d <= 6) ?? 5 };
}

/** A chart's layout, without a height: each chart is as tall as its container (train.html), as
 * Plotly's resize makes it whatever the layout said. */
function layout(extra) {
  return {
    font: PLOT_FONT, margin: { l: 56, r: 16, t: 10, b: 44 }, showlegend: true,
    legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom", bgcolor: "rgba(0,0,0,0)" },
    xaxis: { title: { text: "step" }, rangemode: "tozero", zeroline: false, gridcolor: "#eef0f4" },
    paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fff", hovermode: "x unified",
    ...extra,
  };
}

function drawCharts(r, m) {
  const vocabSize = corpus?.id === r.corpus_id ? corpus.preflight.vocab_size : null;
  const shapes = [], annotations = [];
  if (vocabSize) {    // where an untrained model starts: a uniform guess over the vocabulary
    shapes.push({ type: "line", xref: "paper", x0: 0, x1: 1, y0: Math.log(vocabSize), y1: Math.log(vocabSize),
      line: { color: "#adb5bd", dash: "dot", width: 1 } });
    annotations.push({ xref: "paper", x: 1, xanchor: "right", y: Math.log(vocabSize), yanchor: "bottom", showarrow: false,
      text: `uniform guess, ln ${vocabSize}`, font: { size: 11, color: "#868e96" } });
  }
  Plotly.newPlot(els.lossChart, [
    { name: "training", x: m.step, y: m.loss, type: "scatter", mode: "lines", line: { color: COLOURS.trainLine, width: 1 },
      opacity: 0.75, hovertemplate: "%{y:.3f}" },
    { name: "validation", x: m.val_step, y: m.val_loss, type: "scatter", mode: "lines+markers",
      line: { color: COLOURS.val, width: 2.5 }, marker: { size: 6 }, hovertemplate: "%{y:.3f}" },
  ], layout({ yaxis: { title: { text: "nats / char" }, gridcolor: "#eef0f4" }, shapes, annotations }), PLOT_CONFIG);

  const clip = r.config.grad_clip;
  gradSpan = { lo: Infinity, hi: -Infinity };
  widenGradSpan(clip > 0 ? [clip, ...m.grad_norm] : m.grad_norm);      // the threshold's line is on the axis too
  const clippedX = [], clippedY = [];
  m.step.forEach((s, i) => { if (m.clipped[i]) { clippedX.push(s); clippedY.push(m.grad_norm[i]); } });
  Plotly.newPlot(els.gradChart, [
    { name: "‖g‖ before clipping", x: m.step, y: m.grad_norm, type: "scatter", mode: "lines",
      line: { color: COLOURS.grad, width: 1 }, hovertemplate: "%{y:.3f}" },
    { name: "clipped", x: clippedX, y: clippedY, type: "scatter", mode: "markers",
      marker: { color: COLOURS.clip, size: 5, symbol: "x" }, hovertemplate: "clipped" },
  ], layout({
    yaxis: gradAxis(),
    shapes: clip > 0 ? [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: clip, y1: clip,
      line: { color: COLOURS.clip, dash: "dash", width: 1.5 } }] : [],
    annotations: clip > 0 ? [{ xref: "paper", x: 1, xanchor: "right", y: Math.log10(clip), yanchor: "bottom",
      showarrow: false, text: `clipping threshold ${clip}`, font: { size: 11, color: COLOURS.clip } }] : [],
  }), PLOT_CONFIG);
}

/** The gradient chart's log axis, ticked for gradSpan (logAxis: at least three labels, the
 * powers of ten written out); six labels fit its height. */
function gradAxis() {
  return { title: { text: "global L2 norm" }, gridcolor: "#eef0f4", ...logAxis([gradSpan.lo, gradSpan.hi], { maxLabels: 6 }) };
}

function widenGradSpan(norms) {
  for (const v of norms) {
    if (v > 0 && Number.isFinite(v)) { gradSpan.lo = Math.min(gradSpan.lo, v); gradSpan.hi = Math.max(gradSpan.hi, v); }
  }
}

/** Draw the steps received since the last frame: one extendTraces per chart; the gradient
 * axis ticked anew when the norms left the range its ticks were chosen for. */
function drawPending() {
  drawQueued = false;
  if (!pending.length || !els.lossChart.data) return;
  const steps = pending.map((e) => e.step);
  const val = pending.filter((e) => e.val_loss != null);
  const clipped = pending.filter((e) => e.clipped);
  Plotly.extendTraces(els.lossChart, { x: [steps, val.map((e) => e.step)], y: [pending.map((e) => e.loss), val.map((e) => e.val_loss)] }, [0, 1]);
  Plotly.extendTraces(els.gradChart, { x: [steps, clipped.map((e) => e.step)], y: [pending.map((e) => e.grad_norm), clipped.map((e) => e.grad_norm)] }, [0, 1]);
  const ticked = JSON.stringify(gradAxis());
  widenGradSpan(pending.map((e) => e.grad_norm));
  const axis = gradAxis();
  if (JSON.stringify(axis) !== ticked) Plotly.react(els.gradChart, els.gradChart.data, { ...els.gradChart.layout, yaxis: axis });
  const last = pending[pending.length - 1];
  pending = [];
  drawProgress(last.step, run.max_steps, run.status);
  drawStats({ ...run, step: last.step, chars_per_sec: last.chars_per_sec, eta_seconds: last.eta_seconds,
    train_loss: run.train_loss });
}

function drawProgress(step, max, status) {
  const pct = Math.min(100, (100 * step) / max);
  els.progress.firstElementChild.style.width = `${pct}%`;
  els.progress.dataset.status = status;
  els.progress.setAttribute("aria-valuenow", pct.toFixed(0));
  drawRowSteps(run?.id, step, max);
}

/** The runs table shows the step the run card shows: one source, the newest step seen. */
function drawRowSteps(id, step, max) {
  const cell = els.runsTable.querySelector(`tr[data-run="${id}"] .steps`);
  if (cell) drawSteps(cell, step, max);
}

function drawSteps(cell, step, max) {
  setText(cell.querySelector(".count"), `${step.toLocaleString()} / ${max.toLocaleString()}`);
  cell.querySelector(".bar > div").style.width = `${Math.min(100, (100 * step) / max)}%`;
}

function drawStats(r) {
  // No time left to tell while a run waits for a node (worker null until Ray places it).
  const active = ACTIVE.has(r.status) && r.worker !== null;
  els.runStats.replaceChildren(
    stat(`${r.step.toLocaleString()} / ${r.max_steps.toLocaleString()}`, "steps",
      r.epoch ? `epoch ${r.epoch.toFixed(2)}` : ""),
    stat(loss(r.train_loss), "train loss", "mean of the last 100 steps, nats/char"),
    stat(loss(r.val_loss), "validation loss", r.best_val_loss ? `best ${r.best_val_loss.toFixed(3)}` : ""),
    stat(r.chars_per_sec ? formatCount(Math.round(r.chars_per_sec)) : "—", "chars / s"),
    stat(active ? duration(r.eta_seconds) : "—", "time left"),
    stat(duration(r.seconds), "trained for"),
  );
}

function drawSampleSet(step, list, fresh) {
  const set = document.createElement("article");
  set.className = fresh ? "sample-set new" : "sample-set";
  set.dataset.step = step;
  set.innerHTML = `<header><b>step ${step.toLocaleString()}</b></header>`;
  for (const s of list) {
    const row = document.createElement("div");
    row.className = "t";
    row.innerHTML = "<span></span><pre></pre>";
    row.querySelector("span").textContent = `T = ${s.temperature}`;
    row.querySelector("pre").textContent = s.text;
    set.append(row);
  }
  els.samples.prepend(set);
  while (els.samples.children.length > 30) els.samples.lastElementChild.remove();
}

function drawSamples(samples) {
  els.samples.replaceChildren();
  const bySteps = new Map();
  for (const s of samples) (bySteps.get(s.step) || bySteps.set(s.step, []).get(s.step)).push(s);
  for (const [step, list] of bySteps) drawSampleSet(step, list, false);
  if (!samples.length) {
    els.samples.innerHTML = `<div class="status" data-state="empty"><p>The first samples appear after a few steps.</p></div>`;
  }
}

async function drawGradients(runId) {
  let g;
  try {
    g = await request(`/api/runs/${runId}/gradients`);
  } catch { return; }
  const empty = !g.steps.length;
  setStatus(els.gttStatus, empty ? "empty" : "", "Drawn at each checkpoint; none yet.");
  els.gttChart.hidden = empty;
  if (empty) return;
  const layer = g.layers[g.layers.length - 1];
  const T = g.position + 1;
  // Rows: k steps back from the predicted character; columns: checkpoints.
  const z = Array.from({ length: T }, (_, back) => layer.h_grad_norm.map((row) => {
    const v = row[T - 1 - back];
    return v > 0 ? Math.log10(v) : null;
  }));
  // The columns' extent: each checkpoint's column reaches halfway to its neighbours, a lone one 1 step.
  const gttSpan = g.steps.length > 1 ? (g.steps[g.steps.length - 1] - g.steps[0]) * g.steps.length / (g.steps.length - 1) : 1;
  Plotly.react(els.gttChart, [{
    type: "heatmap", x: g.steps, y: Array.from({ length: T }, (_, k) => k), z,
    colorscale: "Viridis", colorbar: { title: { text: "log₁₀ ‖∂L/∂h‖", side: "right" }, thickness: 12 },
    hovertemplate: "step %{x}<br>%{y} steps back<br>log₁₀ norm %{z:.2f}<extra></extra>",
  }], layout({
    showlegend: false, hovermode: "closest",
    // A step axis, not one category per checkpoint: round ticks that lie flat, whatever the
    // checkpoints (a cancel writes one at an odd step); each column spans its checkpoint's steps.
    xaxis: { title: { text: "training step (checkpoint)", standoff: 10 }, type: "linear", tickangle: 0,
      automargin: true, zeroline: false, ...wholeStepTicks(gttSpan) },
    yaxis: { title: { text: "steps back from the loss", standoff: 8 }, autorange: true, automargin: true },
  }), PLOT_CONFIG);
  const which = g.layers.length > 1 ? `layer ${layer.layer}, the top one,` : "the layer";
  els.gttLayer.textContent = `Shown: ${which} for the loss of “${showChar(g.target)}” after
    “…${g.passage.slice(Math.max(0, g.position - 24), g.position + 1).replace(/\n/g, "↵")}”.`;
}

// Each concept's own look, the same on every run whatever it skips: found by name, at its place
// in the server's list of concepts (model/probes.py's CONCEPTS, which the page's route writes
// into the chart's data-concepts). Ten colours most eyes tell apart (matplotlib's tab10, its grey
// darker than the threshold's line), the second ten concepts drawn dotted with open diamonds: a
// one-checkpoint run draws markers only.
const conceptOrder = JSON.parse(els.conceptsChart.dataset.concepts || "[]");
const CONCEPT_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#343a40",
  "#a5a61e", "#17becf"];

function conceptStyle(name) {
  let i = conceptOrder.indexOf(name);
  // A concept this page does not know yet: a look of its own, probably, and the same on every run.
  if (i < 0) i = [...name].reduce((h, ch) => (h * 31 + ch.codePointAt(0)) % 20, 0);
  const second = i >= CONCEPT_COLOURS.length;
  return { colour: CONCEPT_COLOURS[i % CONCEPT_COLOURS.length], dash: second ? "dot" : "solid",
    symbol: second ? "diamond-open" : "circle" };
}
const unitName = (u) => `layer ${u.layer} ${u.quantity} ${u.unit}`;

// The legend under the plot, in columns across the chart's whole width, the chart as tall as its
// rows need: beside the plot 17 concepts overflowed its height and scrolled, and on a phone it
// took half the width. An entry's text holds the longest name (code_bracket_depth) at 11 px;
// Plotly puts its 40 px symbol and a 5 px gap before it, and wraps at the plot's width.
const CONCEPT_ENTRY_PX = 120;
const CONCEPT_PITCH_PX = CONCEPT_ENTRY_PX + 45;
const CONCEPT_ROW_PX = 20;
const CONCEPT_PLOT_PX = 326;                     // the plot's own height, as before
const CONCEPT_MARGIN = { l: 56, r: 16, t: 10, b: 44 + 14 };    // x axis and its title, then a gap

/** The concepts chart's height, margins and legend for `count` entries at `width` px. */
function conceptsLegendLayout(count, width) {
  const columns = Math.max(1, Math.floor((width - CONCEPT_MARGIN.l - CONCEPT_MARGIN.r) / CONCEPT_PITCH_PX));
  const rows = Math.ceil(count / columns);
  const legendPx = rows * CONCEPT_ROW_PX + 6;
  return {
    columns,
    height: CONCEPT_MARGIN.t + CONCEPT_PLOT_PX + CONCEPT_MARGIN.b + legendPx,
    margin: { ...CONCEPT_MARGIN, b: CONCEPT_MARGIN.b + legendPx },
    legend: { orientation: "h", xref: "container", x: 0, xanchor: "left", yref: "container", y: 0, yanchor: "bottom",
      entrywidth: CONCEPT_ENTRY_PX, entrywidthmode: "pixels", maxheight: 1, bgcolor: "rgba(0,0,0,0)", font: { size: 11 } },
  };
}
let conceptsColumns = 0;     // the legend's columns as drawn; a resize that changes them redraws it

/** The concepts chart's margins and legend for its width now, its container made as tall as
 * they need (the figure takes the container's height, at every resize too). */
function layConceptsChart(count) {
  const { columns, height, ...legendLayout } = conceptsLegendLayout(count, els.conceptsChart.clientWidth);
  conceptsColumns = columns;
  els.conceptsChart.style.height = `${height}px`;
  return legendLayout;
}

// Each formed cell's "cell, step N" label is placed one at a time, at the first place near its
// point that is inside the plot and clear of the labels placed before it, at every width.
// Staggered by their place in the list (the wide chart's old way), the labels of cells formed at
// one checkpoint lay over each other; on a phone's plot (258 px) those of early cells also ran
// over the y axis title and out of the chart. A plot narrower than this sets them on two lines.
const NARROW_LABELS_PLOT_PX = 700;
const LABEL_FONT_PX = 11;
const LABEL_LINE_PX = 15;                        // Plotly's line height at 11 px, and a little
const LABEL_GAP_PX = 4;
const LABEL_ROWS = 12;                           // rows tried on each side of a point
const LABEL_SHIFTS = [0, -1, 1, -2, 2];          // then as many label widths to the left or right
let formedCells = [];       // [{concept, step, strength, colour}] of the chart drawn
let fittingLabels = false;  // fitCellLabels listens to the chart's drawings
let measuring = null;

function textWidth(text) {
  measuring ??= document.createElement("canvas").getContext("2d");
  measuring.font = `${LABEL_FONT_PX}px ${PLOT_FONT.family}`;
  return measuring.measureText(text).width;
}

/** The formed cells' labels placed one by one where they fit the plot drawn (`full`, its
 * _fullLayout): in rows above and below the point, nearest first, in its column, then in
 * columns a label's width to either side; each inside the plot. */
function cellLabels(full) {
  const { w: width, h: height } = full._size;
  const placed = [];
  return formedCells.map((k) => {
    const step = k.step.toLocaleString();
    const lines = width < NARROW_LABELS_PLOT_PX ? [`${k.concept} cell`, `step ${step}`] : [`${k.concept} cell, step ${step}`];
    const w = Math.max(...lines.map(textWidth)) + 8, h = lines.length * LABEL_LINE_PX + 6;
    const px = full.xaxis.l2p(k.step), py = full.yaxis.l2p(k.strength);
    const column = (shift) => Math.min(Math.max(px + shift * (w + LABEL_GAP_PX), w / 2 + 2), width - w / 2 - 2);
    const spots = [];
    for (const shift of LABEL_SHIFTS) {
      for (let j = 0; j < LABEL_ROWS; j++) {
        const off = h / 2 + 12 + j * (h + LABEL_GAP_PX);
        spots.push([column(shift), py - off], [column(shift), py + off]);
      }
    }
    const inside = spots.filter(([, cy]) => cy - h / 2 >= 0 && cy + h / 2 <= height);
    const clear = ([cx, cy]) => placed.every(([x0, y0, x1, y1]) => cx + w / 2 + LABEL_GAP_PX <= x0
      || x1 + LABEL_GAP_PX <= cx - w / 2 || cy + h / 2 + LABEL_GAP_PX <= y0 || y1 + LABEL_GAP_PX <= cy - h / 2);
    const [cx, cy] = inside.find(clear) ?? inside[0] ?? [column(0), py - h / 2 - 12];
    placed.push([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]);
    return { x: k.step, y: k.strength, text: lines.join("<br>"), showarrow: true, arrowhead: 2, arrowsize: 0.8,
      ax: Math.round(cx - px), ay: Math.round(cy - py), xanchor: "center", yanchor: "middle",
      font: { size: LABEL_FONT_PX, color: k.colour }, arrowcolor: k.colour, bgcolor: "rgba(255,255,255,0.85)" };
  });
}

/** After each drawing of the concepts chart: the labels placed for its plot as drawn, when they
 * are not those drawn already (so the relayout's own drawing changes nothing more). */
function fitCellLabels() {
  const el = els.conceptsChart, full = el._fullLayout;
  if (!full?._size || !formedCells.length) return;
  const labels = cellLabels(full);
  const key = (list) => JSON.stringify((list ?? []).map((a) => [a.text, a.ax, a.ay]));
  if (key(labels) !== key(el.layout.annotations)) Plotly.relayout(el, { annotations: labels });
}

/** The concepts' strength against step, one line each, the threshold dashed, each concept's
 * first crossing marked with its unit (GET /api/runs/{id}/concepts). */
async function drawConcepts(runId) {
  let c, kept;
  try {
    [c, kept] = await Promise.all([request(`/api/runs/${runId}/concepts`), request(`/api/runs/${runId}/snapshots`)]);
  } catch { return; }
  if (run?.id !== runId) return;
  const empty = !c.steps.length;
  setStatus(els.conceptsStatus, empty ? "empty" : "", "Recorded at checkpoints; none yet.");
  els.conceptsChart.hidden = empty;
  els.conceptsFormed.replaceChildren();
  els.conceptsSkipped.textContent = "";
  if (empty) return;
  // Concepts the current character tells (above the threshold from the start) are in the
  // legend, off the plot: the lines worth watching are those that need memory to form.
  const traces = c.concepts.map((k) => {
    const look = conceptStyle(k.concept);
    return {
      name: k.concept, type: "scatter", visible: k.at_start ? "legendonly" : true,
      mode: c.steps.length > 1 ? "lines+markers" : "markers", x: c.steps, y: k.best.map((u) => u?.strength ?? null),
      marker: { size: 6, color: look.colour, symbol: look.symbol, line: { color: look.colour, width: 1.5 } },
      line: { color: look.colour, dash: look.dash, width: 1.5 },
      customdata: k.best.map((u) => (u ? unitName(u) : "")),
      hovertemplate: `${k.concept} %{y:.3f}<br>%{customdata}<extra></extra>`,
    };
  });
  const formed = c.concepts.filter((k) => k.formed_step != null);
  formedCells = formed.map((k) => ({ concept: k.concept, step: k.formed_step,
    strength: k.best[c.steps.indexOf(k.formed_step)].strength, colour: conceptStyle(k.concept).colour }));
  Plotly.react(els.conceptsChart, traces, layout({
    hovermode: "closest", annotations: [], ...layConceptsChart(traces.length),     // labels placed once drawn
    xaxis: { title: { text: "training step (checkpoint)" }, rangemode: "tozero", zeroline: false, gridcolor: "#eef0f4",
      ...wholeStepTicks(c.steps[c.steps.length - 1]) },
    yaxis: { title: { text: "strength of the best unit" }, range: [0, 1.02], gridcolor: "#eef0f4" },
    shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: c.threshold, y1: c.threshold,
      line: { color: "#868e96", dash: "dash", width: 1 } }],
  }), PLOT_CONFIG).then(() => {
    // Drawn again at every resize (the chart is responsive) and relayout: the labels follow.
    if (!fittingLabels) els.conceptsChart.on("plotly_afterplot", fitCellLabels);
    fittingLabels = true;
    fitCellLabels();
  });
  // In words: when each cell appeared, and a link to that unit in the explorer at a kept
  // snapshot (the run's own model when none is kept).
  for (const k of formed) {
    const u = k.best[c.steps.indexOf(k.formed_step)];
    const p = document.createElement("span");
    p.className = "formed";
    p.dataset.concept = k.concept;
    p.textContent = `${/^[aeiou]/i.test(k.concept) ? "An" : "A"} ${k.concept} cell appears at step ${k.formed_step.toLocaleString()}: ${unitName(u)}, strength ${u.strength.toFixed(2)} `;
    // The first kept snapshot at or after the step (the cell is there by then), else the last.
    const near = kept.find((s) => s.step >= k.formed_step) ?? kept[kept.length - 1] ?? null;
    const q = new URLSearchParams({ model: `run-${runId}`, layer: u.layer, quantity: u.quantity, neuron: u.unit });
    if (near) q.set("at", near.step);
    const a = Object.assign(document.createElement("a"), { href: `/explore?${q}`,
      textContent: near ? `(see it at step ${near.step.toLocaleString()})` : "(see it)" });
    p.append(a, ". ");
    els.conceptsFormed.append(p);
  }
  const atStart = c.concepts.filter((k) => k.at_start).map((k) => k.concept);
  const notes = [];
  if (atStart.length) notes.push(`Above ${c.threshold} from the first checkpoint, so not marked and off the plot (click them in the legend): ${atStart.join(", ")} (the character being read tells them; no memory needed).`);
  const skipped = Object.entries(c.skipped);
  if (skipped.length) notes.push(`Left out, constant on this text: ${skipped.map(([k, why]) => `${k} (${why})`).join(", ")}.`);
  els.conceptsSkipped.textContent = notes.join(" ");
}

function drawRun(r) {
  run = r;
  els.runCard.hidden = false;
  els.runCard.dataset.status = r.status;
  els.runName.textContent = r.name;
  els.runStatus.textContent = r.status;
  els.runStatus.dataset.status = r.status;
  const c = r.config;
  els.runConfig.textContent = `${c.cell.toUpperCase()} ${c.num_layers} × ${c.hidden_size} · batch ${c.batch_size} × ${c.seq_length} · ` +
    `learning rate ${c.learning_rate} · dropout ${c.dropout} · corpus ${r.corpus_name ?? "(deleted)"}`;
  // Only the owner (or the admin) may stop or continue a run; everyone may watch it.
  els.cancel.hidden = !r.yours || !ACTIVE.has(r.status) || r.cancel_requested;
  els.resume.hidden = !r.yours || !["interrupted", "cancelled"].includes(r.status);
  els.runOwner.hidden = r.yours;
  const model = r.model_id ? encodeURIComponent(r.model_id) : null;
  els.sampleLink.hidden = !model;
  els.exploreLink.hidden = !model || r.status === "completed";      // the banner below has it then
  if (model) {
    els.exploreLink.href = exploreHref(r);
    els.sampleLink.href = `/sample?model=${model}`;
    els.exploreLink.textContent = r.status === "completed" ? "Open in the neuron explorer →" : "Explore the latest checkpoint →";
  }
  drawProgress(r.step, r.max_steps, r.status);
  drawStats(r);
  if (r.attempts) attemptsOf = { id: r.id, list: r.attempts };
  drawWhere(r, attemptsOf?.id === r.id ? attemptsOf.list : []);
  const messages = {
    queued: ["loading", queuedMessage(r)],
    interrupted: ["empty", r.error || "Interrupted; resume to continue from the last checkpoint."],
    cancelled: ["empty", `Cancelled at step ${r.step}. Resume continues from there.`],
    failed: ["error", r.error || "The run failed."],
  };
  const [kind, text] = r.cancel_requested && r.status === "running"
    ? ["loading", "Stopping after this step and writing a checkpoint…"] : (messages[r.status] || ["", ""]);
  setStatus(els.runMessage, kind, text);
  els.doneBanner.hidden = r.status !== "completed";
  if (r.status === "completed") {
    els.doneBanner.innerHTML = `<p><b>Done.</b> Best validation loss <b></b> nats/char after
      ${r.step.toLocaleString()} steps in ${duration(r.seconds)}. The model is <code></code> in every view.</p>`;
    els.doneBanner.querySelector("p > b:nth-of-type(2)").textContent = loss(r.best_val_loss);
    els.doneBanner.querySelector("code").textContent = r.model_id;
    const a = Object.assign(document.createElement("a"), { className: "button", href: exploreHref(r),
      textContent: "Open in the neuron explorer →" });
    a.id = "done-explore";
    els.doneBanner.append(a);
  }
  if (r.checkpoint_step !== lastCheckpoint) {
    lastCheckpoint = r.checkpoint_step;
    drawGradients(r.id);
    drawConcepts(r.id);
  }
}

/** "Waiting for a free slot: 2 runs train at once on this cluster; 1 ahead": the server's count
 * (owners take turns, and others' runs may not be listed), else from the runs table. */
function queuedMessage(r) {
  if (!capacity) return "Waiting for a free slot…";
  const n = capacity.parallel_runs;
  const slots = n === 1 ? "1 run trains at a time" : `${n} runs train at once`;
  const where = capacity.executor === "ray" ? "this cluster" : "this server";
  const ahead = r.ahead ?? runs.filter((q) => q.status === "queued" && q.id < r.id).length;
  return `Waiting for a free slot: ${slots} on ${where}; ${ahead ? `${ahead} ahead` : "this one is next"}.`;
}

const OUTCOMES = {
  lost: "lost: its worker process or machine went away, and the next attempt took over",
  interrupted: "interrupted",
  completed: "completed", cancelled: "cancelled", failed: "failed",
};

/** Where the run trains; every attempt when there was more than one or one was lost
 * (a node that went away, a worker process killed): each resumed from the last checkpoint. */
function drawWhere(r, attempts) {
  const listed = attempts.length > 1 || attempts.some((a) => a.outcome === "lost");
  els.attempts.hidden = !listed;
  els.runWhere.hidden = listed || !r.worker || r.status === "queued";
  if (!els.runWhere.hidden) {
    els.runWhere.textContent = `${r.status === "running" ? "Training on" : "Trained on"} ${r.worker}`;
  }
  // Running, but not placed yet: the cluster has no free CPU for it at the moment.
  if (r.status === "running" && !r.worker && !listed) {
    els.runWhere.hidden = false;
    els.runWhere.textContent = "Waiting for a node with a free CPU…";
  }
  if (!listed) { els.attempts.replaceChildren(); return; }
  els.attempts.replaceChildren(...attempts.map((a) => {
    const li = document.createElement("li");
    const open = !a.outcome && ACTIVE.has(r.status);       // the attempt under way
    // Ray places an attempt on a node with a free CPU; until then it has no worker.
    const state = a.outcome ?? (!open ? r.status : a.worker ? "training" : "waiting");
    li.dataset.outcome = state;
    const from = a.from_step ? `${state === "waiting" ? "to resume" : "resumed"} at ${a.from_step.toLocaleString()}`
      : "from the start";
    const parts = [a.worker ?? (state === "waiting" ? "waiting for a node with a free CPU" : "(where not recorded)"),
      a.to_step == null ? from : `${from} → ${a.to_step.toLocaleString()}`];
    if (a.ended) parts.push(duration(a.ended - a.started));
    li.innerHTML = "<b></b> · <span class=\"where\"></span> · <span class=\"outcome\"></span>";
    li.querySelector("b").textContent = `Attempt ${a.attempt}`;
    li.querySelector(".where").textContent = parts.join(" · ");
    li.querySelector(".outcome").textContent = a.outcome ? (OUTCOMES[a.outcome] ?? a.outcome)
      : state === "training" ? "training now" : state === "waiting" ? "waiting" : state;
    return li;
  }));
}

function stopWatching() {
  events?.close();
  events = null;
  clearInterval(runPoll);
  runPoll = null;
}

async function showRun(id) {
  stopWatching();
  writeQuery({ run: id });
  lastCheckpoint = undefined;
  let r, m, samples;
  try {
    const status = els.runMessage;
    [r, m, samples] = await Promise.all([request(`/api/runs/${id}`, { status }),
      request(`/api/runs/${id}/metrics?max_points=5000`, { status }), request(`/api/runs/${id}/samples`, { status })]);
  } catch (e) {
    els.runCard.hidden = false;
    setStatus(els.runMessage, "error", e);
    return;
  }
  if (!corpus || corpus.id !== r.corpus_id) {
    corpus = await request(`/api/corpora/${r.corpus_id}`).catch(() => null);
  }
  drawRun(r);
  drawCharts(r, m);
  drawSamples(samples);
  lastStep = m.step.length ? m.step[m.step.length - 1] : 0;
  pending = [];
  markCurrent();
  if (ACTIVE.has(r.status)) watch(id);
}

/** Follow a run's events from the last step drawn; EventSource resends Last-Event-ID on reconnects. */
function watch(id) {
  events = new EventSource(`/api/runs/${id}/events?since=${lastStep}`);
  events.addEventListener("step", (msg) => {
    const e = JSON.parse(msg.data);
    if (e.step <= lastStep) return;
    lastStep = e.step;
    if (e.val_loss != null) run.val_loss = e.val_loss;
    pending.push(e);
    if (e.samples) {
      if (els.samples.querySelector(".status")) els.samples.replaceChildren();
      drawSampleSet(e.step, e.samples, true);
    }
    if (!drawQueued) { drawQueued = true; requestAnimationFrame(drawPending); }
  });
  events.addEventListener("status", (msg) => drawRun(JSON.parse(msg.data)));
  events.addEventListener("end", (msg) => {
    stopWatching();
    drawPending();
    drawRun(JSON.parse(msg.data));
    drawGradients(id);
    drawConcepts(id);
    loadRuns();
    // The event's run has no attempts: the last one's outcome comes with the full record.
    request(`/api/runs/${id}`).then((r) => { if (run?.id === id) drawRun(r); }).catch(() => {});
  });
  // The events carry steps; the run's summary (train loss, checkpoint, model id) is polled.
  runPoll = setInterval(async () => {
    try {
      const r = await request(`/api/runs/${id}`);
      if (run?.id === id) drawRun({ ...r, step: Math.max(r.step, lastStep) });
    } catch { /* the next poll tries again */ }
  }, 3000);
}

async function cancelRun() {
  els.cancel.disabled = true;
  try { drawRun(await request(`/api/runs/${run.id}/cancel`, { method: "POST" })); loadRuns(); }
  catch (e) { setStatus(els.runMessage, "error", e); }
  finally { els.cancel.disabled = false; }
}

async function resumeRun() {
  els.resume.disabled = true;
  try { await request(`/api/runs/${run.id}/resume`, { method: "POST" }); await showRun(run.id); loadRuns(); }
  catch (e) { setStatus(els.runMessage, "error", e); }
  finally { els.resume.disabled = false; }
}

// ---- Runs: the table and where they train -----------------------------------------------------

const setText = (el, text) => { if (el.textContent !== text) el.textContent = text; };
const plural = (n, one, many = `${one}s`) => `${n.toLocaleString()} ${n === 1 ? one : many}`;

/** Refresh the table and the training line; again in RUNS_REFRESH_MS while any run is queued
 * or running (until none is: starting a run calls this again). */
async function loadRuns() {
  const call = ++runsCall;
  clearTimeout(runsTimer);
  runsTimer = null;
  let list, cap;
  try {
    // The training line is a convenience: the table still draws without it.
    // Yours by default (GET /api/runs); everyone's newest 100 when asked for.
    const url = els.runsEveryone?.checked ? "/api/runs?owner=all" : "/api/runs";
    [list, cap] = await Promise.all([request(url, { status: els.runsStatus }), request("/api/training").catch(() => null)]);
  } catch (e) {
    if (call !== runsCall) return;
    setStatus(els.runsStatus, "error", e);
    // Keep trying while runs were training: the server may be restarting.
    if (runs.some((r) => ACTIVE.has(r.status))) runsTimer = setTimeout(loadRuns, 5 * RUNS_REFRESH_MS);
    return;
  }
  if (call !== runsCall) return;                 // a newer refresh is on its way
  runs = list;
  capacity = cap;
  drawCapacity(cap, list);
  drawRuns(list);
  // The shown run's place in the queue moves as the runs ahead of it start.
  if (run?.status === "queued" && !run.cancel_requested) {
    const mine = list.find((r) => r.id === run.id);
    if (mine?.status === "queued") setStatus(els.runMessage, "loading", queuedMessage(mine));
  }
  if (list.some((r) => ACTIVE.has(r.status)) && !document.hidden) runsTimer = setTimeout(loadRuns, RUNS_REFRESH_MS);
}

/** "Training on a Ray cluster · 3 nodes (2 CPUs for runs) · 2 runs at once · 2 running, 2 waiting",
 * and on a cluster each machine, with the runs on it; a node that went away is shown lost. */
function drawCapacity(cap, list) {
  els.capacity.hidden = !cap;
  if (!cap) return;
  const ray = cap.executor === "ray";
  const alive = cap.nodes.filter((n) => n.alive), lost = cap.nodes.length - alive.length;
  const cpus = alive.reduce((sum, n) => sum + n.cpus, 0);
  const parts = [ray ? "Training on a Ray cluster" : "Training on this server"];
  if (ray) parts.push(`${plural(alive.length, "node")} (${plural(cpus, "CPU")} for runs)`);
  parts.push(cap.parallel_runs === 1 ? "1 run at a time" : `${cap.parallel_runs} runs at once`);
  parts.push(!cap.running && !cap.queued ? "none training now"
    : cap.queued ? `${cap.running} running, ${cap.queued} waiting` : `${cap.running} running`);
  const summary = els.capacity.querySelector(".summary");
  setText(summary.querySelector("span"), parts.join(" · "));
  const lostNote = summary.querySelector(".lost");
  lostNote.hidden = !lost;
  setText(lostNote, lost ? ` · ${plural(lost, "node")} lost` : "");
  const nodes = els.capacity.querySelector(".nodes");
  nodes.hidden = !ray;
  if (!ray) return;
  // Alive ones first, then the latest few lost ones (Ray remembers dead nodes for long).
  const gone = cap.nodes.filter((n) => !n.alive);
  const chips = [...alive, ...gone.slice(-LOST_SHOWN)].map((n) => {
    const training = list.filter((r) => r.status === "running" && r.worker === n.where).length;
    return { where: n.where, alive: n.alive, title: n.alive ? `${plural(n.cpus, "CPU")} for training runs`
      : "This node went away; its runs continued elsewhere.", note: !n.alive ? "lost" : !n.cpus ? "no CPUs for runs"
      : training ? `${plural(training, "run")} training` : `${plural(n.cpus, "CPU")}, idle` };
  });
  if (gone.length > LOST_SHOWN) chips.push({ where: `and ${plural(gone.length - LOST_SHOWN, "earlier one")}`, more: true,
    title: "Nodes that went away before these.", note: "" });
  // Redrawn only when something changed: a screen reader hears a change once, not every refresh.
  const key = JSON.stringify(chips);
  if (nodes.dataset.key === key) return;
  nodes.dataset.key = key;
  nodes.replaceChildren(...chips.map((c) => {
    const li = document.createElement("li");
    li.className = c.more ? "node more" : c.alive ? "node" : "node lost";
    li.title = c.title;
    li.innerHTML = "<i></i><span></span><small></small>";
    li.querySelector("span").textContent = c.where;
    li.querySelector("small").textContent = c.note;
    return li;
  }));
}

function drawRuns(list) {
  if (!list.length) {
    els.runsTable.hidden = true;
    setStatus(els.runsStatus, "empty", "No runs yet: upload a text above and start one.");
    return;
  }
  if (els.runsStatus.dataset.state) setStatus(els.runsStatus, "");
  els.runsTable.hidden = false;
  // Rows are kept and updated in place, so a refresh every two seconds keeps hover, focus
  // and a half-finished click.
  const tbody = els.runsTable.tBodies[0];
  const existing = new Map([...tbody.rows].map((tr) => [Number(tr.dataset.run), tr]));
  list.forEach((r, i) => {
    const tr = existing.get(r.id) ?? newRow(r);
    existing.delete(r.id);
    fillRow(tr, r);
    if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] ?? null);
  });
  for (const tr of existing.values()) tr.remove();
  markCurrent();
}

function newRow(r) {
  const tr = document.createElement("tr");
  tr.dataset.run = r.id;
  tr.innerHTML = `<td><a href="?run=${r.id}" class="open"></a><div class="muted small"><span class="kind"></span></div></td>
    <td class="corpus"></td><td class="state"><span class="pill"></span><div class="where small"></div></td>
    <td class="steps"><span class="count"></span><div class="bar" hidden><div></div></div></td>
    <td class="train-loss"></td><td class="val-loss"></td><td class="started"></td><td><div class="actions"></div></td>`;
  tr.querySelector(".open").addEventListener("click", (e) => { e.preventDefault(); showRun(r.id); });
  return tr;
}

function fillRow(tr, r) {
  setText(tr.querySelector(".open"), r.name);
  setText(tr.querySelector(".kind"), `${r.config.cell.toUpperCase()} ${r.config.num_layers} × ${r.config.hidden_size}`);
  if (!r.yours && !tr.querySelector(".others")) {
    tr.querySelector(".muted").append(Object.assign(document.createElement("span"),
      { className: "others", textContent: " · someone else's", title: "Started from another browser: you can watch and explore it, not cancel or delete it." }));
  }
  setText(tr.querySelector(".corpus"), r.corpus_name ?? "(deleted)");
  const pill = tr.querySelector(".pill");
  setText(pill, r.status);
  pill.dataset.status = r.status;
  // Where a running run trains; how many wait before a queued one.
  const ahead = r.ahead ?? runs.filter((q) => q.status === "queued" && q.id < r.id).length;
  // The training line above names the nodes in full; here "on 127.0.0.1 (1a2b3c4d)" is enough.
  const where = tr.querySelector(".where");
  setText(where, r.status === "running" ? (r.worker ? `on ${r.worker.replace(/^ray node /, "")}` : "waiting for a node")
    : r.status === "queued" ? (ahead ? `${ahead} ahead` : "next") : "");
  where.title = r.status === "running" && r.worker ? r.worker : "";
  // The card's events run ahead of the store's flushed step: show whichever is newer.
  const step = r.id === run?.id ? Math.max(r.step, lastStep ?? 0) : r.step;
  tr.querySelector(".bar").hidden = !ACTIVE.has(r.status);
  tr.dataset.status = r.status;
  drawSteps(tr.querySelector(".steps"), step, r.max_steps);
  setText(tr.querySelector(".train-loss"), loss(r.train_loss));
  setText(tr.querySelector(".val-loss"), loss(r.best_val_loss));
  setText(tr.querySelector(".started"), when(r.started));
  const actions = tr.querySelector(".actions");
  const key = `${r.model_id}|${r.yours && r.status !== "running"}`;
  if (actions.dataset.key === key) return;
  actions.dataset.key = key;
  actions.replaceChildren();
  if (r.model_id) {
    actions.append(Object.assign(document.createElement("a"), { href: exploreHref(r), textContent: "Explore" }));
  }
  if (r.yours && r.status !== "running") {
    const del = Object.assign(document.createElement("button"), { type: "button", className: "linkish", textContent: "Delete" });
    del.addEventListener("click", () => deleteRun(runs.find((x) => x.id === r.id) ?? r));
    actions.append(del);
  }
}

function markCurrent() {
  for (const tr of els.runsTable.tBodies[0].rows) tr.classList.toggle("current", Number(tr.dataset.run) === run?.id);
}

async function deleteRun(r) {
  if (!window.confirm(`Delete “${r.name}”, its history and its model?`)) return;
  try {
    await request(`/api/runs/${r.id}`, { method: "DELETE" });
    if (run?.id === r.id) { stopWatching(); run = null; els.runCard.hidden = true; writeQuery({}); }
    loadRuns();
  } catch (e) {
    setStatus(els.runsStatus, "error", e);
  }
}

// ---- Wiring ------------------------------------------------------------------------------------------

els.file.addEventListener("change", () => { if (els.file.files[0]) upload(els.file.files[0]); els.file.value = ""; });
for (const type of ["dragenter", "dragover"]) {
  els.dropzone.addEventListener(type, (e) => { e.preventDefault(); els.dropzone.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  els.dropzone.addEventListener(type, () => els.dropzone.classList.remove("over"));
}
els.dropzone.addEventListener("drop", (e) => {
  e.preventDefault();
  const file = e.dataTransfer.files[0];
  if (file) upload(file);
});
els.corpusSelect.addEventListener("change", async () => {
  const id = els.corpusSelect.value;
  if (!id) return;
  try { showCorpus(await request(`/api/corpora/${id}`, { status: els.uploadStatus })); }
  catch (e) { setStatus(els.uploadStatus, "error", e); }
});
els.form.addEventListener("input", formChanged);
els.form.addEventListener("submit", (e) => { e.preventDefault(); start(); });
els.start.addEventListener("click", start);
els.cancel.addEventListener("click", cancelRun);
els.resume.addEventListener("click", resumeRun);
els.runsEveryone?.addEventListener("change", loadRuns);
// A hidden tab stops refreshing the table; it catches up when shown again.
document.addEventListener("visibilitychange", () => { if (!document.hidden) loadRuns(); });
// The concepts' legend takes as many columns as the chart's width holds: a resize may change its rows.
window.addEventListener("resize", () => {
  if (!els.conceptsChart.data || els.conceptsChart.hidden) return;
  const count = els.conceptsChart.data.length;
  if (conceptsLegendLayout(count, els.conceptsChart.clientWidth).columns === conceptsColumns) return;
  Plotly.react(els.conceptsChart, els.conceptsChart.data, { ...els.conceptsChart.layout, ...layConceptsChart(count) });
});

loadCorpora();
loadRuns();
const initial = Number.parseInt(queryParams().get("run"), 10);
if (Number.isFinite(initial)) showRun(initial);
