// Concept probes: rank every neuron against a concept, show the best ones over the text,
// and for each: the explorer, its top contexts in the validation text, and its ablation.
import { api, colourAt, cssGradient, decodeQuantity, DIVERGING, fillModelSelect, formatNumber, fillPassageMenu, inkOn, isAbort, latest, modelTexts, pageModels, rgb, setStatus, showChar, writeQuery } from "./common.js";

const $ = (id) => document.getElementById(id);
const els = {
  model: $("model"), concept: $("concept"), regex: $("regex"), regexField: $("regex-field"), passage: $("passage"),
  text: $("text"), go: $("go"), status: $("status"), help: $("concept-help"), conceptCard: $("concept-card"),
  conceptSummary: $("concept-summary"), indicator: $("indicator"), resultsCard: $("results-card"),
  resultsTitle: $("results-title"), neurons: $("neurons"), legend: $("legend"),
};
const nextSignal = latest();
const INDICATOR = [[0, [255, 255, 255]], [1, [255, 212, 59]]];     // concept: white to amber
let last = null;                                                   // {model, text, data, values}
let models = [];
let offered = [];                      // texts the passage menu and the default offer for the model shown
const corpusOf = new Map();            // model id -> its corpus's name on the server, or null

const fmt = (v) => formatNumber(v, { digits: Math.abs(v) >= 100 ? 0 : Math.abs(v) >= 10 ? 1 : 2 });

// Below this many characters with (or without) a yes/no concept the ranking is mostly chance.
const FEW_CHARACTERS = 30;

/** Characters as spans coloured by colour(t); newlines shown as ↵ and kept as breaks. */
function paint(container, chars, colour, title) {
  const frag = document.createDocumentFragment();
  chars.forEach((c, t) => {
    const span = document.createElement("span");
    span.className = c === "\n" ? "ch nl" : "ch";
    span.textContent = c === "\n" ? "↵" : c;
    const bg = colour(t);
    span.style.backgroundColor = rgb(bg);
    span.style.color = inkOn(bg);
    if (title) span.title = title(t);
    frag.append(span);
    if (c === "\n") frag.append(document.createElement("br"));
  });
  container.replaceChildren(frag);
}

/** A neuron's value on the diverging scale: its own percentiles, centred on the threshold. */
function scaler(n) {
  const mid = n.threshold ?? (n.low + n.high) / 2;
  const up = Math.max(n.high - mid, 1e-6), down = Math.max(mid - n.low, 1e-6);
  return (v) => (v >= mid ? Math.min(1, (v - mid) / up) : Math.max(-1, (v - mid) / down));
}

function describe(data, n) {
  if (data.graded) return `r = ${n.score.toFixed(3)}`;
  return `AUC ${n.score.toFixed(3)}`;
}

function direction(data, n) {
  const word = data.concept === "regex" ? "inside matches" : "where the concept holds";
  return n.sign > 0 ? `higher ${word}` : `lower ${word}`;
}

function explorerLink(model, n, text) {
  const q = new URLSearchParams({ model, layer: n.layer, quantity: n.quantity, neuron: n.unit, range: "fit" });
  if (text.length < 4000) q.set("text", text);
  return `/explore?${q}`;
}

function drawLegend() {
  els.legend.innerHTML = `<span>below threshold · above</span><div class="legend-block"><div class="bar"></div>
    <div class="ticks"><span>1st pct</span><span>threshold</span><span>99th pct</span></div></div>`;
  els.legend.querySelector(".bar").style.background = cssGradient(DIVERGING);
}

/** Draw a probe's answer: the concept over the text, then one card per neuron. */
function update(model, text, data) {
  const chars = [...data.text];
  const values = decodeQuantity(data.values);
  last = { model, text: data.text, data, values };
  els.conceptCard.hidden = false;
  els.resultsCard.hidden = false;
  const share = ((data.positives / chars.length) * 100).toFixed(0);
  els.conceptSummary.textContent = data.graded
    ? `${data.description}; from ${Math.min(...data.indicator)} to ${Math.max(...data.indicator)}`
    : `${data.description}: ${data.positives.toLocaleString()} of ${chars.length.toLocaleString()} characters (${share}%)`;
  // A yes/no concept on a handful of characters (or all but a handful): among a thousand
  // neurons one separates so few perfectly by chance, so a strength of 1 means little.
  const rarer = Math.min(data.positives, chars.length - data.positives);
  if (!data.graded && rarer < FEW_CHARACTERS) {
    els.conceptSummary.textContent += `. Too few ${rarer === data.positives ? "have" : "lack"} it to rank by: `
      + `among ${data.units.toLocaleString()} neurons some separate ${rarer} character${rarer === 1 ? "" : "s"} `
      + "from the rest by chance; probe a longer text with more of it.";
  }
  const top = Math.max(...data.indicator, 1e-9);
  paint(els.indicator, chars, (t) => colourAt(INDICATOR, data.indicator[t] / top), (t) => `concept: ${data.indicator[t]}`);
  els.resultsTitle.textContent = `Top ${data.neurons.length} of ${data.units.toLocaleString()} neurons`;
  els.neurons.replaceChildren(...data.neurons.map((n, k) => neuronItem(model, data, n, k, chars, values)));
}

function neuronItem(model, data, n, k, chars, values) {
  const li = document.createElement("li");
  li.className = "neuron-item";
  li.dataset.layer = n.layer; li.dataset.quantity = n.quantity; li.dataset.unit = n.unit;
  const threshold = n.threshold === null ? "" : ` · threshold <b>${fmt(n.threshold)}</b> (J = ${n.separation.toFixed(2)})`;
  li.innerHTML = `<div class="neuron-head">
      <span class="rank">${k + 1}</span>
      <span class="name">layer ${n.layer} · <b>${n.quantity}[${n.unit}]</b></span>
      <span class="score"><b>${describe(data, n)}</b> · ${direction(data, n)}${threshold}</span>
      <span class="actions">
        <a class="button secondary" href="${explorerLink(model, n, data.text)}">Explorer →</a>
        <button type="button" class="secondary" data-act="contexts">Top contexts</button>
        <button type="button" class="secondary" data-act="ablate">Silence it</button>
      </span>
    </div>
    <div class="charmap probe-map"></div>
    <div class="neuron-extra" hidden></div>`;
  const scale = scaler(n);
  paint(li.querySelector(".charmap"), chars, (t) => colourAt(DIVERGING, scale(values.at(t, k))),
    (t) => `${n.quantity}[${n.unit}] = ${formatNumber(values.at(t, k), { digits: 3 })}`);
  li.querySelector('[data-act="contexts"]').addEventListener("click", () => contexts(li, n));
  li.querySelector('[data-act="ablate"]').addEventListener("click", () => ablate(li, n));
  return li;
}

// ---- Top contexts ---------------------------------------------------------------------------

async function contexts(li, n) {
  const extra = li.querySelector(".neuron-extra");
  extra.hidden = false;
  setStatus(extra, "loading", "Reading the model’s validation text (the probed text when its corpus is not on this server)…");
  const body = { layer: n.layer, quantity: n.quantity, unit: n.unit, k: 5, width: 30 };
  // Without a text the server reads the validation text, and refuses (422) when the model's
  // corpus is not here: then the probed text is read, and asked for at once.
  if (corpusOf.get(last.model) === null) body.text = last.text;
  let data;
  try {
    data = await api(`/api/models/${encodeURIComponent(last.model)}/contexts`, body);
  } catch (e) {
    if (body.text !== undefined || e.status !== 422 || !/send a text/.test(e.message)) return setStatus(extra, "error", e.message);
    try {        // the model's corpus is not on this server: the probed text instead
      data = await api(`/api/models/${encodeURIComponent(last.model)}/contexts`, { ...body, text: last.text });
    } catch (e2) {
      return setStatus(extra, "error", e2.message);
    }
  }
  setStatus(extra, "");
  extra.hidden = false;
  const source = data.source === "validation"
    ? `${data.chars.toLocaleString()} characters of ${data.corpus}’s validation text` : `the probed text`;
  const scale = scaler({ ...n, low: data.low, high: data.high });
  const column = (title, snippets) => {
    const div = document.createElement("div");
    div.innerHTML = `<h4>${title}</h4>`;
    for (const s of snippets) {
      const row = document.createElement("div");
      row.className = "snippet";
      const chars = [...s.before, s.char, ...s.after];
      const map = document.createElement("span");
      map.className = "snippet-text";
      paint(map, chars.map((c) => (c === "\n" ? "↵" : c)), (t) => colourAt(DIVERGING, scale(s.values[t])),
        (t) => formatNumber(s.values[t], { digits: 3 }));
      map.children[s.before.length]?.classList.add("target");
      // Pad short left contexts so every snippet's character lines up in one column.
      map.prepend(Object.assign(document.createElement("span"), { textContent: " ".repeat(body.width - [...s.before].length) }));
      const value = Object.assign(document.createElement("span"), { className: "snippet-value", textContent: fmt(s.value) });
      row.append(value, map);
      div.append(row);
    }
    return div;
  };
  const grid = document.createElement("div");
  grid.className = "contexts";
  grid.append(column("Most positive", data.positive), column("Most negative", data.negative));
  extra.replaceChildren(Object.assign(document.createElement("p"), {
    className: "explain small", textContent: `Where ${n.quantity}[${n.unit}] is highest and lowest in ${source}; the outlined character is the one just read.` }), grid);
}

// ---- Ablation ------------------------------------------------------------------------------

async function ablate(li, n) {
  const extra = li.querySelector(".neuron-extra");
  extra.hidden = false;
  setStatus(extra, "loading", `Reading the text with unit ${n.unit} of layer ${n.layer} held at 0…`);
  let data;
  try {
    data = await api(`/api/models/${encodeURIComponent(last.model)}/intervene`, {
      text: last.text, clamp: [{ layer: n.layer, units: [n.unit], value: 0 }], length: 240, temperature: 0.8, seed: 1,
    });
  } catch (e) {
    return setStatus(extra, "error", e.message);
  }
  setStatus(extra, "");
  extra.hidden = false;
  const delta = data.clamped_loss.map((v, t) => v - data.loss[t]);
  const peak = Math.max(...delta.map(Math.abs), 1e-6);
  // loss[t] is about character t + 1: each character is coloured by the change in its own loss.
  const map = document.createElement("div");
  map.className = "charmap probe-map";
  paint(map, [...data.text], (t) => colourAt(DIVERGING, t === 0 ? 0 : delta[t - 1] / peak),
    (t) => (t === 0 ? "not predicted" : `loss ${data.loss[t - 1].toFixed(2)} → ${data.clamped_loss[t - 1].toFixed(2)}`));
  const change = data.mean_clamped_loss - data.mean_loss;
  const head = document.createElement("p");
  head.className = "explain small";
  const held = models.find((m) => m.id === last.model)?.cell === "lstm" ? `h[${n.unit}] and c[${n.unit}]` : `h[${n.unit}]`;
  head.innerHTML = `Silenced (${held} of layer ${n.layer} held at 0 after every step): mean loss
    <b>${data.mean_loss.toFixed(3)} → ${data.mean_clamped_loss.toFixed(3)}</b> nats/char (${change >= 0 ? "+" : ""}${formatNumber(change, { digits: 3 })}).
    Red characters got harder to predict, blue ones easier (scale ±${peak.toFixed(2)} nats).`;
  const samples = document.createElement("div");
  samples.className = "contexts";
  for (const [title, text] of [["The model writes", data.sample], ["Silenced, same seed", data.clamped_sample]]) {
    const div = document.createElement("div");
    div.innerHTML = `<h4>${title}</h4>`;
    div.append(Object.assign(document.createElement("pre"), { className: "sample-text", textContent: text }));
    samples.append(div);
  }
  extra.replaceChildren(head, map, samples);
}

// ---- Controls ------------------------------------------------------------------------------

function showConcept() {
  const regex = els.concept.value === "regex";
  els.regexField.hidden = !regex;
  const opt = els.concept.selectedOptions[0];
  els.help.textContent = regex ? "Every character inside a match of the expression is 1, the rest 0 (Python syntax)."
    : `${opt.textContent}: ${opt.title}.`;
}

async function run() {
  const model = els.model.value;
  const text = els.text.value;
  if (!model) return;
  if (!text) return setStatus(els.status, "empty", "Pick a passage or paste a text to probe.");
  const body = { text, top: 12 };
  if (els.concept.value === "regex") body.regex = els.regex.value; else body.concept = els.concept.value;
  writeQuery({ model, concept: els.concept.value, regex: body.regex ?? "", text });
  const signal = nextSignal();
  setStatus(els.status, "loading", `Ranking every neuron of ${model} on ${text.length.toLocaleString()} characters…`);
  els.go.disabled = true;
  try {
    const data = await api(`/api/models/${encodeURIComponent(model)}/probe`, body, { signal, status: els.status });
    setStatus(els.status, "");
    update(model, text, data);
  } catch (e) {
    if (isAbort(e)) return;
    els.conceptCard.hidden = true;
    els.resultsCard.hidden = true;
    setStatus(els.status, "error", e);
  } finally {
    els.go.disabled = false;
  }
}

/** The passages of the model's own corpus (GET /api/models/{id}/passages) in the menu; the
 * first two in the text box when it is empty or holds another model's. */
async function fillPassages() {
  const model = els.model.value;
  const { passages, corpus } = await modelTexts(model);
  corpusOf.set(model, corpus);
  if (model !== els.model.value) return;       // another model was chosen meanwhile: its answer wins
  fillPassageMenu(els.passage, passages);
  // Two passages: enough lines for line-position and start-of-line concepts to vary.
  const two = passages.slice(0, 2).map((p) => p.text).join("\n");
  if (!els.text.value || offered.includes(els.text.value)) els.text.value = two;
  offered = [two, ...passages.map((p) => p.text)];
}

els.go.addEventListener("click", run);
els.concept.addEventListener("change", () => { showConcept(); run(); });
els.model.addEventListener("change", async () => { await fillPassages(); run(); });
els.passage.addEventListener("change", () => {
  const opt = els.passage.selectedOptions[0];
  if (opt?.dataset.text) { els.text.value = opt.dataset.text; run(); }
});
els.text.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(); });
els.regex.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); run(); } });

async function main() {
  drawLegend();
  const wanted = els.concept.dataset.initial;
  els.concept.value = [...els.concept.options].some((o) => o.value === wanted) ? wanted : "line_position";
  showConcept();
  const found = await pageModels(els.status, "No models are loaded, so there is nothing to probe yet.", { menu: els.model });
  if (!found) return;
  models = found;
  fillModelSelect(els.model, models, els.model.dataset.initial);
  await fillPassages();
  await run();
}

main();
