// Home: the models with a one-line summary each, and a live neuron on one line of text.
import {
  api, colourAt, decodeQuantity, DIVERGING, formatCount, inkOn, modelColours, renderChars, rgb, setStatus,
} from "./common.js";

const list = document.getElementById("model-list");
const status = document.getElementById("models-status");

const CELL_NAMES = { rnn: "vanilla RNN", gru: "GRU", lstm: "LSTM" };
// The python model's quote cell (docs/analyses.md, "Karpathy's cells in Python source"): h[221] of layer 1
// falls inside one-line string literals (AUC 0.070 over 50,000 validation characters), shown on a
// validation passage of inspect.py full of them.
const QUOTE_CELL = {
  layer: 1, quantity: "h", neuron: 221,
  text: "    name = getattr(obj, '__name__', None)\n" +
    "    code = getattr(obj, '__code__', None)\n" +
    "    defaults = getattr(obj, '__defaults__', _void) # Important to use _void ...\n" +
    "    kwdefaults = getattr(obj, '__kwdefaults__', _void) # ... and not None here\n" +
    "    annotations = getattr(obj, '__annotations__', None)\n" +
    "\n" +
    "    return (isinstance(code, types.CodeType) and\n" +
    "            isinstance(name, str) and\n" +
    "            (defaults is None or isinstance(defaults, tuple)) and\n" +
    "            (kwdefaults is None or isinstance(kwdefaults, dict)) and\n" +
    "            (isinstance(annotations, (dict)) or annotations is None) )\n" +
    "\n",
};
// Characters every tinyshakespeare model knows (no quotes or brackets in that corpus).
const DEMO_TEXT = "BRUTUS:\nSpeak, speak! the citizens cry; what say you, sir?";

function summary(m) {
  const cell = CELL_NAMES[m.cell] || m.cell.toUpperCase();
  const layers = m.num_layers === 1 ? "1 layer" : `${m.num_layers} layers`;
  return `${layers} of ${m.hidden_size} ${cell} units, reading a ${m.vocab_size}-character vocabulary.`;
}

function modelCard(m, colour) {
  const card = document.createElement("article");
  card.className = "model-card";
  card.dataset.model = m.id;
  card.style.setProperty("--cell", colour);
  const q = `model=${encodeURIComponent(m.id)}`;
  const loss = m.val_loss == null ? "—" : m.val_loss.toFixed(3);
  card.innerHTML = `
    <h3><span class="badge"></span><span class="name"></span></h3>
    <p class="summary"></p>
    <div class="stats">
      <div class="stat"><b class="val-loss">${loss} <small>nats/char</small></b><span>validation loss</span></div>
      <div class="stat"><b>${formatCount(m.parameters)}</b><span>parameters</span></div>
      <div class="stat"><b>${m.num_layers} × ${m.hidden_size}</b><span>layers × units</span></div>
    </div>
    <div class="links">
      <a href="/explore?${q}">Neurons</a>
      ${m.cell === "rnn" ? "" : `<a href="/gates?${q}">Gates</a>`}
      <a href="/gradients">Gradients</a>
      <a href="/sample?${q}">Sample</a>
    </div>`;
  card.querySelector(".badge").textContent = m.cell;
  card.querySelector(".name").textContent = m.name;
  card.querySelector(".summary").textContent = summary(m);
  card.querySelector(".val-loss").title = m.val_loss == null ? "no validation loss recorded"
    : `${(m.val_loss / Math.LN2).toFixed(3)} bits per character`;
  return card;
}

/** One line of text coloured by the most variable unit of the top layer's h. */
async function heroDemo(models) {
  const text = document.getElementById("hero-text");
  const caption = document.getElementById("hero-caption");
  const m = models.find((x) => x.id === "lstm") || models.find((x) => x.cell === "lstm") || models[0];
  try {
    const info = await api(`/api/models/${encodeURIComponent(m.id)}`);
    const demo = [...DEMO_TEXT].filter((c) => info.vocab.includes(c)).join("");
    const layer = m.num_layers - 1;
    const trace = await api(`/api/models/${encodeURIComponent(m.id)}/trace`,
      { text: demo, layers: [layer], quantities: ["h"], top_k: 1 });
    const h = decodeQuantity(trace.layers[0].quantities.h);
    let best = 0, bestVar = -1;
    for (let j = 0; j < h.H; j++) {
      const col = h.column(j);
      const mean = col.reduce((a, b) => a + b, 0) / col.length;
      const v = col.reduce((a, b) => a + (b - mean) ** 2, 0);
      if (v > bestVar) { bestVar = v; best = j; }
    }
    const spans = renderChars(text, trace.chars);
    spans.forEach((s, t) => {
      const c = colourAt(DIVERGING, h.at(t, best));
      s.style.backgroundColor = rgb(c);
      s.style.color = inkOn(c);
    });
    const href = `/explore?model=${encodeURIComponent(m.id)}&layer=${layer}&quantity=h&neuron=${best}` +
      `&text=${encodeURIComponent(demo)}`;
    caption.innerHTML = `Live: <b></b>, layer ${layer}, neuron ${best} of h — the unit that varies most on this line.
      <span style="color:#2166ac;font-weight:600">Blue</span> is negative, <span style="color:#b2182b;font-weight:600">red</span>
      positive. <a href="${href}">Open it in the explorer →</a>`;
    caption.querySelector("b").textContent = m.name;
  } catch (e) {
    text.textContent = DEMO_TEXT;
    caption.textContent = `The live example could not load: ${e.message}`;
    caption.title = e.operatorDetail ?? "";      // a refusal's setting, for the server's operator
  }
}

/** With the python model loaded, the first suggestion is its quote cell. */
function showQuoteCell(models) {
  const card = document.getElementById("start-quote");
  if (!card || !models.some((m) => m.id === "python")) return;
  if (QUOTE_CELL) {
    const { layer, quantity, neuron, text } = QUOTE_CELL;
    card.href = `/explore?${new URLSearchParams({ model: "python", layer, quantity, neuron, text })}`;
  }
  card.hidden = false;
  card.parentElement.prepend(card);
}

async function main() {
  let models;
  try {
    models = await api("/api/models", undefined, { status });
  } catch (e) {
    list.replaceChildren();
    setStatus(status, "error", e);
    document.getElementById("hero-text").textContent = DEMO_TEXT;     // not "Loading…" for ever
    document.getElementById("hero-caption").textContent = "The live example appears once the server lists its models.";
    return;
  } finally {
    list.removeAttribute("aria-busy");
  }
  if (models.length === 0) {
    list.replaceChildren();
    document.getElementById("hero-text").textContent = DEMO_TEXT;
    document.getElementById("hero-caption").textContent = "With a model loaded, each character here is coloured by one neuron’s value as the model reads it.";
    setStatus(status, "empty", "No models are loaded yet.", {
      html: `<p>Train one and restart the server with its directory:</p>
        <pre><code>rnnscope train corpus.txt --out data/models/mine.safetensors\nrnnscope serve --data-dir data</code></pre>`,
    });
    return;
  }
  const colours = modelColours(models);
  list.replaceChildren(...models.map((m) => modelCard(m, colours[m.id])));
  const first = models.find((m) => m.id === "lstm") || models[0];
  document.getElementById("start-explore").href = `/explore?model=${encodeURIComponent(first.id)}`;
  showQuoteCell(models);
  heroDemo(models);
}

main();
