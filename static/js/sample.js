// Sample: write from a prime, colour each character by the probability it had when drawn,
// and show the same request as a curl command.
import {
  api, colourAt, cssGradient, fillModelSelect, inkOn, isAbort, latest, pageModels, rgb, setStatus, showChar, SURPRISE, toFloat, toInt, writeQuery,
} from "./common.js";

const $ = (id) => document.getElementById(id);
const els = {
  model: $("model"), prime: $("prime"), temperature: $("temperature"), temperatureOut: $("temperature-out"),
  length: $("length"), topK: $("top_k"), seed: $("seed"), go: $("go"), status: $("status"), output: $("output"),
  stats: $("sample-stats"), legend: $("legend"), curl: $("curl"), copy: $("copy"), tooltip: $("tooltip"),
  minSpan: $("min_span"), curlSeed: $("curl-seed"),
};
const nextSignal = latest();
let models = [];

/** The request body the controls describe; a blank seed means the server draws one. */
function request() {
  const body = {
    prime: els.prime.value,
    length: Math.max(0, toInt(els.length.value, 300)),
    temperature: Math.round(toFloat(els.temperature.value, 1) * 100) / 100,
    top_k: Math.max(0, toInt(els.topK.value, 0)),
  };
  const seed = toInt(els.seed.value, null);
  if (seed !== null) body.seed = seed;
  return body;
}

const shellQuote = (s) => `'${s.replace(/'/g, `'\\''`)}'`;

function drawCurl(model, body) {
  const path = `/api/models/${encodeURIComponent(model)}/sample`;
  // One space after each comma and colon: JSON.stringify escapes newlines inside strings,
  // so every raw newline it writes lies between tokens.
  const spaced = JSON.stringify(body, null, 1).replace(/\n\s*/g, " ");   // "{ ... }"
  const json = `{${spaced.slice(2, -2)}}`;
  // The URL on a line of its own, breakable only before a path's slash (a <wbr>): a narrow box
  // wraps it between segments, never inside a word. The text copied is unchanged.
  const link = Object.assign(document.createElement("span"), { className: "curl-url" });
  [window.location.origin, ...path.split(/(?=\/)/)].forEach((part, k) => {
    if (k) link.append(document.createElement("wbr"));
    link.append(part);
  });
  els.curl.querySelector("code").replaceChildren("curl -s \\\n  ", link,
    ` \\\n  -H 'Content-Type: application/json' \\\n  -d ${shellQuote(json)}`);
}

function drawLegend() {
  els.legend.innerHTML = `<span>probability when drawn<br>(hover a character)</span><div class="legend-block"><div class="bar"></div>
    <div class="ticks"><span>0</span><span>0.3</span><span>0.6</span><span>1</span></div></div>`;
  const bar = els.legend.querySelector(".bar");
  bar.style.background = cssGradient(SURPRISE);
  // The ticks sit at the stops' positions, not evenly.
  const ticks = els.legend.querySelector(".ticks");
  ticks.style.position = "relative"; ticks.style.height = "1.2em";
  [...ticks.children].forEach((t, i) => {
    const x = [0, 0.3, 0.6, 1][i];
    Object.assign(t.style, { position: "absolute", left: `${x * 100}%`, transform: `translateX(${i === 0 ? 0 : i === 3 ? -100 : -50}%)` });
  });
}

/** Draw one sample: the prime in grey, then each written character on its colour. */
function update(prime, data) {
  const frag = document.createDocumentFragment();
  if (prime) frag.append(Object.assign(document.createElement("span"), { className: "prime", textContent: prime }));
  [...data.text].forEach((c, i) => {
    const span = document.createElement("span");
    span.className = c === "\n" ? "ch nl" : "ch";
    span.dataset.i = i;
    span.dataset.p = data.probs[i];
    span.textContent = c === "\n" ? "↵" : c;
    const colour = colourAt(SURPRISE, data.probs[i]);
    span.style.backgroundColor = rgb(colour);
    span.style.color = inkOn(colour);
    frag.append(span);
    if (c === "\n") frag.append(document.createElement("br"));
  });
  els.output.replaceChildren(frag);
  const n = data.probs.length;
  const rows = [["Seed", String(data.seed)]];
  if (n) {
    const nll = data.probs.reduce((s, p) => s - Math.log(Math.max(p, 1e-12)), 0) / n;
    const sure = data.probs.filter((p) => p > 0.9).length;
    const longShots = data.probs.filter((p) => p < 0.1).length;
    rows.push(
      ["Characters", n.toLocaleString()],
      ["Mean −ln p", `${nll.toFixed(3)} nats/char`],
      ["Near-certain (p > 0.9)", `${sure} (${((sure / n) * 100).toFixed(0)}%)`],
      ["Long shots (p < 0.1)", `${longShots} (${((longShots / n) * 100).toFixed(0)}%)`],
    );
  }
  if (data.dropped?.length) rows.push(["Dropped from prime", data.dropped.map(showChar).join(" ")]);
  els.stats.replaceChildren(...rows.flatMap(statRow));
}

const statRow = ([k, v]) => [
  Object.assign(document.createElement("dt"), { textContent: k }),
  Object.assign(document.createElement("dd"), { textContent: v }),
];

/** Spans that overlap or touch as one: one copied passage, counted once (as model/memorisation.merge_spans). */
function mergeSpans(spans) {
  const out = [];
  for (const s of [...spans].sort((a, b) => a.start - b.start || a.end - b.end)) {
    const last = out[out.length - 1];
    if (last && s.start <= last.end) last.end = Math.max(last.end, s.end);
    else out.push({ start: s.start, end: s.end });
  }
  return out;
}

const minSpan = () => Math.min(1000, Math.max(4, toInt(els.minSpan.value, 20)));

/** Underline the spans of the sample found verbatim in the model's training corpus, and count them. */
async function markMemorised(model, text, signal) {
  const spans = [...els.output.querySelectorAll(".ch")];
  spans.forEach((s) => s.classList.remove("memorised"));
  els.stats.querySelectorAll(".memorised-row").forEach((n) => n.remove());
  if (!text) return;
  const n = minSpan();
  let data;
  try {
    data = await api(`/api/models/${encodeURIComponent(model)}/memorised`, { text, min_length: n }, { signal });
  } catch (e) {
    if (isAbort(e)) return;
    data = null;
  }
  let value;
  if (!data) value = "could not be checked";
  else if (!data.available) value = "the training corpus is not on this server";
  else {
    // Code points, as the server counts: the page's spans are one per character too.
    const copied = mergeSpans(data.spans);
    for (const s of copied) for (let i = s.start; i < s.end; i++) spans[i]?.classList.add("memorised");
    const chars = copied.reduce((sum, s) => sum + s.end - s.start, 0);
    value = copied.length === 0 ? `none of ${n}+ characters`
      : `${copied.length} span${copied.length === 1 ? "" : "s"} of ${n}+ characters, ${chars} characters `
        + `(${((chars / [...text].length) * 100).toFixed(0)}%)`;
  }
  const [dt, dd] = statRow(["Copied from the corpus", value]);
  dt.className = dd.className = "memorised-row";
  els.stats.append(dt, dd);
}

async function sample({ dropUnknown = false } = {}) {
  const model = els.model.value;
  if (!model) return;
  const body = request();
  if (dropUnknown) body.drop_unknown = true;
  drawCurl(model, body);
  const signal = nextSignal();
  setStatus(els.status, "loading", `${model} is writing ${body.length.toLocaleString()} characters…`);
  els.output.setAttribute("aria-busy", "true");
  els.go.disabled = true;
  try {
    const data = await api(`/api/models/${encodeURIComponent(model)}/sample`, body, { signal, status: els.status });
    setStatus(els.status, "");
    els.output.hidden = !data.text;
    if (!data.text) {
      els.output.replaceChildren();
      setStatus(els.status, "empty", "The model wrote nothing: the length is 0.");
    } else {
      update(body.prime, data);
    }
    // The command and the link reproduce this exact text: both carry the seed the server used.
    drawCurl(model, { ...body, seed: data.seed });
    els.curlSeed.hidden = body.seed !== undefined;
    els.curlSeed.textContent = body.seed === undefined
      ? `The seed box is empty, so the server drew seed ${data.seed}; the command carries it.` : "";
    writeQuery({ model, prime: body.prime, temperature: body.temperature, length: body.length, top_k: body.top_k, seed: data.seed,
      min_span: minSpan() === 20 ? "" : minSpan() });
    await markMemorised(model, data.text, signal);
  } catch (e) {
    if (isAbort(e)) return;
    els.output.replaceChildren();
    els.output.hidden = true;
    els.stats.replaceChildren();
    const unknown = e.status === 422 && /vocabulary/.test(e.message);
    setStatus(els.status, "error", e, {
      html: unknown ? `<button type="button" class="secondary" id="drop">Drop those characters and sample</button>` : "",
    });
    document.getElementById("drop")?.addEventListener("click", () => sample({ dropUnknown: true }));
  } finally {
    els.go.disabled = false;
    els.output.removeAttribute("aria-busy");
  }
}

function showTemperature() {
  els.temperatureOut.textContent = toFloat(els.temperature.value, 1).toFixed(2);
}

// ---- Controls ---------------------------------------------------------------------------

els.go.addEventListener("click", () => sample());
els.temperature.addEventListener("input", showTemperature);
for (const el of [els.model, els.temperature, els.length, els.topK, els.seed, els.minSpan]) el.addEventListener("change", () => sample());
els.prime.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); sample(); } });
els.copy.addEventListener("click", async () => {
  const text = els.curl.textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch {
    // Without clipboard permission (plain http on another host): select it for Ctrl+C.
    window.getSelection().selectAllChildren(els.curl);
  }
  els.copy.textContent = "Copied";
  setTimeout(() => { els.copy.textContent = "Copy"; }, 1500);
});
els.output.addEventListener("mouseover", (e) => {
  const span = e.target.closest(".ch");
  if (!span) return;
  const p = Number(span.dataset.p);
  els.tooltip.innerHTML = `<div class="tt-row"><span>wrote <span class="tt-char"></span> (#${span.dataset.i})</span><span>p = <b>${p.toFixed(3)}</b></span></div>`;
  els.tooltip.querySelector(".tt-char").textContent = showChar(span.textContent === "↵" ? "\n" : span.textContent);
  els.tooltip.style.width = "auto";
  els.tooltip.hidden = false;
  const r = span.getBoundingClientRect();
  // Page coordinates: the tooltip is positioned absolutely, so it scrolls with its character.
  els.tooltip.style.left = `${Math.min(document.documentElement.clientWidth - els.tooltip.offsetWidth - 8, r.left) + window.scrollX}px`;
  els.tooltip.style.top = `${r.bottom + 6 + window.scrollY}px`;
});
els.output.addEventListener("mouseleave", () => { els.tooltip.hidden = true; });

async function main() {
  showTemperature();
  drawLegend();
  const found = await pageModels(els.status, "No models are loaded, so nothing can write yet.", { menu: els.model });
  if (!found) return;
  models = found;
  fillModelSelect(els.model, models, els.model.dataset.initial);
  await sample();
}

main();
