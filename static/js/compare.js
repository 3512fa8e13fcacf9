// Compare: models side by side on one text. Per character (aligned x): loss, input saliency
// and gradient through time for one prediction; then memory horizons and gate saturation.
import { api, defaultModels, everyonesModels, everyoneToggle, fillPassageMenu, isAbort, latest, logAxis, markDrawn, modelColours, modelPassages, pageModels, PLOT_CONFIG, PLOT_FONT, plotlyReady, setStatus, showChar, toInt, writeQuery } from "./common.js";

const $ = (id) => document.getElementById(id);
const els = {
  passage: $("passage"), text: $("text"), position: $("position"), go: $("go"), models: $("models"), status: $("status"),
  chars: $("chars-chart"), horizon: $("horizon-chart"), horizonTable: $("horizon-table"), gates: $("gates-chart"),
  corpus: $("corpus"), runsStatus: $("runs-status"), runsChart: $("runs-chart"),
};
const HORIZON = { window: 120, positions: 8 };
let models = [];
const nextSignal = latest();
const drawn = { chars: false, horizon: false, gates: false, runs: false };
const RUN_COLOURS = ["#1c6dd0", "#e8590c", "#2f9e44", "#7048e8", "#d6336c", "#0c8599", "#f08c00", "#5c940d"];
let runs = [];
let offered = { model: null, texts: [] };   // whose passages the menu holds, and their texts

const chosen = () => [...els.models.querySelectorAll("input:checked")].map((i) => i.value);

function fillChips(wanted) {
  const initial = wanted.filter((id) => models.some((m) => m.id === id));
  const ticked = initial.length ? initial : defaultModels(models);
  els.models.querySelectorAll("label, span").forEach((n) => n.remove());
  for (const m of models) {
    const label = document.createElement("label");
    label.className = "chip";
    label.innerHTML = `<input type="checkbox" style="margin:0 6px 0 0"><span class="swatch"></span>`;
    label.append(m.name);
    const box = label.querySelector("input");
    box.value = m.id;
    box.checked = ticked.includes(m.id);
    label.querySelector(".swatch").style.background = modelColours(models)[m.id];
    box.addEventListener("change", async () => { await fillPassages(); compare(); });
    els.models.append(label);
  }
}

const layout = (extra) => ({
  font: PLOT_FONT, margin: { l: 64, r: 16, t: 10, b: 40 }, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fff",
  legend: { orientation: "h", y: 1.06, x: 0 }, hovermode: "x unified", ...extra,
});

function plot(el, key, traces, lay) {
  (drawn[key] ? Plotly.react : Plotly.newPlot)(el, traces, lay, PLOT_CONFIG);
  drawn[key] = true;
}

/** Three rows sharing one x axis (characters): loss, saliency, ||dL/dh_k|| of the top layer; a
 * result without saliency or gradients (not answered yet) leaves its rows empty. */
function drawChars(results, chars, position, cols) {
  const traces = [];
  const x = chars.map((_, t) => t);
  const labels = chars.map(showChar);
  for (const r of results) {
    const c = cols[r.id];
    traces.push({ x: x.slice(1), y: r.trace.loss, name: r.id, legendgroup: r.id, line: { color: c, width: 1.6 },
      customdata: labels.slice(1), hovertemplate: `${r.id}: %{y:.2f} nats (predicting %{customdata})<extra></extra>`, yaxis: "y" });
    if (r.saliency) {
      traces.push({ x: x.slice(0, position + 1), y: r.saliency.saliency, name: r.id, legendgroup: r.id, showlegend: false,
        line: { color: c, width: 1.6 }, hovertemplate: `${r.id}: %{y:.3g}<extra></extra>`, yaxis: "y2" });
    }
    if (r.gradients) {
      const top = r.gradients.layers[r.gradients.layers.length - 1];
      traces.push({ x: x.slice(0, position + 1), y: top.h_grad_norm, name: r.id, legendgroup: r.id, showlegend: false,
        line: { color: c, width: 1.6 }, hovertemplate: `${r.id}: %{y:.3g}<extra></extra>`, yaxis: "y3" });
    }
  }
  const ticks = chars.length <= 160;
  const panelValues = (axis) => traces.filter((t) => t.yaxis === axis).flatMap((t) => t.y);
  plot(els.chars, "chars", traces, layout({
    height: 620, margin: { l: 70, r: 16, t: 20, b: 50 },
    // One x axis for the three rows, its labels (the characters themselves) under the bottom one.
    xaxis: { anchor: "y3", tickvals: ticks ? x : undefined, ticktext: ticks ? labels : undefined,
      tickfont: { family: "ui-monospace, monospace", size: 11 }, tickangle: 0, range: [-0.5, chars.length - 0.5],
      title: ticks ? undefined : { text: "character" } },
    // automargin: the left margin grows to fit the widest tick label (10⁻¹⁸), so no title sits on one.
    yaxis: { domain: [0.7, 1], title: { text: "loss (nats)", standoff: 8 }, rangemode: "tozero", automargin: true },
    // Rows of about 150 px: four labels a row.
    yaxis2: { domain: [0.36, 0.64], title: { text: "‖∂L/∂x<sub>k</sub>‖", standoff: 8 }, automargin: true,
      ...logAxis(panelValues("y2"), { maxLabels: 4 }) },
    yaxis3: { domain: [0, 0.3], title: { text: "‖∂L/∂h<sub>k</sub>‖ top", standoff: 8 }, automargin: true,
      ...logAxis(panelValues("y3"), { maxLabels: 4 }) },
    shapes: [{ type: "line", x0: position, x1: position, yref: "paper", y0: 0, y1: 0.64,
      line: { color: "#868e96", dash: "dot", width: 1 } }],
    annotations: [{ x: position, y: 0.66, yref: "paper", text: `predicting ${showChar(chars[position + 1])} after #${position}`,
      xanchor: position > chars.length / 2 ? "right" : "left", showarrow: false, font: { size: 12, color: "#495057" } }],
  }));
}

function drawHorizon(results, cols) {
  const traces = results.map((r) => ({
    type: "bar", name: r.id, marker: { color: cols[r.id] },
    x: r.horizon.layers.map((l) => `layer ${l.layer}`), y: r.horizon.layers.map((l) => l.horizon),
    text: r.horizon.layers.map((l) => l.horizon.toFixed(1)), textposition: "outside",
    hovertemplate: `${r.id} %{x}: %{y:.1f} characters<extra></extra>`,
  }));
  plot(els.horizon, "horizon", traces, layout({ height: 300, barmode: "group", hovermode: "closest",
    yaxis: { title: { text: "lag (characters)", standoff: 8 }, rangemode: "tozero", automargin: true } }));
  drawVerdict(results);
  const tbody = els.horizonTable.querySelector("tbody");
  tbody.replaceChildren(...results.map((r) => {
    const tr = document.createElement("tr");
    const censored = r.horizon.layers.some((l) => l.censored) ? " (≥: some never fell that low)" : "";
    tr.innerHTML = `<td><span class="swatch"></span>${r.id}</td><td><b>${r.horizon.horizon.toFixed(1)}</b>${censored}</td>
      <td>${r.horizon.layers.map((l) => l.horizon.toFixed(1)).join(" · ")}</td><td>${r.trace.mean_loss?.toFixed(3) ?? "—"}</td>`;
    tr.querySelector(".swatch").style.background = cols[r.id];
    return tr;
  }));
}

/** The page's question answered from the horizons just drawn: who remembers longest on this
 * text, against whom, and any layer that ranks two models the other way round. */
function drawVerdict(results) {
  const cells = results.map((r) => models.find((m) => m.id === r.id)?.cell);
  // "the GRU" when it is the only GRU compared, else the model's id.
  const name = (r, k) => (cells[k] && cells.filter((c) => c === cells[k]).length === 1 ? `the ${cells[k].toUpperCase()}` : r.id);
  const shown = (v) => v.toFixed(1);                         // as the chart's labels and the table show it
  const lag = (h, censored) => `${censored ? "≥ " : ""}${shown(h)}`;
  const named = results.map((r, k) => ({ name: name(r, k), horizon: r.horizon.horizon, layers: r.horizon.layers,
    censored: r.horizon.layers.some((l) => l.censored) }));
  const ranked = [...named].sort((a, b) => b.horizon - a.horizon);
  const tied = ranked.filter((r) => shown(r.horizon) === shown(ranked[0].horizon));
  const others = ranked.slice(tied.length);
  // A model's horizon is its furthest-reaching layer's (the API's `horizon`), each layer's a mean
  // over the positions read.
  const reach = `gradient through time stays above 1 % for ${lag(ranked[0].horizon, ranked[0].censored)} characters back `
    + "in its furthest-reaching layer, on average over the positions read";
  let lead = named.length === 1 ? `On this text ${named[0].name}’s ${reach}`
    : `On this text ${tied.map((r) => r.name).join(" and ")} `
      + `${tied.length === named.length ? "remember equally far" : tied.length > 1 ? "remember longest" : "remembers longest"}: `
      + `${tied.length > 1 ? "their" : "its"} ${reach}`;
  if (others.length) lead += `, against ${others.map((r) => `${lag(r.horizon, r.censored)} for ${r.name}`).join(" and ")}`;
  const sentences = [`${lead}.`];
  // A layer where a model behind overall reaches further than one ahead of it.
  const depth = Math.min(...named.map((r) => r.layers.length));
  for (let l = 0; l < depth; l++) {
    const swapped = ranked.some((a, i) => ranked.slice(i + 1).some((b) => shown(b.horizon) !== shown(a.horizon)
      && b.layers[l].horizon > a.layers[l].horizon && shown(b.layers[l].horizon) !== shown(a.layers[l].horizon)));
    if (!swapped) continue;
    const byLayer = [...named].sort((a, b) => b.layers[l].horizon - a.layers[l].horizon);
    sentences.push(`Layer ${l} alone ranks them otherwise: ${byLayer.map((r) => `${r.name} ${lag(r.layers[l].horizon, r.layers[l].censored)}`).join(", ")}.`);
  }
  const verdict = $("verdict");
  verdict.textContent = sentences.join(" ");
  verdict.hidden = false;
}

function drawGates(results, cols) {
  const traces = [];
  for (const r of results) {
    const names = [], shut = [], open = [];
    for (const layer of r.gates.layers) {
      for (const g of layer.gates) {
        names.push(`L${layer.layer} ${g.gate}`);
        shut.push(g.left.reduce((a, b) => a + b, 0) / g.left.length);
        open.push(g.right.reduce((a, b) => a + b, 0) / g.right.length);
      }
    }
    if (!names.length) continue;
    traces.push({ type: "bar", name: `${r.id} open`, x: names.map((n) => `${r.id} ${n}`), y: open,
      marker: { color: cols[r.id] }, hovertemplate: "%{x}: open %{y:.0%}<extra></extra>" });
    traces.push({ type: "bar", name: `${r.id} shut`, x: names.map((n) => `${r.id} ${n}`), y: shut.map((v) => -v),
      marker: { color: cols[r.id], opacity: 0.45 }, customdata: shut, hovertemplate: "%{x}: shut %{customdata:.0%}<extra></extra>" });
  }
  plot(els.gates, "gates", traces, layout({ height: 300, barmode: "relative", hovermode: "closest", showlegend: false,
    // automargin: the bottom margin grows to fit the slanted labels ("python L0 i" lost its start).
    xaxis: { tickangle: -45, tickfont: { size: 10 }, automargin: true },
    yaxis: { title: { text: "← shut · open →" }, tickformat: ".0%", range: [-1, 1] } }));
}

async function compare() {
  const ids = chosen();
  const text = els.text.value;
  if (!text) return setStatus(els.status, "empty", "Pick a passage or paste a text.");
  if (ids.length === 0) return setStatus(els.status, "empty", "Tick at least one model.");
  const chars = [...text];
  if (chars.length < 3) return setStatus(els.status, "error", "The text needs at least three characters.");
  const last = chars.length - 2;
  const position = Math.min(last, Math.max(0, toInt(els.position.value, last)));
  const signal = nextSignal();
  setStatus(els.status, "loading", `${ids.length} models are reading ${chars.length.toLocaleString()} characters…`);
  els.go.disabled = true;
  try {
    // Asked in the order they are drawn: the browser sends six at a time, and the server's
    // compute slots serve them in turn, so the first chart's requests must not queue behind the
    // memory horizons. Each promise gets a no-op catch at once: one that fails before it is
    // awaited is then not an unhandled rejection; awaiting it still throws.
    const asked = {};
    // What shows an earlier answer, kept dimmed when this one fails: every card drawn already
    // while the traces (drawn first) may fail; after them, the horizons, the gates and the
    // verdict over them, which are drawn last. Only cards drawn already: on a first visit they
    // are empty, and one model's answer coming before another's failure would have them say
    // they show the previous settings. Each is marked drawn once drawn; the address is written
    // once all are, so it names what they show.
    const charsCard = els.chars.closest(".card");
    const lastDrawn = [[els.horizon.closest(".card"), "horizon"], [els.gates.closest(".card"), "gates"],
      [$("verdict"), "horizon"]];
    const later = lastDrawn.filter(([, key]) => drawn[key]).map(([el]) => el);
    const all = drawn.chars ? [charsCard, ...later] : later;
    const ask = (kind, body) => {
      for (const id of ids) {
        const view = kind === "trace" ? all : later;
        const p = api(`/api/models/${encodeURIComponent(id)}/${kind}`, body, { signal, status: els.status, view });
        p.catch(() => {});
        (asked[id] ??= {})[kind] = p;
      }
    };
    ask("trace", { text, layers: [], quantities: [], top_k: 0 });
    ask("saliency", { text, position });
    ask("gradients", { text, position });
    ask("horizon", { text, ...HORIZON });
    ask("gates", { text });
    plotlyReady().catch(() => {});               // runs plotly.js once the requests are out ("lazy")
    const gather = (kinds) => Promise.all(ids.map(async (id) => {
      const r = { id };
      for (const kind of kinds) r[kind] = await asked[id][kind];
      return r;
    }));
    const cols = modelColours(models);
    // The losses first (a trace is the quickest answer), the gradient rows as soon as theirs come.
    const losses = await gather(["trace"]);
    await plotlyReady();
    drawChars(losses, chars, position, cols);
    markDrawn(charsCard);
    const first = await gather(["trace", "saliency", "gradients"]);
    drawChars(first, chars, position, cols);
    setStatus(els.status, "loading", "Measuring how far back each model remembers…");
    const results = await gather(["trace", "saliency", "gradients", "horizon", "gates"]);
    setStatus(els.status, "");
    drawHorizon(results, cols);
    drawGates(results, cols);
    markDrawn(lastDrawn.map(([el]) => el));
    writeQuery({ models: ids.join(","), text, position: els.position.value === "" ? "" : position });
  } catch (e) {
    if (!isAbort(e)) setStatus(els.status, "error", e);
  } finally {
    els.go.disabled = false;
  }
}

// ---- Training runs of one corpus --------------------------------------------------------

async function loadRuns() {
  try {
    // Yours, or everyone's newest 500 with the models' "everyone's" box ticked.
    runs = await api(everyonesModels() ? "/api/runs?owner=all&limit=500" : "/api/runs");
  } catch (e) {
    // A server without training (no /api/runs) has nothing to show here.
    return setStatus(els.runsStatus, e.status === 404 ? "empty" : "error",
      e.status === 404 ? "This server does not train models." : e.message);
  }
  const byCorpus = new Map();
  for (const r of runs) if (r.corpus_name && r.step > 0) byCorpus.set(r.corpus_name, (byCorpus.get(r.corpus_name) || 0) + 1);
  if (byCorpus.size === 0) {
    return setStatus(els.runsStatus, "empty", "No training runs yet.", { html: `<p><a href="/train">Train one →</a></p>` });
  }
  const names = [...byCorpus.keys()].sort((a, b) => byCorpus.get(b) - byCorpus.get(a));
  els.corpus.replaceChildren(...names.map((n) => new Option(`${n} (${byCorpus.get(n)} run${byCorpus.get(n) === 1 ? "" : "s"})`, n)));
  els.corpus.disabled = false;
  await drawRuns();
}

async function drawRuns() {
  const chosen = runs.filter((r) => r.corpus_name === els.corpus.value && r.step > 0);
  setStatus(els.runsStatus, "loading", `Loading ${chosen.length} runs…`);
  let metrics;
  try {
    metrics = await Promise.all(chosen.map((r) => api(`/api/runs/${r.id}/metrics?max_points=500`)));
    await plotlyReady();
  } catch (e) {
    return setStatus(els.runsStatus, "error", e.message);
  }
  setStatus(els.runsStatus, "");
  els.runsChart.hidden = false;
  const traces = [];
  chosen.forEach((r, i) => {
    const m = metrics[i], colour = RUN_COLOURS[i % RUN_COLOURS.length];
    const perStep = r.config.batch_size * r.config.seq_length;
    const label = `#${r.id} ${r.name} (${r.config.cell} ${r.config.num_layers}x${r.config.hidden_size})`;
    traces.push({ x: m.step.map((s) => s * perStep), y: m.loss, name: label, legendgroup: String(r.id), showlegend: false,
      line: { color: colour, width: 1 }, opacity: 0.35, hovertemplate: `${label} train %{y:.3f}<extra></extra>` });
    traces.push({ x: m.val_step.map((s) => s * perStep), y: m.val_loss, name: label, legendgroup: String(r.id),
      mode: "lines+markers", line: { color: colour, width: 2 }, hovertemplate: `${label} validation %{y:.3f}<extra></extra>` });
  });
  plot(els.runsChart, "runs", traces, layout({ height: 340, hovermode: "closest",
    xaxis: { title: { text: "characters seen" } }, yaxis: { title: { text: "loss (nats/char)" } } }));
}

/** The passages of the first ticked model's own corpus (GET /api/models/{id}/passages) in the
 * menu; the first in the text box when it is empty or holds another model's passage. */
async function fillPassages() {
  const first = chosen()[0];
  if (!first || first === offered.model) return;
  const passages = await modelPassages(first);
  if (first !== chosen()[0]) return;           // the ticks changed meanwhile: the newer answer wins
  fillPassageMenu(els.passage, passages);
  if (passages.length && (!els.text.value || offered.texts.includes(els.text.value))) {
    els.text.value = passages[0].text;
    els.passage.value = "0";
    els.position.value = "";
  }
  offered = { model: first, texts: passages.map((p) => p.text) };
}

els.corpus.addEventListener("change", drawRuns);
els.go.addEventListener("click", compare);
els.position.addEventListener("change", compare);
els.text.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) compare(); });
els.passage.addEventListener("change", () => {
  const opt = els.passage.selectedOptions[0];
  if (opt?.dataset.text) { els.text.value = opt.dataset.text; els.position.value = ""; compare(); }
});

async function main() {
  const found = await pageModels(els.status, "No models are loaded, so there is nothing to compare yet.");
  everyoneToggle(els.models);
  if (!found) return;
  models = found;
  fillChips((els.models.dataset.initial || "").split(",").filter(Boolean));
  await fillPassages();
  loadRuns();
  // A click on the per-character chart explains that prediction.
  await compare();
  els.chars.on?.("plotly_click", (ev) => {
    const t = Math.round(ev.points?.[0]?.x ?? NaN);
    if (Number.isFinite(t)) { els.position.value = Math.max(0, Math.min([...els.text.value].length - 2, t - 1)); compare(); }
  });
}

main();
