// Open your own model (Train page): upload a PyTorch state dict as safetensors with its
// vocabulary to /api/models/import, show what was recognised and the model's first guesses,
// link it to every view; list the imported models, with delete on your own.
import { bytes, request } from "./changes.js";
import { formatCount, setStatus, showChar } from "./common.js";

const $ = (id) => document.getElementById(id);
const els = {
  model: $("import-model"), vocab: $("import-vocab"), chars: $("import-chars"), name: $("import-name"),
  nonlinearity: $("import-nonlinearity"), embedding: $("import-embedding"), rnn: $("import-rnn"),
  decoder: $("import-decoder"), roles: $("import-roles"), submit: $("import-submit"), status: $("import-status"),
  result: $("import-result"), stats: $("import-stats"), parts: $("import-parts"), probe: $("import-probe"),
  next: $("import-next"), links: $("import-links"), mine: $("import-mine"), mineTable: $("import-mine-table"),
  mineEmpty: $("import-mine-empty"),
};
const CELLS = { lstm: "LSTM", gru: "GRU", rnn: "RNN" };

/** Every view, opened on the model (the explorer at the top layer, which feeds the prediction). */
function views(id, layers) {
  const m = encodeURIComponent(id);
  return [
    ["explore", `/explore?model=${m}&layer=${layers - 1}`, "Neurons"],
    ["gradients", `/gradients?models=${m}`, "Gradients"],
    ["gates", `/gates?model=${m}`, "Gates"],
    ["sample", `/sample?model=${m}`, "Sample"],
    ["probe", `/probe?model=${m}`, "Probes"],
    ["compare", `/compare?models=${m}`, "Compare"],
  ];
}

// ---- the upload -------------------------------------------------------------------------------------

async function submit() {
  const model = els.model.files[0];
  if (!model) {
    setStatus(els.status, "error", "Choose the model's .safetensors file first.");
    return;
  }
  const max = Number(els.model.dataset.maxBytes);
  if (model.size > max) {
    setStatus(els.status, "error", `${model.name} is ${bytes(model.size)}; this server takes models up to ${bytes(max)} `
      + "(setting RNNSCOPE_MAX_IMPORT_BYTES).");
    return;
  }
  const form = new FormData();
  form.append("model", model, model.name);
  const vocab = els.vocab.files[0];
  if (vocab) form.append("vocab", vocab, vocab.name);
  for (const key of ["chars", "name", "nonlinearity", "embedding", "rnn", "decoder"]) {
    const value = els[key].value;
    if (value.trim() && !(key === "chars" && vocab)) form.append(key, key === "chars" ? value : value.trim());
  }
  els.submit.disabled = true;
  els.result.hidden = true;
  setStatus(els.status, "loading", `Reading ${model.name} (${bytes(model.size)})…`);
  try {
    const m = await request("/api/models/import", { method: "POST", form, ownFields: ["model", "vocab", "chars"] });
    setStatus(els.status, "");
    show(m);
    loadMine();
  } catch (e) {
    setStatus(els.status, "error", e);
    // A refusal that asks for names opens the place to give them.
    if (/name (it|the|one)|--decoder|--embedding|--rnn|nonlinearity/.test(e.message)) els.roles.open = true;
  } finally {
    els.submit.disabled = false;
  }
}

function stat(value, label, title = "") {
  const div = document.createElement("div");
  div.className = "stat";
  div.append(Object.assign(document.createElement("b"), { textContent: value }),
    Object.assign(document.createElement("span"), { textContent: label }));
  if (title) div.title = title;
  return div;
}

function code(text) {
  return Object.assign(document.createElement("code"), { textContent: text });
}

function show(m) {
  const r = m.recognised;
  const cell = CELLS[r.cell] + (r.nonlinearity ? ` (${r.nonlinearity.split(" ")[0]})` : "");
  els.stats.replaceChildren(
    stat(cell, "cell", r.nonlinearity || ""),
    stat(`${r.num_layers} layers × ${r.hidden_size}`.replace(/^1 layers/, "1 layer"), "hidden units"),
    stat(String(r.vocab_size), "characters", m.vocab_source),
    stat(r.embedding_folded ? `${r.vocab_size} × ${r.input_size} folded` : "one-hot", "input",
      r.embedding_folded ? "The embedding E became layer 0's W_ih E^T: one column per character, the same map." : ""),
    stat(formatCount(r.parameters), "parameters",
      `${r.source_parameters.toLocaleString()} in the file, ${r.parameters.toLocaleString()} after folding (${r.dtype})`),
    stat(r.dtype, "precision"),
  );
  const parts = [
    ["Embedding", r.embedding, r.tensors.embedding, r.embedding_folded ? "folded into layer 0" : ""],
    [`${CELLS[r.cell]}, ${r.num_layers} layer${r.num_layers > 1 ? "s" : ""}`, r.rnn, r.tensors.rnn, ""],
    ["Decoder", r.decoder, r.tensors.decoder, r.decoder_bias ? "" : "no bias: a zero bias is used"],
  ].filter(([, name]) => name !== null);
  if (r.ignored.length) parts.push(["Ignored", "", r.ignored, "left out, as you named the parts"]);
  els.parts.replaceChildren(...parts.map(([part, name, tensors, note]) => {
    const tr = document.createElement("tr");
    const td = () => tr.appendChild(document.createElement("td"));
    td().textContent = part;
    td().append(code(name === "" ? "(root)" : name));
    const cell = td();
    const shown = tensors.length > 4 ? [...tensors.slice(0, 3), `… ${tensors.length - 3} more`] : tensors;
    shown.forEach((t, i) => { if (i) cell.append(" "); cell.append(code(t)); });
    if (note) cell.append(Object.assign(document.createElement("span"), { className: "muted small", textContent: ` — ${note}` }));
    return tr;
  }));
  els.probe.dataset.text = m.probe;
  els.probe.querySelector(".probe-text").textContent = m.probe.replaceAll("\n", "↵");
  const top = m.next[0]?.p || 1;
  els.next.replaceChildren(...m.next.map(({ char, p }) => {
    const span = document.createElement("span");
    span.className = "guess";
    span.dataset.char = char;
    span.style.setProperty("--a", (0.08 + 0.4 * p / top).toFixed(3));
    span.title = `${JSON.stringify(char)}: p = ${p.toFixed(4)}`;
    span.append(Object.assign(document.createElement("b"), { textContent: showChar(char) }),
      Object.assign(document.createElement("i"), { textContent: `${(p * 100).toFixed(1)}%` }));
    return span;
  }));
  els.links.replaceChildren(...views(m.model_id, r.num_layers).map(([view, href, label], i) => {
    const a = Object.assign(document.createElement("a"), { href, className: i ? "button secondary" : "button" });
    a.dataset.view = view;
    a.textContent = i ? label : "Open in the neuron explorer →";
    return a;
  }));
  els.result.hidden = false;
}

// ---- the imported models -------------------------------------------------------------------------

async function loadMine() {
  let list;
  try {
    list = await request("/api/imports");
  } catch {
    return;                           // the list is a convenience; the upload still works
  }
  els.mineEmpty.hidden = list.length > 0;
  els.mineTable.hidden = list.length === 0;
  els.mine.replaceChildren(...list.map((m) => {
    const tr = document.createElement("tr");
    const td = () => tr.appendChild(document.createElement("td"));
    const link = Object.assign(document.createElement("a"), { href: views(m.model_id, m.recognised.num_layers)[0][1],
      textContent: m.name });
    td().append(link);
    const r = m.recognised;
    td().textContent = `${CELLS[r.cell]} ${r.num_layers}×${r.hidden_size} (${m.model_id})`;
    td().textContent = m.filename || "";
    td().textContent = new Date(m.created * 1000).toLocaleString([], { dateStyle: "short", timeStyle: "short" });
    const actions = td();
    if (m.yours) {
      const button = Object.assign(document.createElement("button"), { type: "button", className: "secondary delete",
        textContent: "Delete" });
      button.onclick = () => remove(m, button);
      actions.append(button);
    } else {
      actions.append(Object.assign(document.createElement("span"), { className: "muted small",
        textContent: "someone else's" }));
    }
    return tr;
  }));
}

async function remove(m, button) {
  if (!window.confirm(`Delete “${m.name}” (${m.model_id}) from this server? Your own file is not touched.`)) return;
  button.disabled = true;
  try {
    await request(`/api/models/${encodeURIComponent(m.model_id)}`, { method: "DELETE" });
    if (els.links.querySelector("a")?.href.includes(`=${encodeURIComponent(m.model_id)}&`)) els.result.hidden = true;
  } catch (e) {
    setStatus(els.status, "error", e);
  }
  loadMine();
}

els.submit.addEventListener("click", submit);
els.vocab.addEventListener("change", () => { if (els.vocab.files[0]) els.chars.value = ""; });
els.chars.addEventListener("input", () => { if (els.chars.value) els.vocab.value = ""; });
loadMine();
