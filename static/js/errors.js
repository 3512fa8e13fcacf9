// Errors against n-grams: the model's loss against interpolated Kneser-Ney n-grams of its own
// training text (POST /api/models/{id}/errors), as Karpathy, Johnson & Fei-Fei 2015, 4.3-4.4.
import {
  api, colourAt, cssGradient, decodeQuantity, DIVERGING, fillModelSelect, inkOn, isAbort, latest, pageModels,
  PLOT_CONFIG, PLOT_FONT, renderChars, rgb, setStatus, showChar, writeQuery,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const els = {
  model: $("model"), source: $("source"), text: $("text"), analyse: $("analyse"), status: $("status"),
  verdict: $("verdict"), orders: $("orders"), legend: $("legend"), chars: $("chars"), charsNote: $("chars-note"),
  range: $("range"), rangeStatus: $("range-status"), rangeNote: $("range-note"), breakdown: $("breakdown"),
  categories: $("categories"),
};
// Characters coloured one by one: enough to read a stretch, few enough for the page to stay light.
const SHOWN_CHARS = 3000;
// The colour scale's ends: a loss difference of this many nats is full blue or full red.
const FULL_SCALE_NATS = 3;
const CATEGORY_COLOURS = ["#1c6dd0", "#7048e8", "#e8590c", "#2f9e44", "#d6336c", "#868e96"];
const nextSignal = latest();
let models = [];

const nats = (v) => `${v.toFixed(3)} nats`;

function drawOrders(data, name) {
  const orders = data.ngram_means.map((_, i) => i + 1);
  const best = data.best_order;
  const traces = [
    { type: "bar", x: orders, y: data.ngram_means, name: "n-gram of order n",
      marker: { color: orders.map((n) => (n === best ? "#e8590c" : "#ced4da")) },
      hovertemplate: "order %{x}: %{y:.3f} nats<extra></extra>" },
    { type: "scatter", mode: "lines", x: [0.5, orders.length + 0.5], y: [data.model_mean, data.model_mean],
      name: name, line: { color: "#1c6dd0", width: 3 }, hovertemplate: `${name}: %{y:.3f} nats<extra></extra>` },
  ];
  const top = Math.max(...data.ngram_means.slice(1), data.model_mean) * 1.15;
  const layout = {
    font: PLOT_FONT, height: 320, margin: { l: 70, r: 20, t: 20, b: 60 }, bargap: 0.15,
    xaxis: { title: { text: "n-gram order n (it reads n − 1 characters back)" }, dtick: 1 },
    yaxis: { title: { text: "mean loss, nats" }, range: [0, top] },
    legend: { orientation: "h", x: 1, xanchor: "right", y: 1.02, yanchor: "bottom" },
  };
  Plotly.react(els.orders, traces, layout, PLOT_CONFIG);
  const gain = data.ngram_means[best - 1] - data.model_mean;
  els.verdict.hidden = false;
  els.verdict.textContent = gain > 0
    ? `${name} reads this text at ${nats(data.model_mean)} a character, ${gain.toFixed(3)} below the best n-gram ` +
      `(order ${best}, ${nats(data.ngram_means[best - 1])}), counted on the same ${data.train_chars.toLocaleString()} ` +
      `training characters of ${data.corpus}.`
    : `The best n-gram (order ${best}, ${nats(data.ngram_means[best - 1])}) beats ${name} ` +
      `(${nats(data.model_mean)}) on this text by ${(-gain).toFixed(3)} nats a character.`;
}

function drawChars(data) {
  const model = decodeQuantity(data.model_loss).values, ngram = decodeQuantity(data.ngram_loss).values;
  const chars = Array.from(data.text).slice(0, SHOWN_CHARS);
  const spans = renderChars(els.chars, chars);
  spans.forEach((span, i) => {
    if (i === 0) { span.title = "the first character: nothing to predict it from"; return; }
    const diff = ngram[i - 1] - model[i - 1];               // > 0: the model wins
    const c = colourAt(DIVERGING, -diff / FULL_SCALE_NATS);  // blue (negative end) where the model wins
    span.style.backgroundColor = rgb(c);
    span.style.color = inkOn(c);
    span.title = `‘${showChar(chars[i])}’: network ${model[i - 1].toFixed(2)} nats, ` +
      `${data.best_order}-gram ${ngram[i - 1].toFixed(2)} nats`;
  });
  els.legend.innerHTML = `<div class="legend-block"><div class="bar"></div><div class="ticks"><span>network ` +
    `−${FULL_SCALE_NATS}</span><span>equal</span><span>n-gram −${FULL_SCALE_NATS}</span></div></div>` +
    `<span class="muted small">nats lower than the other</span>`;
  els.legend.querySelector(".bar").style.background = cssGradient(DIVERGING);
  const total = Array.from(data.text).length;
  els.charsNote.textContent = total > SHOWN_CHARS
    ? `The first ${SHOWN_CHARS.toLocaleString()} of ${total.toLocaleString()} characters; every number on this page is over all of them.`
    : "";
}

function drawRange(data) {
  const bins = data.long_range.filter((b) => b.count > 0);
  if (!bins.length) {
    els.range.hidden = true;
    els.rangeNote.textContent = "";
    setStatus(els.rangeStatus, "empty", "No closing bracket or double quote in this text has its opener in it. " +
      "Try the Python model, or paste code.");
    return;
  }
  setStatus(els.rangeStatus, "");
  els.range.hidden = false;
  const label = (b) => (b.high >= 1e8 ? `${b.low}+` : b.low === b.high ? `${b.low}` : `${b.low}–${b.high}`);
  const traces = [{
    type: "bar", x: bins.map(label), y: bins.map((b) => b.model_wins), customdata: bins.map((b) => [b.count, b.mean_advantage]),
    marker: { color: bins.map((b) => (b.model_wins >= 0.5 ? "#1c6dd0" : "#e8590c")) },
    text: bins.map((b) => `${b.count}`), textposition: "outside", cliponaxis: false,
    hovertemplate: "opener %{x} characters back: %{customdata[0]} closers<br>the network wins %{y:.0%}, " +
      "by %{customdata[1]:.2f} nats on average<extra></extra>",
  }];
  const layout = {
    font: PLOT_FONT, height: 320, margin: { l: 70, r: 20, t: 30, b: 70 },
    xaxis: { title: { text: "characters back to the opener" }, type: "category" },
    yaxis: { title: { text: "closers the network wins" }, range: [0, 1.12], tickformat: ".0%" },
    shapes: [{ type: "line", xref: "paper", x0: 0, x1: 1, y0: 0.5, y1: 0.5, line: { color: "#adb5bd", dash: "dot", width: 1 } }],
  };
  Plotly.react(els.range, traces, layout, PLOT_CONFIG);
  els.rangeNote.textContent = data.far_share === null
    ? "Bar labels: how many closers."
    : `Bar labels: how many closers. ${(data.far_closers * 100).toFixed(0)} % of the closers are more than 20 ` +
      `characters from their opener; they hold ${(data.far_share * 100).toFixed(0)} % of the network’s advantage on closers.`;
}

function drawBreakdown(data) {
  const b = data.breakdown;
  const traces = b.categories.map((c, k) => ({
    type: "bar", orientation: "h", y: ["errors"], x: [c.count], name: c.name,
    marker: { color: CATEGORY_COLOURS[k % CATEGORY_COLOURS.length] },
    hovertemplate: `${c.name}: %{x} errors<extra></extra>`,
  }));
  const layout = {
    font: PLOT_FONT, height: 240, barmode: "stack", margin: { l: 20, r: 20, t: 70, b: 50 },
    xaxis: { title: { text: `${b.errors.toLocaleString()} errors in ${b.characters.toLocaleString()} characters` } },
    yaxis: { visible: false }, legend: { orientation: "h", x: 0, y: 1.05, yanchor: "bottom", traceorder: "normal" },
  };
  Plotly.react(els.breakdown, traces, layout, PLOT_CONFIG);
  const rows = b.categories.map((c) => {
    const tr = document.createElement("tr");
    [c.name, `${c.count.toLocaleString()} (${b.errors ? ((c.count / b.errors) * 100).toFixed(0) : 0}\u00a0%)`, c.meaning]
      .forEach((v) => tr.append(Object.assign(document.createElement("td"), { textContent: v })));
    return tr;
  });
  els.categories.querySelector("tbody").replaceChildren(...rows);
  els.categories.hidden = false;
}

async function analyse() {
  const model = els.model.value;
  const mine = els.source.value === "mine";
  els.text.hidden = !mine;
  const text = els.text.value;
  if (mine && text.length < 2) {
    setStatus(els.status, "empty", "Paste at least two characters of text for the model to read, then Analyse.");
    return;
  }
  const signal = nextSignal();
  setStatus(els.status, "loading", "Counting n-grams of orders 1–20 over the model’s training text, then reading " +
    "the text: the first time for a model and text this takes about a second per 50,000 training characters; " +
    "after that it is kept.");
  els.analyse.disabled = true;
  try {
    // The answer's cards: kept, dimmed, when a new request fails; the address follows the answer drawn.
    const view = [els.orders, els.chars, els.range, els.breakdown].map((el) => el.closest(".card"));
    const data = await api(`/api/models/${encodeURIComponent(model)}/errors`, mine ? { text } : {},
      { signal, status: els.status, view });
    writeQuery({ model, text: mine ? text : "" });
    setStatus(els.status, "");
    const name = models.find((m) => m.id === model)?.name || model;
    drawOrders(data, name);
    drawChars(data);
    drawRange(data);
    drawBreakdown(data);
  } catch (e) {
    if (isAbort(e)) return;
    setStatus(els.status, "error", e);
  } finally {
    els.analyse.disabled = false;
  }
}

els.analyse.addEventListener("click", analyse);
els.model.addEventListener("change", analyse);
els.source.addEventListener("change", () => {
  els.text.hidden = els.source.value !== "mine";
  if (els.source.value === "validation") analyse();
  else els.text.focus();
});
els.text.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); analyse(); }
});

async function main() {
  const found = await pageModels(els.status, "No models are loaded, so there is nothing to compare.", { menu: els.model });
  if (!found) return;
  models = found;
  fillModelSelect(els.model, models, els.model.dataset.initial || "python");
  if (els.text.value) els.source.value = "mine";
  await analyse();
}

main();
